"""The archive tier (issue 17) with real workers: events older than a cut-off moved into Parquet
segments, and every replay reads them with the event table's as one.

The suite's seeded store is used: its events span January to June 2026; the months before April
are archived for each test and brought back after it."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from scheduler.coordinator import Coordinator
from shared.archive import mover
from shared.db import Connection
from tests.folds import fold_order_summary, read_order_summary
from tests.integration.conftest import TOTAL_SEEDED, events_where
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
