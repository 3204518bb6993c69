"""Workers and servers dying mid-job (issue: resilience). Every test ends with the exact result."""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from scheduler.coordinator import Coordinator
from shared import db, dispatch
from shared.settings import Settings
from tests.faults.conftest import RESTARTS_ALLOWED, TOTAL, Cluster
from tests.faults.helpers import assert_exact, running
from tests.support import ROOT, WORKER_ENV, count, flush, wait_until

pytestmark = pytest.mark.faults


def test_sigkilled_workers_resume_from_their_checkpoints(
    cluster: Cluster, coordinator: Coordinator, settings: Settings
) -> None:
    cluster.start_scheduler()
    cluster.start_worker()
    cluster.start_worker()
    handed_before = _handed(settings)
    job_id = coordinator.submit("slow_summary", slices=8)
    wait_until(lambda: running(coordinator, job_id), 60, "the job to get going")
    rng = random.Random()
    kills = 0
    for _ in range(3):
        time.sleep(rng.uniform(0.5, 2.5))
        assert coordinator.get(job_id)["status"] == "running", "the job ended before 3 kills"
        victim = rng.choice(cluster.live_workers())
        victim.kill()  # SIGKILL to the worker and its pool process, mid-batch
        kills += 1
        cluster.start_worker()

    job = coordinator.wait(job_id, timeout=240)

    assert job["status"] == "completed", job["error"]
    assert job["processed_count"] == job["total_events"] == TOTAL
    assert kills == 3
    assert_exact(settings, "slow_summary", TOTAL)
    reread = _handed(settings) - handed_before - TOTAL
    print(f"\n{kills} SIGKILLs: {reread} events re-read (bound: one batch of"
          f" {settings.batch_size} per kill)")  # fmt: skip
    assert 0 <= reread <= kills * settings.batch_size


def _handed(settings: Settings) -> int:
    """How many events slow_summary was handed so far in this database, rolled-back batches
    included (a sequence does not roll back)."""
    with db.connect(settings) as conn:
        row = conn.execute("SELECT last_value, is_called FROM slow_summary_handed").fetchone()
    assert row is not None
    return int(row["last_value"]) if row["is_called"] else 0


def slow_job_under_way(cluster: Cluster, coordinator: Coordinator) -> str:
    """A scheduler, two workers, and a slow_summary job of 8 slices 5,000 events in."""
    cluster.start_scheduler()
    cluster.start_worker()
    cluster.start_worker()
    job_id = coordinator.submit("slow_summary", slices=8)
    wait_until(lambda: running(coordinator, job_id, 5_000), 60, "the job to get going")
    return job_id


def test_a_flushed_broker_loses_nothing(
    cluster: Cluster, coordinator: Coordinator, settings: Settings
) -> None:
    job_id = slow_job_under_way(cluster, coordinator)

    # What a Redis restart without persistence does: queued slices, the messages of running
    # ones, the chord's bookkeeping and every result are gone.
    flush(settings.broker_url)
    flush(settings.result_backend)
    flushed_at = time.monotonic()

    job = coordinator.wait(job_id, timeout=240)
    took = time.monotonic() - flushed_at
    assert job["status"] == "completed", job["error"]
    assert job["processed_count"] == TOTAL
    assert_exact(settings, "slow_summary", TOTAL)
    print(f"\ncompleted {took:.1f} s after the flush")
    # The whole job takes about 15 s of work here; lost slices are picked up after stale_seconds
    # (3 s) by a reconciler pass (every second): no manual step, and no long wait.
    assert took < 15 + settings.stale_seconds + settings.reconcile_seconds + 20


@pytest.mark.machine_server("redis")
@pytest.mark.skipif(
    not RESTARTS_ALLOWED, reason="restarts the machine's Redis: set REPLAY_FAULT_RESTARTS=1"
)
def test_a_restarted_redis_loses_nothing(
    cluster: Cluster, coordinator: Coordinator, settings: Settings
) -> None:
    job_id = slow_job_under_way(cluster, coordinator)

    subprocess.run(["redis-cli", "-h", "127.0.0.1", "-p", "6379", "shutdown", "nosave"],
                   check=False, capture_output=True, timeout=30)  # fmt: skip
    time.sleep(1)
    # Started again exactly as scripts/bootstrap starts it (its user, its flags).
    env = {k: v for k, v in os.environ.items() if k != "CELERY_BROKER_URL"}
    subprocess.run([str(ROOT / "scripts" / "bootstrap"), "redis"], env=env, check=True,
                   timeout=60)  # fmt: skip

    restarted_at = time.monotonic()
    job = coordinator.wait(job_id, timeout=240)
    took = time.monotonic() - restarted_at
    assert job["status"] == "completed", job["error"]
    assert_exact(settings, "slow_summary", TOTAL)
    assert took < 15 + settings.stale_seconds + settings.reconcile_seconds + 20


