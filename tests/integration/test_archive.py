"""The archive tier (issue 17) with real workers: events older than a cut-off moved into Parquet
segments, and every replay reads them with the event table's as one.

The suite's seeded store is used: its events span January to June 2026; the months before April
are archived for each test and brought back after it."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

from scheduler.coordinator import Coordinator
from shared import context, parked
from shared.aggregates import load_aggregate
from shared.archive import mover
from shared.db import Connection
from shared.settings import Settings
from tests.folds import fold_order_summary, read_order_summary
from tests.integration.conftest import TOTAL_SEEDED, events_where
from tests.integration.test_cli_output import ok, replay
from tests.support import count

pytestmark = pytest.mark.integration

CUTOFF = datetime(2026, 4, 1, tzinfo=UTC)
HANDLER = "order_summary"


@pytest.fixture
def every_event(conn: Connection) -> list[dict[str, Any]]:
    return events_where(conn)


@pytest.fixture
def archived(
    coordinator: Coordinator, conn: Connection, every_event: list[dict[str, Any]], tmp_path: Path
) -> Iterator[mover.MoveReport]:
    report = mover.archive(conn, f"file://{tmp_path}/archive", CUTOFF, segment_events=2_000)
    try:
        yield report
    finally:
        mover.unarchive(conn)
        assert count(conn, "SELECT count(*) FROM event") == TOTAL_SEEDED


def test_archive_moves_old_events_into_segments(
    conn: Connection, archived: mover.MoveReport, every_event: list[dict[str, Any]]
) -> None:
    old = [e for e in every_event if e["occurred_at"] < CUTOFF]
    hot = count(conn, "SELECT count(*) FROM event")
    assert archived.events > len(old) // 2
    assert hot + archived.events == TOTAL_SEEDED
    assert count(conn, "SELECT sum(events) FROM archive_segment") == archived.events
    # the newest event of every aggregate stays in the event table
    assert count(conn, "SELECT count(DISTINCT aggregate_id) FROM event") == len(
        {e["aggregate_id"] for e in every_event}
    )
    assert count(conn, "SELECT count(*) FROM event WHERE occurred_at < %s", (CUTOFF,)) == (
        len(old) - archived.events
    )


@pytest.mark.parametrize("reset", [True, False], ids=["rebuild", "catch-up"])
def test_a_full_replay_reads_both_tiers(
    coordinator: Coordinator,
    conn: Connection,
    archived: mover.MoveReport,
    every_event: list[dict[str, Any]],
    reset: bool,
) -> None:
    job = coordinator.wait(coordinator.submit(HANDLER, reset=reset, slices=4), timeout=120)
    assert job["status"] == "completed", job["error"]
    assert job["total_events"] == TOTAL_SEEDED == job["processed_count"]
    assert read_order_summary(conn) == fold_order_summary(every_event)
    # "has the handler processed it?" of archived events, asked with their positions
    asked = [e for e in every_event if e["occurred_at"] < CUTOFF][:50]
    for handler, expected in ((HANDLER, True), ("order_notifications", False)):
        answers = {
            conn.execute(  # txid 1: older than any snapshot (the seed's are too)
                "SELECT replay_processed_at(%s, %s, %s, %s, '1'::xid8) AS p",
                (handler, e["event_id"], e["aggregate_id"], e["sequence_num"]),
            ).fetchone()["p"]  # type: ignore[index]
            for e in asked
        }
        assert answers == {expected}


def test_time_ranges_straddling_the_cutoff_and_event_types(
    coordinator: Coordinator,
    conn: Connection,
    archived: mover.MoveReport,
    every_event: list[dict[str, Any]],
) -> None:
    start, end = datetime(2026, 3, 10, tzinfo=UTC), datetime(2026, 4, 20, tzinfo=UTC)
    job = coordinator.wait(
        coordinator.submit(HANDLER, replay_type="time_range", from_time=start, to_time=end,
                           slices=3),
        timeout=120,
    )  # fmt: skip
    picked = [e for e in every_event if start <= e["occurred_at"] < end]
    assert job["status"] == "completed", job["error"]
    assert job["total_events"] == len(picked)
    assert read_order_summary(conn) == fold_order_summary(picked)
    conn.execute("TRUNCATE order_summary, processed_event, handler_progress, handler_state")
    job = coordinator.wait(
        coordinator.submit(HANDLER, replay_type="event_type", event_types=["ItemAdded"],
                           reset=False, slices=2),
        timeout=120,
    )  # fmt: skip
    added = [e for e in every_event if e["event_type"] == "ItemAdded"]
    assert job["status"] == "completed", job["error"]
    assert job["total_events"] == len(added)
    assert read_order_summary(conn) == fold_order_summary(added)


def test_one_aggregate_and_an_aggregate_reset(
    coordinator: Coordinator,
    conn: Connection,
    archived: mover.MoveReport,
    every_event: list[dict[str, Any]],
) -> None:
    one = every_event[0]["aggregate_id"]
    mine = [e for e in every_event if e["aggregate_id"] == one]
    assert count(conn, "SELECT count(*) FROM event WHERE aggregate_id = %s", (one,)) < len(mine)
    job = coordinator.wait(coordinator.submit(HANDLER, replay_type="aggregate", aggregate_id=one),
                           timeout=120)  # fmt: skip
    assert job["status"] == "completed", job["error"]
    assert job["total_events"] == len(mine)
    assert read_order_summary(conn) == fold_order_summary(mine)
    conn.execute("UPDATE order_summary SET total = -1")
    job = coordinator.wait(
        coordinator.submit(HANDLER, replay_type="aggregate", aggregate_id=one, reset=True),
        timeout=120,
    )
    assert job["status"] == "completed", job["error"]
    assert read_order_summary(conn) == fold_order_summary(mine)


def test_the_archive_verbs_from_the_command_line(
    settings: Settings, conn: Connection, coordinator: Coordinator, tmp_path: Path,
    every_event: list[dict[str, Any]],
) -> None:  # fmt: skip
    url = f"file://{tmp_path}/cli-archive"
    try:
        out = ok(replay(settings, "archive", "--before", "2026-03-01T00:00:00Z", "--to", url,
                        "--segment-events", "3000"))  # fmt: skip
        moved = count(conn, "SELECT coalesce(sum(events), 0) FROM archive_segment")
        assert moved > 0 and f"archived {moved:,} events" in out
        listed = json.loads(ok(replay(settings, "archives", "--json")))
        assert sum(s["events"] for s in listed) == moved
        assert all(s["url"] == url and s["last_time"] < "2026-03-01" for s in listed)
        out = ok(replay(settings, "unarchive", "--from", "2026-02-01T00:00:00Z"))
        back = moved - count(conn, "SELECT coalesce(sum(events), 0) FROM archive_segment")
        assert back > 0 and f"restored {back:,} events" in out
    finally:
        ok(replay(settings, "unarchive"))
    assert count(conn, "SELECT count(*) FROM event") == TOTAL_SEEDED
    assert events_where(conn) == every_event or sorted(
        events_where(conn), key=lambda e: e["event_id"]
    ) == sorted(every_event, key=lambda e: e["event_id"])


@pytest.mark.parametrize(
    ("before", "to", "says"),
    [
        ("2099-01-01T00:00:00Z", None, "is in the future"),
        ("2026-03-01", None, "has no time zone"),
        ("2026-03-01T00:00:00Z", "file:///etc/hostname/archive", "is not writable"),
        ("2026-03-01T00:00:00Z", "ftp://example.invalid/x", "ftp:// is not supported"),
    ],
    ids=["future", "naive", "unwritable", "unknown-scheme"],
)
def test_bad_archive_requests_change_nothing(
    settings: Settings, conn: Connection, before: str, to: str | None, says: str
) -> None:
    args = ["archive", "--before", before] + (["--to", to] if to else [])
    refused = replay(settings, *args)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert says in refused.stderr and len(refused.stderr.strip().splitlines()) == 1
    assert count(conn, "SELECT count(*) FROM event") == TOTAL_SEEDED
    assert count(conn, "SELECT count(*) FROM archive_segment") == 0


def oldest_segment(conn: Connection, tmp_path: Path) -> tuple[dict[str, Any], Path]:
    """The catalogue row of the archive's oldest segment, and its file."""
    row = conn.execute(
        "SELECT segment_id, path FROM archive_segment ORDER BY first_time LIMIT 1"
    ).fetchone()
    assert row is not None
    return row, tmp_path / "archive" / row["path"]


