"""End-to-end replays through two real worker processes (DESIGN.md "Flow of one job")."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

from examples.orders import seed
from local.workers import WorkerProcess
from scheduler.coordinator import Coordinator
from shared import context, dispatch, live, store
from shared.celeryconf import LIVE_TASK, SLICE_TASK
from shared.db import Connection
from shared.errors import InvalidJobState
from shared.settings import Settings
from tests.folds import fold_order_summary, read_order_summary
from tests.integration.conftest import TOTAL_SEEDED, events_where, flush
from tests.support import wait_until

pytestmark = pytest.mark.integration

BIG_ORDER = seed.aggregate_id(8, 3)  # one of the 200-event orders
FEB, APR = datetime(2026, 2, 1, tzinfo=UTC), datetime(2026, 4, 1, tzinfo=UTC)

# replay type -> (submit kwargs, SQL selecting exactly the same events, its parameters)
CASES: dict[str, tuple[dict[str, Any], str, tuple[Any, ...]]] = {
    "full": ({"replay_type": "full"}, "TRUE", ()),
    "aggregate": (
        {"replay_type": "aggregate", "aggregate_id": BIG_ORDER},
        "aggregate_id = %s",
        (BIG_ORDER,),
    ),
    "time_range": (
        {"replay_type": "time_range", "from_time": FEB, "to_time": APR.isoformat()},
        "occurred_at >= %s AND occurred_at < %s",
        (FEB, APR),
    ),
    "event_type": (
        {"replay_type": "event_type", "event_types": ["ItemAdded", "OrderShipped"]},
        "event_type IN ('ItemAdded', 'OrderShipped')",
        (),
    ),
    "time_range+event_types": (
        {
            "replay_type": "time_range",
            "from_time": "2026-02-01T00:00:00Z",
            "to_time": APR,
            "event_types": ["ItemAdded", "PaymentProcessed"],
        },
        "occurred_at >= %s AND occurred_at < %s"
        " AND event_type IN ('ItemAdded', 'PaymentProcessed')",
        (FEB, APR),
    ),
}


def run(coordinator: Coordinator, consumer: str = "order_summary", **kwargs: Any) -> dict[str, Any]:
    job = coordinator.wait(coordinator.submit(consumer, **kwargs), timeout=120)
    assert job["status"] == "completed", job.get("error")
    assert job["processed_count"] == job["total_events"]
    return job


@pytest.mark.parametrize("case", list(CASES))
def test_each_replay_type_equals_an_independent_fold(
    coordinator: Coordinator, conn: Connection, case: str
) -> None:
    kwargs, condition, params = CASES[case]
    selected = events_where(conn, condition, params)
    assert selected, "the case must select some events"

    job = run(coordinator, slices=8, **kwargs)

    assert job["total_events"] == len(selected)
    assert job["applied_count"] == len(selected)
    if case != "aggregate":
        assert job["slice_count"] == 8
    assert read_order_summary(conn) == fold_order_summary(selected)
    processed = conn.execute("SELECT count(*) AS n FROM processed").fetchone()
    assert processed["n"] == len(selected)


def test_per_aggregate_order_holds_across_slices_and_batches(
    coordinator: Coordinator, conn: Connection
) -> None:
    # strict_order raises on any event that is not the next sequence_num of its aggregate; the
    # 200-event orders span several 250-event batches.
    job = run(coordinator, "strict_order", slices=8)
    state = conn.execute(
        "SELECT count(*) AS n, sum(events) AS e FROM strict_order_state"
    ).fetchone()
    assert state["n"] == 220
    assert state["e"] == job["total_events"] == TOTAL_SEEDED


def test_slices_are_balanced_by_event_count(coordinator: Coordinator) -> None:
    job = run(coordinator, slices=4)
    sizes = [s["total_events"] for s in job["slices"]]
    assert sum(sizes) == TOTAL_SEEDED
    # an aggregate is never split, so a slice can be off by at most one aggregate (200 events)
    assert max(sizes) - min(sizes) <= 2 * 200, sizes


def test_catch_up_twice_changes_nothing_the_second_time(
    coordinator: Coordinator, conn: Connection
) -> None:
    first = run(coordinator, slices=8)
    before = read_order_summary(conn)

    second = run(coordinator, slices=8)

    assert first["applied_count"] == TOTAL_SEEDED
    # The second one is planned after the handler's watermarks: it has nothing to read, and is
    # completed at planning.
    assert second["status"] == "completed"
    assert second["applied_count"] == second["total_events"] == 0
    assert second["slices"] == []
    assert read_order_summary(conn) == before


def test_reset_rebuilds_a_corrupted_read_model(coordinator: Coordinator, conn: Connection) -> None:
    run(coordinator, slices=8)
    expected = fold_order_summary(events_where(conn))
    conn.execute("UPDATE order_summary SET total = 0, status = 'bogus'")
    conn.execute("DELETE FROM order_summary WHERE order_id LIKE 'order-7-00001%%'")
    conn.execute("INSERT INTO order_summary VALUES ('ghost', 1, 1, 'placed', 1)")

    run(coordinator, slices=8)  # catch-up: everything was processed, nothing is repaired
    assert read_order_summary(conn) != expected

    job = run(coordinator, slices=8, reset=True)

    assert job["applied_count"] == TOTAL_SEEDED
    assert read_order_summary(conn) == expected
    # a full rebuild writes no per-event markers: its snapshot says what it covered, and a
    # catch-up after it takes all of that as processed
    assert conn.execute("SELECT count(*) AS n FROM processed_event").fetchone()["n"] == 0
    assert conn.execute("SELECT count(*) AS n FROM handler_progress").fetchone()["n"] == 0
    after = run(coordinator, slices=8)
    assert (after["applied_count"], after["skipped_count"]) == (0, TOTAL_SEEDED)
    assert read_order_summary(conn) == expected


def test_after_a_rebuild_a_catch_up_applies_exactly_the_new_events(
    coordinator: Coordinator, conn: Connection, ctx: context.Context
) -> None:
    run(coordinator, slices=8, reset=True)
    try:
        store.append(conn, "late-3", "Order", [store.NewEvent("OrderPlaced")], expected_version=0)
        old = [str(e["event_id"]) for e in events_where(conn, "aggregate_id = %s", (BIG_ORDER,))]
        # live processing leaves the rebuild's events alone: they are processed already
        assert live.process_live(ctx, "order_summary", old).applied == []

        job = run(coordinator, slices=4)

        # live processing moved BIG_ORDER's watermark over its events: the catch-up reads the
        # others (the rebuild's, skipped) and the new one
        assert job["applied_count"] == 1
        assert job["total_events"] == TOTAL_SEEDED + 1 - len(old)
        assert read_order_summary(conn) == fold_order_summary(events_where(conn))
    finally:
        conn.execute("DELETE FROM event WHERE aggregate_id = 'late-3'")


def test_a_catch_up_is_refused_while_a_full_rebuild_is_unfinished(
    coordinator: Coordinator, conn: Connection
) -> None:
    job_id = coordinator.submit("slow_noop", reset=True, slices=2)
    coordinator.cancel(job_id)
    with pytest.raises(InvalidJobState, match=job_id):
        coordinator.submit("slow_noop", slices=2)
    assert conn.execute("SELECT count(*) AS n FROM replay_job").fetchone()["n"] == 1


def test_a_copy_sent_before_a_resume_never_takes_its_slice(
    coordinator: Coordinator,
    conn: Connection,
    settings: Settings,
    workers: list[WorkerProcess],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A copy of a slice's task still queued from before a cancel and resume used to take the
    # slice and complete it for its old chord, which no longer counts; the resumed chord's copy
    # then found the slice done and was not counted either: the job stayed running with every
    # slice done (seen in CI). Here the old copy of slice 1 reaches a worker first, for sure.
    sent: list[list[tuple[int, str]]] = []
    send_job = dispatch.send_job
    monkeypatch.setattr(dispatch, "send_job", lambda _app, _s, _j, slices: sent.append(slices))
    job_id = coordinator.submit("order_summary", slices=2)
    coordinator.cancel(job_id)
    coordinator.resume(job_id)
    (first, resumed) = sent
    assert dict(first)[1] != dict(resumed)[1]

    stale = dict(first)[1]
    coordinator.celery.signature(SLICE_TASK, args=(job_id, 1), task_id=stale,
                                 queue=settings.queue).apply_async()  # fmt: skip
    wait_until(
        lambda: any(f"slice {job_id}/1: not taken (superseded" in w.log_path.read_text()
                    for w in workers if w.log_path is not None),
        30, "the stale copy to be refused",
    )  # fmt: skip
    assert coordinator.get(job_id)["slices"][1]["attempts"] == 0

    send_job(coordinator.celery, settings, uuid.UUID(job_id), resumed)
    job = coordinator.wait(job_id, timeout=120)
    assert job["status"] == "completed" and job["processed_count"] == TOTAL_SEEDED
    assert read_order_summary(conn) == fold_order_summary(events_where(conn))


def test_reset_of_one_aggregate_rebuilds_only_that_aggregate(
    coordinator: Coordinator, conn: Connection
) -> None:
    run(coordinator, slices=8)
    expected = fold_order_summary(events_where(conn))
    conn.execute("UPDATE order_summary SET item_count = -1 WHERE order_id = %s", (BIG_ORDER,))
    conn.execute("UPDATE order_summary SET item_count = -2 WHERE order_id <> %s", (BIG_ORDER,))

    job = run(coordinator, replay_type="aggregate", aggregate_id=BIG_ORDER, reset=True)

    assert job["applied_count"] == 200
    after = read_order_summary(conn)
    assert after[BIG_ORDER] == expected[BIG_ORDER]
    assert {v[0] for k, v in after.items() if k != BIG_ORDER} == {-2}


def test_flushed_cache_never_lets_an_event_apply_twice(
    coordinator: Coordinator, conn: Connection, settings: Settings
) -> None:
    run(coordinator, slices=8)
    flush(settings.redis_url)

    job = run(coordinator, slices=8)

    assert job["applied_count"] == 0
    assert read_order_summary(conn) == fold_order_summary(events_where(conn))


def test_events_committed_after_planning_are_not_in_the_job(
    coordinator: Coordinator, conn: Connection, settings: Settings
) -> None:
    from shared import db

    # A writer whose transaction began before planning but commits after it: a timestamp or
    # sequence cut-off would let its event slip into (or out of) the job; the snapshot does not.
    with db.connect(settings) as writer, writer.transaction():
        store.append(writer, "late-1", "Order", [store.NewEvent("OrderPlaced")], expected_version=0)
        job_id = coordinator.submit("order_summary", slices=8)
    store.append(conn, "late-2", "Order", [store.NewEvent("OrderPlaced")], expected_version=0)
    try:
        job = coordinator.wait(job_id, timeout=120)
        assert job["status"] == "completed"
        assert job["total_events"] == job["processed_count"] == TOTAL_SEEDED
        rows = read_order_summary(conn)
        assert "late-1" not in rows and "late-2" not in rows

        later = run(coordinator, slices=2)  # a later catch-up picks both up, and only them
        assert later["applied_count"] == 2
        assert read_order_summary(conn) == fold_order_summary(events_where(conn))
    finally:
        conn.execute("DELETE FROM event WHERE aggregate_id IN ('late-1', 'late-2')")


def test_aggregate_without_events_completes_with_zero(coordinator: Coordinator) -> None:
    job = run(coordinator, replay_type="aggregate", aggregate_id="no-such-order")
    assert job["total_events"] == 0 and job["slice_count"] == 0


def test_notifications_never_sent_by_replay_and_once_live(
    coordinator: Coordinator, conn: Connection, ctx: context.Context, celery_client: Any,
    settings: Settings,
) -> None:  # fmt: skip
    shipped = events_where(conn, "event_type = 'OrderShipped'")
    all_ids = [str(e["event_id"]) for e in events_where(conn)]

    job = run(coordinator, "order_notifications", slices=8, slice_by="time")
    assert job["applied_count"] == TOTAL_SEEDED
    assert conn.execute("SELECT count(*) AS n FROM email_outbox").fetchone()["n"] == 0

    # The same events processed live (markers cleared, as for events never replayed): through
    # the live Celery task for half of them, through the entry point in-process for the rest.
    conn.execute("DELETE FROM processed_event WHERE handler_name = 'order_notifications'")
    conn.execute("DELETE FROM handler_progress WHERE handler_name = 'order_notifications'")
    half = len(all_ids) // 2
    sent = celery_client.send_task(LIVE_TASK, args=("order_notifications", all_ids[:half]),
                                   queue=settings.live_queue)  # fmt: skip
    assert sent.get(timeout=60)["applied"] == half
    live.process_live(ctx, "order_notifications", all_ids[half:])
    live.process_live(ctx, "order_notifications", all_ids)  # again: all skipped

    outbox = conn.execute("SELECT event_id FROM email_outbox").fetchall()
    assert sorted(r["event_id"] for r in outbox) == sorted(e["event_id"] for e in shipped)

    run(coordinator, "order_notifications", reset=True, slices=8)  # a rebuild sends nothing
    assert conn.execute("SELECT count(*) AS n FROM email_outbox").fetchone()["n"] == len(shipped)


def test_slice_progress_is_reported_to_celery(coordinator: Coordinator, celery_client: Any) -> None:
    # slow_noop sleeps a quarter of a second per batch: about 8 batches in February
    job_id = coordinator.submit(
        "slow_noop", replay_type="time_range", from_time=FEB, to_time="2026-03-01T00:00:00Z",
        slices=1,
    )  # fmt: skip
    planned = coordinator.get(job_id)
    result = celery_client.AsyncResult(planned["slices"][0]["task_id"])
    seen: list[dict[str, Any]] = []
    committed: list[int] = []  # what other sessions see of the slice while it runs
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        # state and meta from one read: reading result.state then result.info races the end
        meta = result.backend.get_task_meta(result.id)
        if meta["status"] == "SUCCESS":
            break
        if meta["status"] == "PROGRESS":
            seen.append(meta["result"])
            committed.append(coordinator.get(job_id)["slices"][0]["processed_count"])
        time.sleep(0.02)
    job = coordinator.wait(job_id, timeout=60)
    assert job["status"] == "completed"
    assert seen, "no PROGRESS state was observed"
    # each batch commits on its own: progress is visible in the slice row while it runs
    assert any(0 < n < planned["total_events"] for n in committed), committed
    assert all(m["total"] == planned["total_events"] for m in seen)
    assert 0 < seen[0]["processed"] < planned["total_events"]


def test_a_batch_the_sql_fold_cannot_take_goes_through_the_handler(
    coordinator: Coordinator, conn: Connection
) -> None:
    # order_summary rebuilds with a set-based SQL fold; an event it cannot read (a quantity
    # that is not a number) sends that batch through handle_batch, which parks the event.
    bad = store.append(
        conn, "bad-qty", "Order",
        [store.NewEvent("OrderPlaced"), store.NewEvent("ItemAdded", {"sku": "X", "qty": "many",
                                                                     "price": 1.5})],
        expected_version=0,
    )  # fmt: skip
    try:
        job = run(coordinator, slices=4, reset=True, on_error="park")
        assert job["poison_count"] == 1
        parked = conn.execute("SELECT event_id FROM parked_event").fetchall()
        assert [p["event_id"] for p in parked] == [bad[1]]
        good = events_where(conn, "aggregate_id <> 'bad-qty'")
        state = read_order_summary(conn)
        assert {k: v for k, v in state.items() if k != "bad-qty"} == fold_order_summary(good)
        assert state["bad-qty"][2:] == ("placed", 1)
    finally:
        conn.execute("DELETE FROM event WHERE aggregate_id = 'bad-qty'")
