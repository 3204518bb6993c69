"""The event store: migrations, optimistic concurrency, the bulk loader."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from examples.orders import seed
from shared import db, schema, store
from shared.db import Connection
from shared.errors import ConcurrencyConflict, InvalidRequest
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
            "0008_sources",
            "0009_parked_event_fields",
            "0010_handler_progress",
            "0011_catch_up_starts",
            "0012_caught_up",
            "0013_shadow",
            "0014_archive",
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
    with pytest.raises(ConcurrencyConflict):
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


def _deep(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(depth):
        value = {"a": value}
    return value


@pytest.mark.parametrize(
    ("aggregate_id", "event_type", "payload", "reason"),
    [
        ("append-bad", "NoteAdded", {"note": "a\x00b"}, "NUL"),
        ("append-bad", "NoteAdded", {"a\x00": 1}, "NUL"),
        ("append-bad", "NoteAdded", {"note": "\\\\\x00"}, "NUL"),  # NUL after a backslash
        ("append-bad", "NoteAdded", {"note": "\ud800"}, "surrogate"),
        ("append-bad", "NoteAdded", _deep(5_000), "nested too deep"),
        ("append-bad", "ItemAdded", {"price": float("nan")}, "not JSON compliant"),
        ("append-bad", "ItemAdded", {"price": float("inf")}, "not JSON compliant"),
        ("append-bad", "NoteAdded", {"tags": {"a", "b"}}, "not JSON serializable"),
        ("append\x00bad", "NoteAdded", {}, "aggregate_id contains a NUL"),
        ("append-\udcff", "NoteAdded", {}, "aggregate_id contains a lone surrogate"),
        ("a" * 101, "NoteAdded", {}, "longer than 100"),
        ("", "NoteAdded", {}, "non-empty"),
        ("append-bad", "Note\x00Added", {}, "event_type of event 2 contains a NUL"),
        ("append-bad", "E" * 101, {}, "event_type of event 2 is longer"),
    ],
)
def test_append_refuses_what_the_event_table_cannot_hold_and_writes_nothing(
    conn: Connection, aggregate_id: str, event_type: str, payload: Any, reason: str
) -> None:
    before = conn.execute("SELECT count(*) AS n FROM event").fetchone()["n"]
    events = [store.NewEvent("OrderPlaced"), store.NewEvent(event_type, payload)]
    with pytest.raises(InvalidRequest, match=reason) as info:
        store.append(conn, aggregate_id, "Order", events, expected_version=0)
    assert "\n" not in str(info.value) and len(str(info.value)) < 200
    assert conn.execute("SELECT count(*) AS n FROM event").fetchone()["n"] == before


@pytest.mark.parametrize("expected", [-1, 2**63, "0", True, 0.0])
def test_append_refuses_an_expected_version_that_is_no_bigint(
    conn: Connection, expected: Any
) -> None:
    with pytest.raises(InvalidRequest, match="expected_version"):
        store.append(conn, "append-bad", "Order", [store.NewEvent("X")], expected_version=expected)


def test_append_keeps_text_that_only_looks_like_nul_and_any_real_unicode(conn: Connection) -> None:
    agg = "append-unicode-é"
    payload = {
        "escaped": "\\u0000 and \\\\u0000",
        "emoji": "😀",
        "line": "\u2028",
        "deep": _deep(200),
    }
    try:
        store.append(conn, agg, "Order", [store.NewEvent("NoteAdded", payload)], expected_version=0)
        row = conn.execute("SELECT payload FROM event WHERE aggregate_id = %s", (agg,)).fetchone()
        assert row["payload"] == payload
    finally:
        conn.execute("DELETE FROM event WHERE aggregate_id = %s", (agg,))


def test_existing_markers_become_watermarks_where_they_form_a_prefix(settings: Settings) -> None:
    """Migration 0010 on a store that has markers: a prefix 1..k of an aggregate's events
    becomes its watermark (those markers go), what lies beyond a gap stays marked, and
    ``replay_processed`` answers as the markers did."""
    other = settings.with_database(f"{settings.database_name}_markers")
    db.drop_database(settings, other.database_name)
    db.create_database_if_missing(other)
    try:
        with db.connect(other) as conn:
            for m in schema.migrations():
                if m.version < 10:
                    conn.execute(m.sql.encode())
            ids = {}
            for agg, n in (("a", 5), ("b", 4), ("c", 2)):
                new = [store.NewEvent("OrderPlaced")] * n
                ids[agg] = store.append(conn, agg, "Order", new, expected_version=0)
            marked = [*ids["a"][:3], ids["a"][4], *ids["b"][1:3], *ids["c"]]  # a: 1-3, 5
            conn.execute(
                "INSERT INTO processed_event (handler_name, event_id)"
                " SELECT 'h', unnest(%s::uuid[])",
                (marked,),
            )
            migration = next(m for m in schema.migrations() if m.version == 10)
            conn.execute(migration.sql.encode())
            progress = conn.execute(
                "SELECT aggregate_id, watermark, marked_max FROM handler_progress"
                " ORDER BY aggregate_id"
            ).fetchall()
            assert [tuple(r.values()) for r in progress] == [("a", 3, 5), ("b", 0, 3), ("c", 2, 2)]
            left = conn.execute("SELECT event_id FROM processed_event").fetchall()
            assert {r["event_id"] for r in left} == {ids["a"][4], *ids["b"][1:3]}
            for agg, events in ids.items():
                for event_id in events:
                    answer = conn.execute(
                        "SELECT replay_processed('h', %s) AS p", (event_id,)
                    ).fetchone()
                    assert answer["p"] == (event_id in marked), (agg, event_id)
    finally:
        db.drop_database(settings, other.database_name)
