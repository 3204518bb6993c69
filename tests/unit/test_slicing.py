"""Pure parts of planning and reading."""

from __future__ import annotations

from datetime import UTC, datetime
from uuid import UUID

import pytest

from shared import sources
from shared.errors import InvalidRequest
from shared.scope import EVENT_COLUMNS, Scope, SliceBounds
from shared.slicing import aggregate_slices, default_slice_count, time_fractions, time_slices
from shared.sources import postgres
from shared.sources.postgres import EventTableReader, where

T = [datetime(2026, m, 1, tzinfo=UTC) for m in (2, 3, 4)]


def test_default_slice_count_grows_with_the_data_within_bounds() -> None:
    assert default_slice_count(0) == 1
    assert default_slice_count(10) == 1
    assert default_slice_count(200_000) == 8
    assert default_slice_count(10**9) == 64


def test_time_fractions_cut_into_equal_parts() -> None:
    assert time_fractions(1) == []
    assert time_fractions(4) == [0.25, 0.5, 0.75]


def test_time_slices_cover_everything_and_drop_empty_buckets() -> None:
    slices = time_slices(T, {0: 5, 1: 7, 3: 2})  # bucket 2 (March) is empty
    assert [s.slice_no for s in slices] == [0, 1, 2]
    assert [(s.bounds.from_time, s.bounds.to_time) for s in slices] == [
        (None, T[0]), (T[0], T[1]), (T[2], None),
    ]  # fmt: skip
    assert [s.total_events for s in slices] == [5, 7, 2]


def test_scope_round_trips_through_json() -> None:
    scope = Scope(aggregate_id="a", from_time=T[0], to_time=T[1], event_types=("X", "Y"))
    assert Scope.from_json(scope.to_json()) == scope
    assert Scope.from_json(Scope().to_json()) == Scope()


def test_scope_conditions_carry_values_as_parameters() -> None:
    conds, params = where(Scope(event_types=("X",), from_time=T[0]), "1:2:")
    assert len(conds) == 3
    assert params == {"snapshot": "1:2:", "from_time": T[0], "event_types": ["X"]}


def test_checkpoints_resume_right_after_the_last_event() -> None:
    by_aggregate = EventTableReader(Scope(), SliceBounds("a", "m"), "1:1:", 100)
    event = {"aggregate_id": "c", "sequence_num": 7, "occurred_at": T[0],
             "event_id": UUID(int=5)}  # fmt: skip
    assert by_aggregate.checkpoint_after(event) == {"aggregate_id": "c", "sequence_num": 7}
    _, params = by_aggregate.query(by_aggregate.checkpoint_after(event))
    assert (params["after_aggregate"], params["after_sequence"], params["last_aggregate"]) == (
        "c",
        7,
        "m",
    )

    by_time = EventTableReader(Scope(), SliceBounds(from_time=T[0], to_time=T[1]), "1:1:", 100)
    cp = by_time.checkpoint_after(event)
    _, params = by_time.query(cp)
    assert (params["after_time"], params["after_event"], params["slice_to"]) == (
        T[0],
        UUID(int=5),
        T[1],
    )


def test_every_read_of_the_event_table_is_the_one_event_select() -> None:
    select = f"SELECT {EVENT_COLUMNS.as_string(None)} FROM event AS event WHERE "
    pg = sources.get(sources.DEFAULT)
    reader = pg.reader(Scope(), SliceBounds("a", "m"), "1:1:", 100)
    covering = pg.reader(Scope(), SliceBounds("a", "m"), "1:1:", 100, "1:2:")
    assert isinstance(reader, EventTableReader) and covering.covered == "1:2:"
    reads = [postgres.EVENTS_BY_ID, postgres.STREAM, postgres.NEW_EVENTS, reader.query(None)[0]]
    assert all(q.as_string(None).startswith(select) for q in reads)
    assert isinstance(covering, EventTableReader)
    assert "AS _covered FROM event AS event WHERE " in covering.query(None)[0].as_string(None)


def test_aggregate_slices_keep_aggregates_whole_and_counts_exact() -> None:
    counts = [("a", 5), ("b", 5), ("c", 30), ("d", 5), ("e", 5)]
    slices = aggregate_slices(counts, 4)
    # a at 0, b at 5 (bucket 0), c at 10 (0), d at 40 (3), e at 45 (3): c makes its slice big
    assert [(s.bounds.first_aggregate, s.bounds.last_aggregate) for s in slices] == [
        ("a", "c"), ("d", "e"),
    ]  # fmt: skip
    assert [s.slice_no for s in slices] == [0, 1]
    assert sum(s.total_events for s in slices) == 50
    assert aggregate_slices([], 4) == []
    assert len(aggregate_slices([(str(i), 1) for i in range(10)], 5)) == 5


def test_the_event_table_is_the_default_source_kafka_is_built_in_others_are_registered() -> None:
    pg = sources.get(sources.DEFAULT)
    assert pg.name == "postgres" and pg.coverage
    assert pg.describe_checkpoint(None) == "start"
    assert pg.describe_checkpoint({"aggregate_id": "o-1", "sequence_num": 3}) == "after o-1 #3"
    assert sources.get("kafka").name == "kafka"  # imported when first named
    with pytest.raises(InvalidRequest, match=r"'nope' \(registered: .*kafka, postgres"):
        sources.get("nope")
    with pytest.raises(InvalidRequest, match="unknown source"):
        sources.get(["postgres"])  # type: ignore[arg-type]