@pytest.mark.machine_server("postgres")
@pytest.mark.skipif(
    not RESTARTS_ALLOWED or shutil.which("pg_ctlcluster") is None,
    reason="restarts the machine's PostgreSQL: set REPLAY_FAULT_RESTARTS=1",
)
def test_a_restarted_postgresql_loses_nothing(
    cluster: Cluster, coordinator: Coordinator, settings: Settings
) -> None:
    job_id = slow_job_under_way(cluster, coordinator)

    version = sorted(p.name for p in Path("/etc/postgresql").iterdir())[-1]
    subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "restart"],
                   check=True, timeout=120)  # fmt: skip

    job = coordinator.wait(job_id, timeout=240)
    assert job["status"] == "completed", job["error"]
    assert_exact(settings, "slow_summary", TOTAL)


def test_the_reconciler_finalizes_a_job_whose_callback_was_lost(
    cluster: Cluster, coordinator: Coordinator, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    def without_callback(app, settings, job_id, slices):  # type: ignore[no-untyped-def]
        for slice_no, task_id in slices:  # the chord's header only: its callback is "lost"
            app.signature("replay.slice", args=(str(job_id), slice_no), task_id=task_id,
                          queue=settings.queue).apply_async()  # fmt: skip

    monkeypatch.setattr(dispatch, "send_job", without_callback)
    cluster.start_worker()
    cluster.start_worker()
    job_id = coordinator.submit("poisonable_summary", slices=4)
    wait_until(
        lambda: all(s["status"] == "completed" for s in coordinator.get(job_id)["slices"]),
        120, "every slice to complete",
    )  # fmt: skip
    time.sleep(1)
    assert coordinator.get(job_id)["status"] == "running"  # nobody finalized it

    started = time.monotonic()
    cluster.start_scheduler()
    job = coordinator.wait(job_id, timeout=settings.reconcile_seconds + 30)
    assert job["status"] == "completed"
    assert job["processed_count"] == TOTAL
    print(f"\nfinalized by the reconciler {time.monotonic() - started:.1f} s after it started")


@pytest.mark.parametrize("reset", [False, True], ids=["catch-up", "positional-rebuild"])
def test_slices_outliving_the_visibility_timeout_apply_nothing_twice(
    cluster: Cluster, coordinator: Coordinator, settings: Settings, reset: bool
) -> None:
    # Redis hands a message that is not acknowledged within 2 s to another worker while the
    # first one still runs it (each slice takes about 10 s here; the third worker is idle and
    # takes the redelivered copies): the copies take the slice from each other, and never apply
    # a batch twice.
    short = replace(settings, visibility_timeout_seconds=2)
    for _ in range(3):
        cluster.start_worker(settings=short)
    job_id = coordinator.submit("slow_summary", slices=2, reset=reset)

    job = coordinator.wait(job_id, timeout=240)

    assert job["status"] == "completed", job["error"]
    assert job["processed_count"] == TOTAL
    attempts = sum(s["attempts"] for s in job["slices"])
    print(f"\n{attempts} attempts for 2 slices")
    assert attempts > 2, "no slice was redelivered while running: the test proved nothing"
    assert_exact(settings, "slow_summary", TOTAL)
    if reset:  # a full rebuild writes no per-event bookkeeping: the compare-and-set kept it exact
        with db.connect(settings) as conn:
            assert count(conn, "SELECT count(*) FROM processed_event") == 0
            assert count(conn, "SELECT count(*) FROM handler_progress") == 0


def test_a_setting_that_would_lose_chords_is_refused_at_start_up(settings: Settings) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "worker", "worker", "-Q", settings.queue],
        env={**os.environ, **settings.as_env(), **WORKER_ENV,
             "REPLAY_RESULT_EXPIRES_SECONDS": "60"},
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )  # fmt: skip
    assert proc.returncode != 0
    assert "REPLAY_RESULT_EXPIRES_SECONDS" in proc.stdout + proc.stderr
