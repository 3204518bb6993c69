"""Catch-ups planned from the handler's watermarks (issue 15): an incremental catch-up reads what
is new, and a batch of new events is folded in SQL under a guard that keeps it exactly-once."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from uuid import uuid4

import psycopg
import pytest

from examples.orders import seed
from scheduler.coordinator import Coordinator
from shared import context, db, idempotency, live, store
from shared.db import Connection, sql
from shared.scope import Scope, SliceBounds
from shared.settings import Settings
from shared.slicing import SliceBy
from shared.sources.postgres import EventTableReader, Frozen, PostgresSource, unfreeze
from tests.folds import fold_order_summary, read_order_summary
from tests.integration.conftest import TOTAL_SEEDED, events_where
from tests.support import append_items, count, items_of

pytestmark = pytest.mark.integration

HANDLER = "order_summary"
LATE = "late-sku"


def run(coordinator: Coordinator, **kwargs: Any) -> dict[str, Any]:
    job = coordinator.wait(coordinator.submit(HANDLER, **kwargs), timeout=120)
    assert job["status"] == "completed", job.get("error")
    return job


@pytest.fixture
def late(conn: Connection) -> Iterator[None]:
    """Events appended by a test are removed after it."""
    yield
    conn.execute("DELETE FROM event WHERE payload->>'sku' = %s", (LATE,))


def test_an_incremental_catch_up_reads_only_the_aggregates_with_new_events(
    coordinator: Coordinator, conn: Connection, late: None
) -> None:
    first = run(coordinator, slices=4)
    assert first["applied_count"] == first["total_events"] == TOTAL_SEEDED
    touched = [seed.aggregate_id(7, i) for i in (3, 40, 41)]
    for n, aggregate_id in enumerate(touched, start=1):
        append_items(conn, aggregate_id, n, LATE)

    job_id = coordinator.submit(HANDLER, slices=4)
    # Planned from the watermarks: exactly the 6 new events, in slices that span only the
    # aggregates that have some (the others are not read).
    planned = coordinator.get(job_id)
    assert planned["total_events"] == 6
    starts = conn.execute(
        "SELECT aggregate_id, events FROM replay_start WHERE job_id = %s ORDER BY 1", (job_id,)
    ).fetchall()
    assert [(r["aggregate_id"], r["events"]) for r in starts] == [
        (touched[0], 1), (touched[1], 2), (touched[2], 3)
    ]  # fmt: skip
    for s in planned["slices"]:
        assert s["first_aggregate"] in touched and s["last_aggregate"] in touched

    job = coordinator.wait(job_id, timeout=120)
    assert job["status"] == "completed", job.get("error")
    assert job["applied_count"] == job["processed_count"] == 6
    assert read_order_summary(conn) == fold_order_summary(events_where(conn))
    # every event said by a watermark (no marker), and the job's starts are gone
    assert count(conn, "SELECT count(*) FROM processed_event") == 0
    assert count(conn, "SELECT count(*) FROM replay_start") == 0
    at_head = (
        "SELECT count(*) FROM handler_progress w WHERE watermark ="
        " (SELECT max(sequence_num) FROM event e WHERE e.aggregate_id = w.aggregate_id)"
    )
    heads = count(conn, at_head)
    assert heads == count(conn, "SELECT count(DISTINCT aggregate_id) FROM event")


def test_a_catch_up_after_a_time_range_replay_skips_exactly_what_it_processed(
    coordinator: Coordinator, conn: Connection
) -> None:
    ranged = run(coordinator, replay_type="time_range", from_time="2026-02-01T00:00:00Z")
    assert 0 < ranged["applied_count"] < TOTAL_SEEDED
    marked = count(conn, "SELECT count(*) FROM processed_event")
    assert marked > 0
    job = run(coordinator, slices=4)
    # Beyond a gap, the ranged events are markers: read again, skipped, never applied twice;
    # those that continued a prefix are below a watermark, and not read at all.
    assert job["applied_count"] == TOTAL_SEEDED - ranged["applied_count"]
    assert job["skipped_count"] == marked

    # (the status of an order is its last status event applied, here out of order: left out)
    def counts(summary: dict[str, Any]) -> dict[str, Any]:
        return {order: (n, total, version) for order, (n, total, _, version) in summary.items()}

    assert counts(read_order_summary(conn)) == counts(fold_order_summary(events_where(conn)))
    assert count(conn, "SELECT count(*) FROM processed_event") == 0  # absorbed by watermarks


def batch(*extents: tuple[str, list[int]], covered: bool = False) -> sql.Composable:
    """A batch's SELECT holding, of each aggregate, the given sequence numbers (none: empty)."""
    if not extents:
        return sql.SQL(
            "SELECT 'x' AS aggregate_id, 1::bigint AS sequence_num,"
            " gen_random_uuid() AS event_id, false AS _covered WHERE false"
        )
    rows = [
        sql.SQL("({}, {}::bigint, {}, gen_random_uuid())").format(aggregate_id, seq, covered)
        for aggregate_id, seqs in extents
        for seq in seqs
    ]
    return sql.SQL(
        "SELECT * FROM (VALUES {}) AS b (aggregate_id, sequence_num, _covered, event_id)"
    ).format(sql.SQL(", ").join(rows))


