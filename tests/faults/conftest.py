"""Fixtures for the fault suite: a cluster of real processes that the tests kill and restart.

The timing knobs are shortened so that faults are detected in seconds: a heartbeat every 0.5 s,
a slice taken for dead after 3 s of silence, a reconciler pass every second.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from local.workers import WorkerProcess, scheduler_process, wait_until_ready
from scheduler.coordinator import Coordinator
from shared import db
from shared.settings import Settings
from tests.support import WORKER_ENV, create_database, make_settings, reset_state

REDIS_DBS = (13, 14, 15)
# 1,000 orders of 100 events: 100,000 events.
SEEDS = ((21, 1000, 100),)
TOTAL = 100_000
# Restarting the machine's PostgreSQL or Redis is only done where that is allowed (CI sets it).
RESTARTS_ALLOWED = os.environ.get("REPLAY_FAULT_RESTARTS") == "1"


@pytest.fixture(scope="session")
def settings() -> Iterator[Settings]:
    s = make_settings(
        "faults", REDIS_DBS, batch_size=250, heartbeat_seconds=0.5, stale_seconds=3.0,
        reconcile_seconds=1.0,
    )  # fmt: skip
    create_database(s, SEEDS)
    yield s
    if not os.environ.get("REPLAY_KEEP_TEST_DATABASE"):
        db.drop_database(s, s.database_name)


class Cluster:
    """Worker processes and a scheduler (beat + reconciler), started and killed at will."""

    def __init__(self, settings: Settings, logs: Path) -> None:
        self.settings = settings
        self.logs = logs
        self.workers: list[WorkerProcess] = []
        self.scheduler: WorkerProcess | None = None
        self._names = itertools.count(1)

    def start_worker(
        self, env: dict[str, str] | None = None, settings: Settings | None = None
    ) -> WorkerProcess:
        name = f"fw{next(self._names)}"
        w = WorkerProcess(
            settings or self.settings, name, log_path=self.logs / f"{name}.log",
            extra_env={**WORKER_ENV, **(env or {})},
        ).start()  # fmt: skip
        self.workers.append(w)
        wait_until_ready(self.settings, [name], workers=[w])
        return w

    def start_scheduler(self) -> WorkerProcess:
        name = f"sched{next(self._names)}"
        self.scheduler = scheduler_process(
            self.settings, name, self.logs / f"{name}.schedule",
            log_path=self.logs / f"{name}.log", extra_env=WORKER_ENV,
        ).start()  # fmt: skip
        wait_until_ready(self.settings, [name], workers=[self.scheduler])
        return self.scheduler

    def live_workers(self) -> list[WorkerProcess]:
        return [w for w in self.workers if w.alive()]

    def stop(self) -> None:
        for p in [*self.workers, *([self.scheduler] if self.scheduler else [])]:
            p.kill()
        self.workers.clear()
        self.scheduler = None


@pytest.fixture
def cluster(settings: Settings, tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(settings, tmp_path)
    try:
        yield c
    finally:
        c.stop()


@pytest.fixture
def coordinator(settings: Settings, conn: db.Connection) -> Iterator[Coordinator]:
    """A coordinator on a clean state: no jobs, no markers, empty read models, empty queues."""
    from tests.support import flush

    reset_state(settings, conn)
    flush(settings.broker_url)
    flush(settings.result_backend)
    c = Coordinator(settings)
    yield c
    c.close()
