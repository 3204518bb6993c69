"""Progress per aggregate (issue 15): one handler through every path that records what it
processed - a time-range replay (beyond a gap: markers), a full catch-up (watermarks, the
markers absorbed), live events, a catch-up whose worker is SIGKILLed, a reset of one aggregate
- and after each step the read model equals an independent fold and no event took effect twice
(the handler's counts and the fold; ``processed`` says every event once)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from scheduler.coordinator import Coordinator
from shared import context, db, live, store
from shared.settings import Settings
from tests.faults.conftest import TOTAL, Cluster
from tests.faults.helpers import running
from tests.folds import STATUS, fold_order_summary, read_order_summary
from tests.support import count, events_where, wait_until

pytestmark = pytest.mark.faults

HANDLER = "order_summary"
FEB, APR = datetime(2026, 2, 15, tzinfo=UTC), datetime(2026, 4, 1, tzinfo=UTC)
#: aggregates that get new events, live and for the catch-up that is killed
LIVE_AGGREGATES = 40
LATER_AGGREGATES = 200


def processed(conn: db.Connection) -> int:
    return count(conn, "SELECT count(*) FROM processed WHERE handler_name = %s", (HANDLER,))


def markers(conn: db.Connection) -> int:
    return count(conn, "SELECT count(*) FROM processed_event WHERE handler_name = %s", (HANDLER,))


def assert_folded(
    conn: db.Connection, events: list[dict[str, Any]], status: dict[str, str | None] | None = None
) -> None:
    """The read model is the fold of ``events`` and the handler processed exactly them.
    ``status``: orders whose status is not the fold's, because their events were applied out
    of order (order_summary's status is the last status event it was handed)."""
    expected = fold_order_summary(events)
    for order_id, last in (status or {}).items():
        expected[order_id] = (*expected[order_id][:2], last, expected[order_id][3])
    assert read_order_summary(conn) == expected
    assert processed(conn) == len(events)


def applied_status(*runs: list[dict[str, Any]]) -> dict[str, str | None]:
    """Each order's status after ``runs`` were applied one after the other, each in order."""
    status: dict[str, str | None] = {}
    for run in runs:
        for e in sorted(run, key=lambda e: (e["aggregate_id"], e["sequence_num"])):
            status.setdefault(e["aggregate_id"], None)
            if e["event_type"] in STATUS:
                status[e["aggregate_id"]] = STATUS[e["event_type"]]
    return status


def append_items(conn: db.Connection, aggregates: list[str], n: int) -> list[str]:
    """``n`` ItemAdded events at the end of each aggregate; their ids."""
    ids = []
    for aggregate_id in aggregates:
        version = store.stream_version(conn, aggregate_id)
        items = [store.NewEvent("ItemAdded", {"sku": f"late-{i}", "qty": 1, "price": "2.50"})
                 for i in range(n)]  # fmt: skip
        ids += [str(e) for e in store.append(conn, aggregate_id, "Order", items,
                                             expected_version=version)]  # fmt: skip
    return ids


def test_one_handler_through_every_path_processes_each_event_once(
    cluster: Cluster, coordinator: Coordinator, conn: db.Connection, settings: Settings
) -> None:
    cluster.start_scheduler()
    cluster.start_worker()
    cluster.start_worker()
    aggregates = sorted({e["aggregate_id"] for e in events_where(conn)})
    ctx = context.Context.create(settings)
    try:
        # 1. A time-range replay: the events of each aggregate from mid-February, beyond a gap.
        ranged = events_where(conn, "occurred_at >= %s AND occurred_at < %s", (FEB, APR))
        job = coordinator.wait(coordinator.submit(
            HANDLER, replay_type="time_range", from_time=FEB, to_time=APR, slices=4
        ), timeout=120)  # fmt: skip
        assert job["status"] == "completed", job["error"]
        assert_folded(conn, ranged)
        assert markers(conn) > 0  # what no watermark can say

        # 2. A full catch-up: the rest; the watermarks move over the markers, which go. The
        #    handler needs order, and got the later events first: its status is the last one
        #    handed over, not the fold's.
        job = coordinator.wait(coordinator.submit(HANDLER, slices=8), timeout=120)
        assert job["status"] == "completed", job["error"]
        assert job["applied_count"] == TOTAL - len(ranged)
        ranged_ids = {e["event_id"] for e in ranged}
        rest = [e for e in events_where(conn) if e["event_id"] not in ranged_ids]
        status = applied_status(ranged, rest)
        assert_folded(conn, events_where(conn), status)
        assert markers(conn) == 0
        assert count(conn, "SELECT count(*) FROM handler_progress WHERE handler_name = %s",
                     (HANDLER,)) == len(aggregates)  # fmt: skip

        # 3. Live events on existing aggregates: each applied once, a second time skipped.
        new = append_items(conn, aggregates[:LIVE_AGGREGATES], 2)
        assert len(live.process_live(ctx, HANDLER, new).applied) == len(new)
        assert live.process_live(ctx, HANDLER, new).applied == []
        assert_folded(conn, events_where(conn), status)
        assert markers(conn) == 0  # each continued its aggregate's prefix

        # 4. A catch-up of new events whose worker is SIGKILLed mid-job, resumed by the
        #    reconciler on a new worker.
        later = append_items(conn, aggregates[-LATER_AGGREGATES:], 3)
        # planned after the watermarks: it reads only the new events (600), slowly enough to
        # be killed halfway
        job_id = coordinator.submit(HANDLER, slices=8, max_events_per_second=60)
        assert coordinator.get(job_id)["total_events"] == len(later)
        wait_until(lambda: running(coordinator, job_id, at_least=120), 60, "the catch-up")
        cluster.live_workers()[0].kill()
        cluster.start_worker()
        coordinator.throttle(job_id, None)
        job = coordinator.wait(job_id, timeout=180)
        assert job["status"] == "completed", job["error"]
        assert job["applied_count"] == len(later)  # the killed batch rolled back, nothing twice
        assert_folded(conn, events_where(conn), status)

        # 5. A reset of one aggregate: rebuilt from its events, the others untouched.
        target = aggregates[-1]
        conn.execute("UPDATE order_summary SET total = -1 WHERE order_id = %s", (target,))
        job = coordinator.wait(coordinator.submit(
            HANDLER, replay_type="aggregate", aggregate_id=target, reset=True
        ), timeout=60)  # fmt: skip
        assert job["status"] == "completed", job["error"]
        assert job["applied_count"] == len(events_where(conn, "aggregate_id = %s", (target,)))
        del status[target]  # rebuilt in order
        assert_folded(conn, events_where(conn), status)
        row = conn.execute(
            "SELECT watermark FROM handler_progress WHERE handler_name = %s AND aggregate_id = %s",
            (HANDLER, target),
        ).fetchone()
        assert row is not None and row["watermark"] == store.stream_version(conn, target)
    finally:
        ctx.close()
        # the suite's other tests count the seeded events only
        conn.execute("DELETE FROM event WHERE payload->>'sku' LIKE 'late-%%'")