@pytest.mark.parametrize(
    ("extents", "covered", "folds"),
    [
        ([("a", [6, 7, 8, 9]), ("new", [1, 2, 3])], False, True),  # each continues its prefix
        ([("a", [7, 8, 9])], False, False),  # a gap after the watermark
        ([("a", [6, 7, 9])], False, False),  # a gap inside the batch
        ([("a", [6, 7])], True, False),  # a rebuild's events
        ([("marked", [4, 5])], False, False),  # a marker lies beyond the watermark
        ([("a", [6, 7]), ("new", [2, 3])], False, False),  # a new aggregate must start at 1
    ],
)
def test_a_batch_is_folded_only_when_every_event_continues_its_watermark(
    conn: Connection, extents: list[tuple[str, list[int]]], covered: bool, folds: bool
) -> None:
    conn.execute("DELETE FROM handler_progress WHERE handler_name = 'guard'")
    conn.execute(
        "INSERT INTO handler_progress VALUES ('guard', 'a', 5, 0), ('guard', 'marked', 3, 7)"
    )
    conn.execute("CREATE TEMP TABLE IF NOT EXISTS folded (aggregate_id text, sequence_num int)")
    conn.execute("TRUNCATE folded")
    fold_sql = "INSERT INTO folded SELECT aggregate_id, sequence_num FROM batch"
    size = sum(len(seqs) for _, seqs in extents)

    def fold(query: sql.Composable) -> tuple[int, Any]:
        return idempotency.fold_in_order(
            conn, "guard", query, {}, covered=covered, fold_sql=fold_sql
        )

    with conn.transaction():
        if folds:
            n, last = fold(batch(*extents, covered=covered))
            assert n == size == count(conn, "SELECT count(*) FROM folded")
            assert (last["aggregate_id"], last["sequence_num"]) == ("new", 3)
            rows = conn.execute(
                "SELECT aggregate_id, watermark FROM handler_progress WHERE handler_name = 'guard'"
            ).fetchall()
            assert {r["aggregate_id"]: r["watermark"] for r in rows} == {
                "a": 9, "new": 3, "marked": 3
            }  # fmt: skip
        else:
            with pytest.raises(idempotency.NotInOrder):
                fold(batch(*extents, covered=covered))
            # the fold read the batch through the verdict: it applied nothing
            assert count(conn, "SELECT count(*) FROM folded") == 0
    assert fold(batch()) == (0, None)


@pytest.mark.parametrize("limit", [7, 150, 1000])
def test_a_slice_after_starts_reads_every_event_once_whatever_the_batch_size(
    conn: Connection, limit: int
) -> None:
    """Batches smaller than an aggregate (a throttled job's), and resumed after an aggregate's
    last event: every event of the scope in order, none twice, none missed."""
    rows = conn.execute("SELECT event_id FROM event ORDER BY aggregate_id, sequence_num")
    expected = [r["event_id"] for r in rows]
    bounds = conn.execute(
        "SELECT min(aggregate_id) AS first, max(aggregate_id) AS last FROM event"
    ).fetchone()
    source = PostgresSource()
    with conn.transaction():
        frozen = source.freeze(conn)
        frozen = source.narrow(conn, Scope(), frozen, SliceBy.AGGREGATE, "nobody", uuid4())
        reader = EventTableReader(
            Scope(), SliceBounds(bounds["first"], bounds["last"]), frozen, limit
        )
        read: list[Any] = []
        checkpoint = None
        while events := reader.read(conn, checkpoint, limit).events:
            assert len(events) <= limit
            read += [e["event_id"] for e in events]
            checkpoint = reader.checkpoint_after(events[-1])
        assert read == expected
        raise psycopg.Rollback  # the starts' job does not exist