@pytest.mark.parametrize("damage", ["missing", "corrupted"])
def test_a_damaged_segment_is_named_and_nothing_is_applied_from_it(
    settings: Settings, coordinator: Coordinator, conn: Connection, archived: mover.MoveReport,
    tmp_path: Path, damage: str,
) -> None:  # fmt: skip
    """Found at planning, the submit is refused; found by a running slice (it stages again
    after a move between the tiers), the slice fails; either way naming the segment."""
    row, file = oldest_segment(conn, tmp_path)
    saved = file.read_bytes()

    def spoil() -> None:
        if damage == "missing":
            file.unlink()
        else:
            file.write_bytes(saved[:100] + bytes([saved[100] ^ 0xFF]) + saved[101:])

    try:
        spoil()
        refused = replay(settings, "submit", HANDLER)
        assert refused.returncode == 2, refused.stdout + refused.stderr
        assert str(row["segment_id"]) in refused.stderr and damage in refused.stderr
        assert count(conn, "SELECT count(*) FROM replay_job") == 0
        file.write_bytes(saved)
        job_id = coordinator.submit(HANDLER, slices=1, max_events_per_second=2000)
        deadline = time.monotonic() + 60
        while coordinator.get(job_id)["processed_count"] == 0 and time.monotonic() < deadline:
            time.sleep(0.1)
        spoil()
        conn.execute("UPDATE archive_state SET generation = generation + 1")  # as a move does
        job = coordinator.wait(job_id, timeout=120)
        assert job["status"] == "failed"
        assert str(row["segment_id"]) in job["error"] and damage in job["error"]
    finally:
        file.write_bytes(saved)


