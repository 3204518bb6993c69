"""Years of history (issue 17's acceptance): 1,000,000 events over 24 months, the first 18
archived; every replay type, over the whole range and over ranges on either side of the cut-off
and straddling it, with 2 worker processes and 8 slices, gives a read model equal to an
independent fold (the SQL fold of examples/orders/verify.py over a copy of the events taken
before the archive); ``load_aggregate`` inside the archive equals the fold of the copy."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest

from examples.orders import seed
from examples.orders.reducer import OrderReducer
from examples.orders.verify import _EXPECTED
from local.workers import WorkerProcess, wait_until_ready
from scheduler.coordinator import Coordinator
from shared import aggregates, db, schema
from shared.archive import mover
from shared.settings import Settings
from tests.support import WORKER_ENV, count

pytestmark = pytest.mark.faults

START = datetime(2024, 1, 1, tzinfo=UTC)
CUTOFF = datetime(2025, 7, 1, tzinfo=UTC)  # the first 18 of 24 months
AGGREGATES, PER = 10_000, 100
# The expected read model of a scope: the fold of the copy's events that the filter picks.
EXPECTED = _EXPECTED.replace("FROM event WHERE", "FROM history_copy WHERE {filter} AND")
DIFFERENCES = """
WITH expected AS ({expected}),
     actual AS (SELECT order_id, item_count, total, status, version FROM order_summary)
SELECT (SELECT count(*) FROM (SELECT * FROM expected EXCEPT SELECT * FROM actual) d)
     + (SELECT count(*) FROM (SELECT * FROM actual EXCEPT SELECT * FROM expected) d) AS n
"""
FORGET = (
    "TRUNCATE order_summary, processed_event, handler_progress, handler_state, replay_job,"
    " replay_slice, replay_start, replay_shadow, parked_event, slice_heartbeat"
)


@pytest.fixture(scope="module")
def history(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """Its own database: seeded over 24 months, copied, the first 18 months archived."""
    s = replace(settings.with_database(f"{settings.database_name}_history"),
                queue=f"{settings.queue}_history")  # fmt: skip
    db.drop_database(s, s.database_name)
    schema.migrate_all(s)
    archive = tmp_path_factory.mktemp("history")
    with db.connect(s) as conn:
        seed.seed(conn, AGGREGATES, PER, seed=24, start=START, months=24)
        conn.execute("CREATE TABLE history_copy AS SELECT * FROM event")
        conn.execute("CREATE INDEX ON history_copy (aggregate_id, sequence_num)")
        report = mover.archive(conn, f"file://{archive}/archive", CUTOFF)
        assert report.events > 0.7 * AGGREGATES * PER
    try:
        yield s
    finally:
        db.drop_database(s, s.database_name)


@pytest.fixture(scope="module")
def two_workers(history: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    logs = tmp_path_factory.mktemp("history-logs")
    procs = [
        WorkerProcess(history, f"hw{i}", log_path=logs / f"hw{i}.log", extra_env=WORKER_ENV)
        for i in (1, 2)
    ]
    for p in procs:
        p.start()
    try:
        wait_until_ready(history, [p.name for p in procs], workers=procs)
        yield
    finally:
        for p in procs:
            p.kill()


@pytest.mark.parametrize(
    ("request_", "filter_"),
    [
        ({"reset": True}, "TRUE"),
        ({}, "TRUE"),
        ({"replay_type": "time_range", "from_time": "2025-05-01T00:00:00Z",
          "to_time": "2025-09-01T00:00:00Z"},
         "occurred_at >= '2025-05-01T00:00:00Z' AND occurred_at < '2025-09-01T00:00:00Z'"),
        ({"replay_type": "time_range", "to_time": "2024-04-01T00:00:00Z"},
         "occurred_at < '2024-04-01T00:00:00Z'"),
        ({"replay_type": "time_range", "from_time": "2025-08-01T00:00:00Z"},
         "occurred_at >= '2025-08-01T00:00:00Z'"),
        ({"replay_type": "event_type", "event_types": ["ItemAdded", "OrderShipped"]},
         "event_type IN ('ItemAdded', 'OrderShipped')"),
        ({"replay_type": "aggregate", "aggregate_id": seed.aggregate_id(24, 4321)},
         f"aggregate_id = '{seed.aggregate_id(24, 4321)}'"),
    ],
    ids=["rebuild", "catch-up", "straddling", "archive-only", "hot-only", "event-types",
         "one-aggregate"],
)  # fmt: skip
def test_every_replay_type_over_both_tiers(
    history: Settings, two_workers: None, request_: dict[str, Any], filter_: str
) -> None:
    with db.connect(history) as conn:
        conn.execute(FORGET)
        coordinator = Coordinator(history)
        try:
            job = coordinator.wait(
                coordinator.submit("order_summary", slices=8, **request_), timeout=600
            )
        finally:
            coordinator.close()
        assert job["status"] == "completed", job["error"]
        expected_total = count(conn, f"SELECT count(*) FROM history_copy WHERE {filter_}")
        assert job["total_events"] == job["processed_count"] == expected_total
        query = DIFFERENCES.format(expected=EXPECTED.format(filter=filter_))
        assert count(conn, query) == 0


def test_load_aggregate_inside_the_archive(history: Settings) -> None:
    reducer = OrderReducer()
    with db.connect(history) as conn:
        conn.execute("TRUNCATE snapshot")
        for n in (7, 1234, 9876):
            agg = seed.aggregate_id(24, n)
            rows = conn.execute(
                "SELECT event_id, aggregate_id, aggregate_type, event_type, payload, metadata,"
                " sequence_num, occurred_at FROM history_copy WHERE aggregate_id = %s"
                " ORDER BY sequence_num", (agg,),
            ).fetchall()  # fmt: skip
            archived = [r for r in rows if r["occurred_at"] < CUTOFF]
            assert archived, agg
            at = archived[-1]["sequence_num"]
            state = reducer.initial()
            for row in rows[:at]:
                state = reducer.apply(state, row)
            assert aggregates.load_aggregate(conn, agg, at, use_snapshots=False).state == state
            assert aggregates.load_aggregate(conn, agg, at).state == state
