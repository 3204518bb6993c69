"""What Flower shows of a slice: its progress line and its label's bounds (pure formatting)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from shared.scope import SliceBounds
from worker.progress import format_duration, progress_line


def test_the_progress_line_counts_rates_and_estimates() -> None:
    assert progress_line(1500, 12000, 3400.4) == (
        "1,500/12,000 events (12%) · 3,400 events/s · ETA 4 s"
    )
    # done: no ETA; unknown rate: none either
    assert progress_line(12000, 12000, 3000) == "12,000/12,000 events (100%) · 3,000 events/s"
    assert progress_line(10, 100, 0) == "10/100 events (10%) · 0 events/s"
    assert progress_line(0, 0, 0) == "0/0 events · 0 events/s"


def test_durations_read_as_a_person_would_say_them() -> None:
    assert format_duration(0.2) == "1 s"
    assert format_duration(59) == "59 s"
    assert format_duration(245) == "4 min 05 s"
    assert format_duration(7620) == "2 h 07 min"


def test_slice_bounds_describe_themselves() -> None:
    assert SliceBounds("ord-1", "ord-9").describe() == "aggregates ord-1 … ord-9"
    paris = timezone(timedelta(hours=1))
    start = datetime(2026, 1, 1, 1, 0, tzinfo=paris)  # midnight UTC
    assert SliceBounds(from_time=start, to_time=datetime(2026, 1, 2, tzinfo=UTC)).describe() == (
        "2026-01-01 00:00:00 … 2026-01-02 00:00:00 UTC"
    )
    assert SliceBounds(from_time=start).describe() == "from 2026-01-01 00:00:00 UTC"
    assert SliceBounds(to_time=start).describe() == "before 2026-01-01 00:00:00 UTC"
    assert SliceBounds().describe() == "every event"
