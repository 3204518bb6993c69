"""Cutting a Kafka topic's partitions into offset ranges (``slice_by="time"``, for handlers that
need no order): pure arithmetic on the frozen offsets."""

from __future__ import annotations

import itertools

from shared.sources.kafka import cut, partition_range, slice_bounds


def test_partitions_are_cut_in_proportion_to_their_messages_without_gaps_or_overlaps() -> None:
    ranges = [(0, 100, 700), (1, 0, 300), (2, 50, 51)]
    pieces = cut(ranges, 10)
    for partition, start, end in ranges:
        mine = [(a, b) for p, a, b in pieces if p == partition]
        assert mine[0][0] == start and mine[-1][1] == end
        assert all(b == c for (_, b), (c, _) in itertools.pairwise(mine))
        assert all(b > a for a, b in mine)
    # 6.7, 3.3 and 0.01 of 10 slices
    assert [len([x for x in pieces if x[0] == p]) for p in (0, 1, 2)] == [7, 3, 1]
    assert cut([(0, 0, 3)], 10) == [(0, 0, 1), (0, 1, 2), (0, 2, 3)]  # one message each at most
    assert cut([(0, 5, 9)], 1) == [(0, 5, 9)]


def test_a_range_is_stored_as_its_first_and_last_offset() -> None:
    bounds = slice_bounds(3, 120, 250)
    assert (bounds.first_aggregate, bounds.last_aggregate) == ("p3@120", "p3@249")
    assert partition_range(bounds) == (3, 120, 250)
