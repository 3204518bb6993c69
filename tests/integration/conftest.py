"""Fixtures for the integration suite: a fresh PostgreSQL database, dedicated Redis DB numbers,
and two real ``celery worker`` processes for the whole session.

The store is seeded once; each test starts from empty read models, markers and jobs (``clean``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from local.workers import WorkerProcess, wait_until_ready
from scheduler.coordinator import Coordinator
from shared import context, db
from shared.celeryconf import close_app, control_app
from shared.settings import Settings
from tests.support import (
    ROOT,
    WORKER_ENV,
    create_database,
    events_where,
    flush,
    reset_state,
)

__all__ = ["ROOT", "TOTAL_SEEDED", "events_where", "flush"]

REDIS_DBS = (10, 11, 12)  # broker, result backend, cache (the product's defaults are 0, 1, 2)
WORKER_BATCH_SIZE = 250  # small, so that aggregates and slices span many batches

# The seeded store: 200 orders of 40 events and 20 of 200 (uneven on purpose): 12,000 events.
SEEDS = ((7, 200, 40), (8, 20, 200))
TOTAL_SEEDED = sum(a * m for _, a, m in SEEDS)


@pytest.fixture(scope="session")
def settings() -> Iterator[Settings]:
    from tests.support import make_settings

    s = make_settings("test", REDIS_DBS, batch_size=WORKER_BATCH_SIZE)
    create_database(s, SEEDS)
    yield s
    db.drop_database(s, s.database_name)


@pytest.fixture(scope="session")
def workers(
    settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[WorkerProcess]]:
    """Two worker processes (one pool process each), consuming the replay and live queues."""
    logs = tmp_path_factory.mktemp("worker-logs")
    procs = [
        WorkerProcess(
            settings, f"w{i}", queues=(settings.queue, settings.live_queue),
            log_path=logs / f"w{i}.log", extra_env=WORKER_ENV,
        ).start()
        for i in (1, 2)
    ]  # fmt: skip
    try:
        wait_until_ready(settings, [p.name for p in procs], workers=procs)
        yield procs
    finally:
        for p in procs:
            p.stop()


@pytest.fixture
def clean(settings: Settings, conn: db.Connection) -> None:
    """Empty read models, markers and jobs; the seeded events stay."""
    reset_state(settings, conn)


@pytest.fixture
def coordinator(
    settings: Settings, workers: list[WorkerProcess], clean: None
) -> Iterator[Coordinator]:
    c = Coordinator(settings)
    yield c
    c.close()


@pytest.fixture
def ctx(settings: Settings) -> Iterator[context.Context]:
    """An in-process worker context (for the live entry point called directly)."""
    c = context.Context.create(settings)
    yield c
    c.close()


@pytest.fixture
def celery_client(settings: Settings) -> Iterator[Any]:
    app = control_app(settings)
    yield app
    close_app(app)
