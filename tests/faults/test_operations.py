"""Operator control and poison events (issue: resilience): cancel, resume, on_error policies,
one active job per consumer."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from typing import Any
from uuid import UUID

import pytest

from scheduler.coordinator import Coordinator
from shared import db
from shared.errors import ActiveJobExists
from shared.settings import Settings
from tests.faults.conftest import TOTAL, Cluster
from tests.faults.helpers import assert_exact, running
from tests.folds import fold_order_summary, read_order_summary
from tests.support import ROOT, WORKER_ENV, count, events_where, wait_until

pytestmark = pytest.mark.faults

POISON_ORDER = "order-21-0000400"


def poison(conn: db.Connection) -> dict[str, Any]:
    """Make the handler fail on an ItemAdded in the middle of an order (one that changes the
    read model, and commutes, so that it can also be applied late)."""
    event = conn.execute(
        "SELECT event_id, aggregate_id, sequence_num, event_type FROM event"
        " WHERE aggregate_id = %s AND event_type = 'ItemAdded' AND sequence_num > 30"
        " ORDER BY sequence_num LIMIT 1",
        (POISON_ORDER,),
    ).fetchone()
    assert event is not None
    conn.execute("INSERT INTO poison_rule VALUES (%s)", (event["event_id"],))
    return event


def fix_the_handler(conn: db.Connection) -> None:
    conn.execute("TRUNCATE poison_rule")


def cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "scheduler.cli", *args],
        env={**os.environ, **settings.as_env(), **WORKER_ENV},
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )  # fmt: skip


@pytest.fixture
def two_workers(cluster: Cluster) -> Cluster:
    cluster.start_worker()
    cluster.start_worker()
    return cluster


def test_fail_stops_at_the_poison_event_and_resume_continues_from_it(
    two_workers: Cluster, coordinator: Coordinator, conn: db.Connection, settings: Settings
) -> None:
    bad = poison(conn)
    job = coordinator.wait(coordinator.submit("poisonable_summary", slices=8), timeout=120)

    assert job["status"] == "failed"
    assert str(bad["event_id"]) in job["error"] and "Poisoned" in job["error"]
    failed = [s for s in job["slices"] if s["status"] == "failed"]
    assert len(failed) == 1 and failed[0]["error_event_id"] == str(bad["event_id"])
    assert "Traceback" in failed[0]["last_error"]
    # stopped exactly before the poison event: its predecessor is the checkpoint
    assert failed[0]["checkpoint"] == {
        "aggregate_id": POISON_ORDER,
        "sequence_num": bad["sequence_num"] - 1,
    }
    assert all(s["status"] == "completed" for s in job["slices"] if s is not failed[0])
    marked = count(conn, "SELECT count(*) FROM processed WHERE event_id = %s",
                   (bad["event_id"],))  # fmt: skip
    assert marked == 0

    fix_the_handler(conn)
    coordinator.resume(job["job_id"])
    job = coordinator.wait(job["job_id"], timeout=120)

    assert job["status"] == "completed", job["error"]
    assert job["processed_count"] == job["total_events"] == TOTAL
    assert_exact(settings, "poisonable_summary", TOTAL)


def test_skip_goes_on_without_the_poison_event(
    two_workers: Cluster, coordinator: Coordinator, conn: db.Connection, settings: Settings
) -> None:
    bad = poison(conn)
    job = coordinator.wait(
        coordinator.submit("poisonable_summary", slices=8, on_error="skip"), timeout=120
    )

    assert job["status"] == "completed"
    assert job["poison_count"] == 1
    assert job["processed_count"] == TOTAL
    assert job["applied_count"] == TOTAL - 1
    state = read_order_summary(conn)
    expected = fold_order_summary(events_where(conn))
    assert [k for k in expected if state.get(k) != expected[k]] == [POISON_ORDER]
    marked = count(conn, "SELECT count(*) FROM processed WHERE event_id = %s",
                   (bad["event_id"],))  # fmt: skip
    assert marked == 0  # skipped is not processed: a later catch-up picks it up

    fix_the_handler(conn)
    later = coordinator.wait(coordinator.submit("poisonable_summary", slices=8), timeout=120)
    assert later["applied_count"] == 1
    assert_exact(settings, "poisonable_summary", TOTAL)


def test_park_records_the_poison_event_and_retry_parked_applies_it(
    two_workers: Cluster, coordinator: Coordinator, conn: db.Connection, settings: Settings
) -> None:
    bad = poison(conn)
    job = coordinator.wait(
        coordinator.submit("poisonable_summary", slices=8, on_error="park"), timeout=120
    )
    assert job["status"] == "completed"
    assert job["poison_count"] == 1

    listed = cli(settings, "parked", job["job_id"])
    assert listed.returncode == 0, listed.stderr
    assert str(bad["event_id"]) in listed.stdout and "Poisoned" in listed.stdout
    parked = conn.execute("SELECT * FROM parked_event").fetchall()
    assert [p["event_id"] for p in parked] == [bad["event_id"]]
    assert parked[0]["handler_name"] == "poisonable_summary"
    assert "Traceback" in parked[0]["traceback"]

    still = cli(settings, "retry-parked", job["job_id"])  # the bug is not fixed yet
    assert still.returncode == 1 and "1 still failing" in still.stdout

    fix_the_handler(conn)
    retried = cli(settings, "retry-parked", job["job_id"])
    assert retried.returncode == 0, retried.stdout + retried.stderr
    assert "1 parked event(s) applied" in retried.stdout
    assert_exact(settings, "poisonable_summary", TOTAL)
    assert conn.execute("SELECT resolved_at FROM parked_event").fetchone()["resolved_at"]


def test_cancel_stops_every_slice_within_a_batch_and_resume_completes(
    two_workers: Cluster, coordinator: Coordinator, conn: db.Connection, settings: Settings
) -> None:
    job_id = coordinator.submit("slow_summary", slices=8)
    wait_until(lambda: running(coordinator, job_id, 5_000), 60, "the job to get going")

    cancelled = coordinator.cancel(job_id)
    at_cancel = {s["slice_no"]: s["processed_count"] for s in cancelled["slices"]}
    time.sleep(1.0)  # 10 batch durations of slow_summary
    after = coordinator.get(job_id)

    assert cancelled["status"] == after["status"] == "cancelled"
    assert {s["status"] for s in after["slices"]} <= {"cancelled", "completed"}
    assert {s["slice_no"]: s["processed_count"] for s in after["slices"]} == at_cancel
    assert 0 < after["processed_count"] < TOTAL
    assert after["processed_count"] == sum(at_cancel.values())

    coordinator.resume(job_id)
    job = coordinator.wait(job_id, timeout=180)
    assert job["status"] == "completed", job["error"]
    assert job["processed_count"] == TOTAL
    assert_exact(settings, "slow_summary", TOTAL)


def test_a_second_concurrent_submit_for_one_consumer_is_refused(
    coordinator: Coordinator, conn: db.Connection, settings: Settings
) -> None:
    barrier = threading.Barrier(4)
    outcomes: list[str] = []

    def submit() -> None:
        c = Coordinator(settings)
        barrier.wait()
        try:
            outcomes.append(c.submit("order_summary", slices=2))
        except ActiveJobExists as exc:
            outcomes.append(f"refused: {exc}")
        finally:
            c.close()

    threads = [threading.Thread(target=submit) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)

    created = [o for o in outcomes if not o.startswith("refused")]
    assert len(created) == 1 and len(outcomes) == 4
    assert count(conn, "SELECT count(*) FROM replay_job") == 1
    assert all(created[0] in o for o in outcomes if o.startswith("refused"))
    UUID(created[0])
    coordinator.cancel(created[0])  # no workers here: leave nothing active behind


def test_a_worker_without_the_handler_fails_the_slice_instead_of_looping(
    cluster: Cluster, coordinator: Coordinator
) -> None:
    # A deployment mistake: the workers lack REPLAY_HANDLER_MODULES. The job must fail with a
    # message that says so, not be re-dispatched for ever.
    cluster.start_worker(env={"REPLAY_HANDLER_MODULES": ""})
    job = coordinator.wait(coordinator.submit("poisonable_summary", slices=2), timeout=60)
    assert job["status"] == "failed"
    assert "InvalidRequest" in job["error"] and "poisonable_summary" in job["error"]
    assert all(s["attempts"] == 1 for s in job["slices"])