def caught_up(conn: Connection, handler: str = HANDLER) -> str | None:
    row = conn.execute(
        "SELECT caught_up::text AS s FROM handler_state WHERE handler_name = %s", (handler,)
    ).fetchone()
    return None if row is None else row["s"]


def frozen(conn: Connection, job: dict[str, Any]) -> Frozen:
    row = conn.execute(
        "SELECT frozen_scope FROM replay_job WHERE job_id = %s", (job["job_id"],)
    ).fetchone()
    assert row is not None
    return unfreeze(row["frozen_scope"])


def test_a_catch_up_after_one_that_saw_everything_reads_only_what_was_committed_since(
    coordinator: Coordinator, conn: Connection, ctx: context.Context, settings: Settings,
    late: None,
) -> None:  # fmt: skip
    first = run(coordinator, slices=4)
    # Every event visible in its snapshot is processed: the handler is caught up to it.
    first_scope = str(frozen(conn, first))
    assert caught_up(conn) == unfreeze(first_scope).snapshot
    a, b, c = (seed.aggregate_id(7, i) for i in (5, 6, 7))
    append_items(conn, a, 3, LATE)
    append_items(conn, b, 2, LATE)
    # Live processing applies two of a's new events before the catch-up is planned: a starts
    # after its watermark, not before its first new event.
    live.process_live(ctx, HANDLER, items_of(conn, a, LATE)[:2])
    # Two writers of c that number its events themselves, committed out of order: the event
    # numbered after the other one is visible to the next catch-up, the other one is not.
    head = store.stream_version(conn, c)
    with db.connect(settings) as slow, slow.transaction():
        insert = (
            "INSERT INTO event (aggregate_id, aggregate_type, event_type, payload, sequence_num)"
            " VALUES (%s, 'Order', 'ItemAdded', %s, %s)"
        )
        payload = db.Jsonb({"sku": LATE, "qty": 1, "price": "2.50"})
        slow.execute(insert, (c, payload, head + 1))  # committed after the catch-up
        conn.execute(insert, (c, payload, head + 2))
        second = run(coordinator, slices=4)
    planned = frozen(conn, second)
    assert planned.since == unfreeze(first_scope).snapshot
    # a's third event, b's two, c's second; c's second lies beyond a gap (a marker)
    assert second["total_events"] == second["applied_count"] == 4
    assert caught_up(conn) == planned.snapshot

    third = run(coordinator, slices=4)
    # Only c's late first event is new since. The one after it is processed, by a marker: it is
    # read again (and skipped) so that the watermark absorbs it.
    assert frozen(conn, third).since == planned.snapshot
    assert (third["total_events"], third["applied_count"], third["skipped_count"]) == (2, 1, 1)
    assert read_order_summary(conn) == fold_order_summary(events_where(conn))
    assert count(conn, "SELECT count(*) FROM processed_event") == 0  # absorbed by watermarks


def test_a_reset_or_a_skipped_event_leaves_the_handler_caught_up_to_nothing_newer(
    coordinator: Coordinator, conn: Connection, late: None
) -> None:
    run(coordinator, slices=2)
    assert caught_up(conn) is not None
    # A reset, even of one aggregate, forgets what was processed: caught up to nothing.
    aggregate = seed.aggregate_id(7, 9)
    run(coordinator, replay_type="aggregate", aggregate_id=aggregate, reset=True)
    assert caught_up(conn) is None
    after_reset = run(coordinator, slices=2)  # planned from every aggregate's watermark
    assert frozen(conn, after_reset).since is None
    assert after_reset["total_events"] == 0
    assert caught_up(conn) == frozen(conn, after_reset).snapshot

    # A catch-up that skipped an event did not process everything it saw: the handler stays
    # caught up to the older snapshot, and the next catch-up reads the skipped event again.
    before = caught_up(conn)
    append_items(conn, aggregate, 2, LATE)
    bad = items_of(conn, aggregate, LATE)[0]
    conn.execute("INSERT INTO poison_rule (event_id) VALUES (%s)", (bad,))
    job = coordinator.wait(coordinator.submit("poisonable_summary", on_error="skip"))
    assert job["status"] == "completed" and job["poison_count"] == 1
    assert caught_up(conn, "poisonable_summary") is None
    run(coordinator, slices=2)
    assert caught_up(conn) != before
    conn.execute("DELETE FROM poison_rule")
    retried = coordinator.wait(coordinator.submit("poisonable_summary"))
    assert retried["status"] == "completed" and retried["applied_count"] == 1
    assert caught_up(conn, "poisonable_summary") is not None
