"""Pure parts of planning and reading."""

from __future__ import annotations

from datetime import UTC, datetime
from uuid import UUID

from shared.scope import Scope, SliceBounds, SliceReader
from shared.slicing import _time_slices, default_slice_count, time_fractions

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
    slices = _time_slices(T, {0: 5, 1: 7, 3: 2})  # bucket 2 (March) is empty
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
    conds, params = Scope(event_types=("X",), from_time=T[0]).where("1:2:")
    assert len(conds) == 3
    assert params == {"snapshot": "1:2:", "from_time": T[0], "event_types": ["X"]}


def test_checkpoints_resume_right_after_the_last_event() -> None:
    by_aggregate = SliceReader(Scope(), SliceBounds("a", "m"), "1:1:", 100)
    event = {"aggregate_id": "c", "sequence_num": 7, "occurred_at": T[0],
             "event_id": UUID(int=5)}  # fmt: skip
    assert by_aggregate.checkpoint_after(event) == {"aggregate_id": "c", "sequence_num": 7}
    _, params = by_aggregate.query(by_aggregate.checkpoint_after(event))
    assert (params["after_aggregate"], params["after_sequence"], params["last_aggregate"]) == (
        "c",
        7,
        "m",
    )

    by_time = SliceReader(Scope(), SliceBounds(from_time=T[0], to_time=T[1]), "1:1:", 100)
    cp = by_time.checkpoint_after(event)
    _, params = by_time.query(cp)
    assert (params["after_time"], params["after_event"], params["slice_to"]) == (
        T[0],
        UUID(int=5),
        T[1],
    )