def test_load_aggregate_reads_the_archive_only_when_it_needs_it(
    conn: Connection, every_event: list[dict[str, Any]], tmp_path: Path, clean: None
) -> None:
    conn.execute("TRUNCATE snapshot")
    ids = sorted({e["aggregate_id"] for e in every_event if e["occurred_at"] < CUTOFF})[:5]
    before = {
        (agg, at): load_aggregate(conn, agg, at, use_snapshots=False).state
        for agg in ids for at in (1, 7, None)
    }  # fmt: skip
    mover.archive(conn, f"file://{tmp_path}/archive", CUTOFF)
    try:
        for (agg, at), state in before.items():
            assert count(conn, "SELECT count(*) FROM event WHERE aggregate_id = %s", (agg,)) < (
                len([e for e in every_event if e["aggregate_id"] == agg])
            )
            loaded = load_aggregate(conn, agg, at, use_snapshots=False)
            assert loaded.state == state
            # with the snapshots the first loads wrote: the archive is no longer needed
            assert load_aggregate(conn, agg, at).state == state
    finally:
        mover.unarchive(conn)
        conn.execute("TRUNCATE snapshot")


def test_retry_parked_finds_an_event_archived_since_it_was_parked(
    coordinator: Coordinator, conn: Connection, ctx: context.Context,
    every_event: list[dict[str, Any]], tmp_path: Path,
) -> None:  # fmt: skip
    newest: dict[str, int] = {}
    for e in every_event:
        newest[e["aggregate_id"]] = max(newest.get(e["aggregate_id"], 0), e["sequence_num"])
    bad = min(
        (e for e in every_event
         if e["occurred_at"] < CUTOFF and e["sequence_num"] < newest[e["aggregate_id"]]
         and e["event_type"] == "ItemAdded"),  # applied late, it still sums the same
        key=lambda e: (e["aggregate_id"], e["sequence_num"]),
    )  # fmt: skip
    conn.execute("INSERT INTO poison_rule (event_id) VALUES (%s)", (bad["event_id"],))
    try:
        job = coordinator.wait(
            coordinator.submit("poisonable_summary", on_error="park", slices=2), timeout=120
        )
        assert job["status"] == "completed" and job["poison_count"] == 1
        mover.archive(conn, f"file://{tmp_path}/archive", CUTOFF)
        assert (
            count(conn, "SELECT count(*) FROM event WHERE event_id = %s", (bad["event_id"],)) == 0
        )
        conn.execute("DELETE FROM poison_rule")  # the fix
        result = parked.retry_parked(ctx, UUID(job["job_id"]))
        assert (result.resolved, result.still_failing) == (1, 0)
        assert read_order_summary(conn) == fold_order_summary(every_event)
    finally:
        conn.execute("DELETE FROM poison_rule")
        mover.unarchive(conn)


