"""The event store: migrations, optimistic concurrency, the bulk loader."""

from __future__ import annotations

import threading

import pytest

from shared import db, schema, seed, store
from shared.db import Connection
from shared.errors import ConcurrencyConflict, DuplicateAggregates
from shared.settings import Settings

pytestmark = pytest.mark.integration


def test_migrate_is_idempotent(settings: Settings) -> None:
    assert schema.migrate(settings) == []  # the session fixture applied them already


def test_migrate_creates_a_missing_database(settings: Settings) -> None:
    other = settings.with_database(f"{settings.database_name}_fresh")
    db.drop_database(settings, other.database_name)
    try:
        assert schema.migrate(other) == [
            "0001_event_store",
            "0002_replay_jobs",
            "0003_resilience",
            "0004_rebuild_coverage",
            "0005_live",
            "0006_throttle",
            "0007_snapshots",
        ]
        assert schema.migrate(other) == []
    finally:
        db.drop_database(settings, other.database_name)


def test_append_numbers_events_after_the_expected_version(conn: Connection) -> None:
    agg = "append-1"
    try:
        store.append(conn, agg, "Order", [store.NewEvent("OrderPlaced")], expected_version=0)
        store.append(
            conn, agg, "Order",
            [store.NewEvent("ItemAdded", {"sku": "A", "qty": 1, "price": 2.5})] * 2,
            expected_version=1,
        )  # fmt: skip
        rows = conn.execute(
            "SELECT sequence_num, event_type FROM event WHERE aggregate_id = %s ORDER BY 1", (agg,)
        ).fetchall()
        assert [(r["sequence_num"], r["event_type"]) for r in rows] == [
            (1, "OrderPlaced"), (2, "ItemAdded"), (3, "ItemAdded"),
        ]  # fmt: skip
        with pytest.raises(ConcurrencyConflict):
            store.append(conn, agg, "Order", [store.NewEvent("X")], expected_version=1)
        with pytest.raises(ConcurrencyConflict):  # a gap is refused too
            store.append(conn, agg, "Order", [store.NewEvent("X")], expected_version=5)
        assert store.stream_version(conn, agg) == 3
    finally:
        conn.execute("DELETE FROM event WHERE aggregate_id = %s", (agg,))


def test_concurrent_appends_at_one_version_exactly_one_wins(
    settings: Settings, conn: Connection
) -> None:
    agg = "append-race"
    barrier = threading.Barrier(8)
    outcomes: list[str] = []

    def writer(n: int) -> None:
        with db.connect(settings) as c:
            barrier.wait()
            try:
                store.append(
                    c, agg, "Order", [store.NewEvent("NoteAdded", {"n": n})], expected_version=0
                )
                outcomes.append("ok")
            except ConcurrencyConflict:
                outcomes.append("conflict")

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert sorted(outcomes) == ["conflict"] * 7 + ["ok"]
        assert store.stream_version(conn, agg) == 1
    finally:
        conn.execute("DELETE FROM event WHERE aggregate_id = %s", (agg,))


def test_seeding_existing_aggregates_again_is_refused_whole(conn: Connection) -> None:
    before = conn.execute("SELECT count(*) AS n FROM event").fetchone()["n"]
    with pytest.raises(DuplicateAggregates):
        seed.seed(conn, 5, 3, seed=7)  # seed 7 was loaded by the session fixture
    assert conn.execute("SELECT count(*) AS n FROM event").fetchone()["n"] == before


def test_seed_writes_what_it_says(conn: Connection) -> None:
    try:
        result = seed.seed(conn, 30, 12, seed=99)
        assert result.events == 360
        row = conn.execute(
            "SELECT count(DISTINCT aggregate_id) AS a, min(sequence_num) AS lo,"
            " max(sequence_num) AS hi,"
            " count(*) FILTER (WHERE event_type = 'OrderPlaced') AS placed,"
            " max(occurred_at) - min(occurred_at) AS span"
            " FROM event WHERE aggregate_id LIKE 'order-99-%%'"
        ).fetchone()
        assert (row["a"], row["lo"], row["hi"], row["placed"]) == (30, 1, 12, 30)
        assert row["span"].days > 60  # spread over months
    finally:
        conn.execute("DELETE FROM event WHERE aggregate_id LIKE 'order-99-%%'")
