"""The contract interfaces (DESIGN.md): the module-level Python API and the CLI verbs, against
real worker processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

import scheduler
import scheduler.coordinator
from local.workers import WorkerProcess
from shared.db import Connection
from shared.settings import Settings
from tests.integration.conftest import ROOT, TOTAL_SEEDED
from tests.support import WORKER_ENV, count

pytestmark = pytest.mark.integration


@pytest.fixture
def environment(
    settings: Settings, workers: list[WorkerProcess], clean: None, monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    """The Python API reads its settings from the environment, as a user's program would."""
    for key, value in settings.as_env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(scheduler.coordinator, "_default", None)
    yield
    if scheduler.coordinator._default is not None:
        scheduler.coordinator._default.close()
    monkeypatch.setattr(scheduler.coordinator, "_default", None)


def test_the_python_api(environment: None, conn: Connection) -> None:
    job_id = scheduler.submit_replay("order_summary", replay_type="full", slices=4)
    job = scheduler.wait_for_job(job_id, timeout=120)
    assert job["status"] == "completed" and job["processed_count"] == TOTAL_SEEDED
    assert scheduler.get_job(job_id)["job_id"] == job_id

    slow = scheduler.submit_replay("slow_noop", slices=2)
    cancelled = scheduler.cancel_job(slow)
    assert cancelled["status"] == "cancelled"
    scheduler.resume_job(slow)
    assert scheduler.wait_for_job(slow, timeout=120)["status"] == "completed"


def replay(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "scheduler.cli", *args],
        env={**os.environ, **settings.as_env(), **WORKER_ENV},
        capture_output=True, text=True, timeout=180, cwd=ROOT,
    )  # fmt: skip


def test_the_cli_verbs(
    settings: Settings, workers: list[WorkerProcess], clean: None, conn: Connection
) -> None:
    migrated = replay(settings, "migrate")
    assert migrated.returncode == 0 and "already up to date" in migrated.stdout

    submitted = replay(settings, "submit", "order_summary", "--slices", "4", "--wait")
    assert submitted.returncode == 0, submitted.stderr
    assert f"{TOTAL_SEEDED:,}/{TOTAL_SEEDED:,} events" in submitted.stdout
    assert "events/s" in submitted.stdout
    job_id = conn.execute("SELECT job_id::text AS j FROM replay_job").fetchone()["j"]

    status = replay(settings, "status", job_id, "--json")
    assert status.returncode == 0
    assert json.loads(status.stdout)["status"] == "completed"
    listed = replay(settings, "jobs")
    assert listed.returncode == 0 and "completed" in listed.stdout

    slow = replay(settings, "submit", "slow_noop", "--slices", "2")
    slow_id = slow.stdout.strip()
    assert slow.returncode == 0 and len(slow_id) == 36
    cancelled = replay(settings, "cancel", slow_id)
    assert cancelled.returncode == 0 and "cancelled" in cancelled.stdout
    assert replay(settings, "cancel", slow_id).returncode == 2  # nothing left to cancel
    resumed = replay(settings, "resume", slow_id, "--wait")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "completed" in resumed.stdout

    reconciled = replay(settings, "reconcile")
    assert reconciled.returncode == 0 and "finalized 0 job(s)" in reconciled.stdout
    assert count(conn, "SELECT count(*) FROM replay_job WHERE status <> 'completed'") == 0