def test_an_aggregate_reset_forgets_the_markers_of_its_archived_events(
    coordinator: Coordinator, conn: Connection, every_event: list[dict[str, Any]], tmp_path: Path
) -> None:
    one = every_event[0]["aggregate_id"]
    mine = sorted((e for e in every_event if e["aggregate_id"] == one),
                  key=lambda e: e["sequence_num"])  # fmt: skip
    # a time range beyond the aggregate's first events: processed beyond a gap, so markers
    job = coordinator.wait(coordinator.submit(
        HANDLER, replay_type="aggregate", aggregate_id=one, from_time=mine[3]["occurred_at"],
        to_time=CUTOFF), timeout=120)  # fmt: skip
    assert job["status"] == "completed" and job["applied_count"] > 0
    marked = "SELECT count(*) FROM processed_event WHERE handler_name = %s"
    assert count(conn, marked, (HANDLER,)) == job["applied_count"]
    mover.archive(conn, f"file://{tmp_path}/archive", CUTOFF)
    try:
        job = coordinator.wait(
            coordinator.submit(HANDLER, replay_type="aggregate", aggregate_id=one, reset=True),
            timeout=120,
        )
        assert job["status"] == "completed", job["error"]
        assert count(conn, marked, (HANDLER,)) == 0
        assert read_order_summary(conn) == fold_order_summary(mine)
    finally:
        mover.unarchive(conn)


def test_the_binary_copy_of_staged_events_reads_back_as_written(conn: Connection) -> None:
    import pyarrow as pa

    from shared.archive import pgcopy, segments

    when = [datetime(1999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
            datetime(2026, 3, 1, 12, 0, 0, 1, tzinfo=UTC)]  # fmt: skip
    ids = ["0123abcd-4567-89ef-0a1b-2c3d4e5f6a7b", "FEDCBA98-7654-3210-FEDC-BA9876543210"]
    table = pa.table({
        "event_id": ids,
        "aggregate_id": ["order-1", "commande-é\t\"quoted\"\n"],
        "aggregate_type": ["Order", "Order"],
        "event_type": ["ItemAdded", "OrderPlaced"],
        "payload": ['{"note": "a\\nb \\"c\\" é", "n": 1.5}', "[]"],
        "metadata": pa.array([None, '{"k": null}'], pa.string()),
        "sequence_num": pa.array([1, 2**53], pa.int64()),
        "occurred_at": pa.array(when, pa.timestamp("us", tz="UTC")),
        "created_at": pa.array(when[::-1], pa.timestamp("us", tz="UTC")),
        "txid": pa.array([3, 2**40], pa.int64()),
    })  # fmt: skip
    conn.execute("CREATE TEMPORARY TABLE copied (LIKE event)")
    conn.execute("ALTER TABLE copied ALTER metadata DROP NOT NULL")
    with (
        conn.cursor() as cur,
        cur.copy(f"COPY copied ({', '.join(segments.COLUMNS)}) FROM STDIN (FORMAT binary)") as out,
    ):
        for chunk in pgcopy.encode(table, segments.COLUMNS):
            out.write(chunk)
    rows = conn.execute("SELECT *, txid::text AS txid FROM copied ORDER BY sequence_num").fetchall()
    assert [str(r["event_id"]) for r in rows] == [i.lower() for i in ids]
    assert [r["aggregate_id"] for r in rows] == table["aggregate_id"].to_pylist()
    assert [r["payload"] for r in rows] == [{"note": 'a\nb "c" é', "n": 1.5}, []]
    assert [r["metadata"] for r in rows] == [None, {"k": None}]
    assert [r["sequence_num"] for r in rows] == [1, 2**53]
    assert [r["occurred_at"] for r in rows] == when
    assert [r["created_at"] for r in rows] == when[::-1]
    assert [r["txid"] for r in rows] == ["3", str(2**40)]
    conn.execute("DROP TABLE copied")


@pytest.mark.parametrize("damage", ["missing", "cut short"])
def test_a_kept_segment_is_not_used_once_its_file_is_gone_or_cut_short(
    conn: Connection, archived: mover.MoveReport, tmp_path: Path, damage: str
) -> None:
    from shared.archive import staging
    from shared.archive.wanted import Wanted
    from shared.errors import SourceLost

    staged = staging.stage(conn, Wanted())  # this process now keeps every segment it read
    assert staged.events == archived.events
    row, file = oldest_segment(conn, tmp_path)
    saved = file.read_bytes()
    try:
        if damage == "missing":
            file.unlink()
        else:
            file.write_bytes(saved[: len(saved) // 2])
        with pytest.raises(SourceLost, match=str(row["segment_id"])) as refused:
            staging.stage(conn, Wanted())
        assert ("missing" if damage == "missing" else "corrupted") in str(refused.value)
    finally:
        file.write_bytes(saved)
        staging.release(conn, staged)
    again = staging.stage(conn, Wanted())
    assert again.events == archived.events
    staging.release(conn, again)
