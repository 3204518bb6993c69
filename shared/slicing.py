"""Planning, whatever the source: how many slices, and the slices a source's planner returns.

A source (``shared.sources``) counts and cuts a frozen scope; what is common to all of them lives
here: the default number of slices, how time quantiles become slices, and a slice as the row
``replay_slice`` stores.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from shared.scope import SliceBounds

# slices=None: about this many events per slice, within [1, DEFAULT_MAX_SLICES].
EVENTS_PER_SLICE = 25_000
DEFAULT_MAX_SLICES = 64
MAX_SLICES = 1024


class SliceBy(enum.StrEnum):
    """How a job's scope is cut: ranges of aggregate ids (every aggregate wholly in one slice,
    in order), or ranges of time (only for handlers that need no per-aggregate order)."""

    AGGREGATE = "aggregate"
    TIME = "time"


@dataclass(frozen=True)
class PlannedSlice:
    slice_no: int
    bounds: SliceBounds
    total_events: int


def default_slice_count(total_events: int) -> int:
    """The number of slices when the user does not choose: one per EVENTS_PER_SLICE events."""
    return max(1, min(DEFAULT_MAX_SLICES, -(-total_events // EVENTS_PER_SLICE)))


def time_fractions(slices: int) -> list[float]:
    """The quantiles whose values cut a time range into ``slices`` parts of equal counts."""
    return [i / slices for i in range(1, slices)]


def time_slices(bounds: list[datetime], counts: dict[int, int]) -> list[PlannedSlice]:
    """Slices from width_bucket's buckets: bucket 0 is before bounds[0], bucket i is
    [bounds[i-1], bounds[i]), the last one after the last bound. Empty buckets are dropped."""
    planned: list[PlannedSlice] = []
    for bucket in range(len(bounds) + 1):
        n = counts.get(bucket, 0)
        if n == 0:
            continue
        planned.append(
            PlannedSlice(
                slice_no=len(planned),
                bounds=SliceBounds(
                    from_time=bounds[bucket - 1] if bucket > 0 else None,
                    to_time=bounds[bucket] if bucket < len(bounds) else None,
                ),
                total_events=n,
            )
        )
    return planned


def aggregate_slices(counts: list[tuple[str, int]], slices: int) -> list[PlannedSlice]:
    """Cut aggregates (``(aggregate_id, events)`` in id order) into about ``slices`` ranges of
    about equal event counts, as the event table's planner does in SQL: an aggregate goes to the
    bucket of its first event and is never split, so a large one makes its slice larger and
    there can be fewer slices than asked. For sources that count per aggregate in Python."""
    total = sum(n for _, n in counts)
    planned: list[PlannedSlice] = []
    before, current = 0, -1
    for aggregate_id, n in counts:
        bucket = before * slices // total
        if bucket == current:
            last = planned[-1]
            bounds = SliceBounds(last.bounds.first_aggregate, aggregate_id)
            planned[-1] = PlannedSlice(last.slice_no, bounds, last.total_events + n)
        else:
            planned.append(PlannedSlice(len(planned), SliceBounds(aggregate_id, aggregate_id), n))
            current = bucket
        before += n
    return planned


def slice_row(planned: PlannedSlice) -> dict[str, Any]:
    b = planned.bounds
    return {
        "slice_no": planned.slice_no,
        "first_aggregate": b.first_aggregate,
        "last_aggregate": b.last_aggregate,
        "from_time": b.from_time,
        "to_time": b.to_time,
        "total_events": planned.total_events,
    }
