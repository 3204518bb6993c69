"""Validation of replay requests, without services."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from uuid import UUID, uuid4

import pytest

from shared import errors
from shared.jobs import ReplayType
from shared.requests import (
    MAX_LIST_LIMIT,
    build_request,
    parse_job_id,
    parse_limit,
    parse_rate,
    parse_timeout,
    parse_timestamp,
)
from shared.store import shorten


def test_a_full_replay_needs_only_a_consumer() -> None:
    r = build_request("order_summary")
    assert (r.replay_type, r.slice_by, r.slices, r.reset) == ("full", "aggregate", None, False)
    assert r.scope.aggregate_id is None and r.scope.event_types == ()


def test_filters_combine_into_one_scope() -> None:
    r = build_request(
        "h", replay_type="time_range", from_time="2026-02-01T00:00:00Z",
        to_time=datetime(2026, 3, 1, tzinfo=UTC), event_types=["A", "B", "A"],
    )  # fmt: skip
    assert r.scope.from_time == datetime(2026, 2, 1, tzinfo=UTC)
    assert r.scope.to_time == datetime(2026, 3, 1, tzinfo=UTC)
    assert r.scope.event_types == ("A", "B")


def test_a_single_event_type_string_is_one_type_not_letters() -> None:
    assert build_request(
        "h", replay_type="event_type", event_types="OrderShipped"
    ).scope.event_types == ("OrderShipped",)


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"replay_type": "all"}, errors.InvalidRequest),
        ({"slice_by": "size"}, errors.InvalidRequest),
        ({"replay_type": "aggregate"}, errors.InvalidRequest),
        ({"replay_type": "aggregate", "aggregate_id": "  "}, errors.InvalidRequest),
        ({"aggregate_id": "x"}, errors.InvalidRequest),
        (
            {"from_time": "2026-01-02T00:00:00Z", "to_time": "2026-01-01T00:00:00Z"},
            errors.InvalidRequest,
        ),
        ({"replay_type": "time_range"}, errors.InvalidRequest),
        ({"from_time": "2026-01-01T00:00:00"}, errors.InvalidRequest),
        ({"to_time": datetime(2026, 1, 1)}, errors.InvalidRequest),
        ({"from_time": "yesterday"}, errors.InvalidRequest),
        ({"from_time": 1700000000}, errors.InvalidRequest),
        ({"replay_type": "event_type"}, errors.InvalidRequest),
        ({"replay_type": "event_type", "event_types": [""]}, errors.InvalidRequest),
        ({"slices": 0}, errors.InvalidRequest),
        ({"slices": -3}, errors.InvalidRequest),
        ({"slices": 1025}, errors.InvalidRequest),
        ({"slices": True}, errors.InvalidRequest),
        ({"slices": 2.5}, errors.InvalidRequest),
        ({"reset": "yes"}, errors.InvalidRequest),
        (
            {"reset": True, "replay_type": "event_type", "event_types": ["A"]},
            errors.InvalidRequest,
        ),
        ({"reset": True, "from_time": "2026-01-01T00:00:00Z"}, errors.InvalidRequest),
    ],
)
def test_bad_arguments_raise_their_specific_error(kwargs: dict[str, Any], error: type) -> None:
    with pytest.raises(error):
        build_request("order_summary", **kwargs)


def test_errors_are_replay_errors_with_one_line_messages() -> None:
    with pytest.raises(errors.ReplayError) as info:
        build_request("order_summary", replay_type="nope")
    assert "\n" not in str(info.value) and "full" in str(info.value)


def test_timestamps_keep_their_offset() -> None:
    t = parse_timestamp("2026-05-01T12:00:00+02:00", "from_time")
    assert t is not None and t.utcoffset() == timedelta(hours=2)
    assert parse_timestamp("2026-05-01T10:00:00Z", "x") == t
    aware = datetime(2026, 1, 1, tzinfo=timezone(timedelta(hours=-5)))
    assert parse_timestamp(aware, "x") is aware
    assert parse_timestamp(None, "x") is None


@pytest.mark.parametrize(
    ("consumer", "kwargs", "error"),
    [
        ("order_summary", {"replay_type": "aggregate", "aggregate_id": "a\x00b"}, "NUL"),
        ("order_summary", {"replay_type": "aggregate", "aggregate_id": "a\ud800"}, "surrogate"),
        ("order_summary", {"replay_type": "aggregate", "aggregate_id": "x" * 101}, "longer"),
        ("order_summary", {"event_types": ["Order\x00Placed"]}, "NUL"),
        ("order_summary", {"event_types": ["\udcff"]}, "surrogate"),
        ("order_summary", {"event_types": ["E" * 101]}, "longer"),
        ("order\x00summary", {}, "NUL"),
        ("order\ud800", {}, "surrogate"),
    ],
)
def test_text_postgresql_cannot_hold_is_refused_before_the_database(
    consumer: str, kwargs: dict[str, Any], error: str
) -> None:
    with pytest.raises(errors.InvalidRequest, match=error):
        build_request(consumer, **kwargs)


def test_a_huge_value_is_quoted_short_in_the_message() -> None:
    for kwargs in ({"replay_type": "x" * 100_000}, {"on_error": "x" * 100_000},
                   {"replay_type": "aggregate", "aggregate_id": "x" * 100_000}):  # fmt: skip
        with pytest.raises(errors.InvalidRequest) as info:
            build_request("order_summary", **kwargs)
        assert len(str(info.value)) < 200 and "100,002 characters" in str(info.value)
    assert shorten("abc") == "'abc'"
    assert shorten(10**5000).startswith("<an int too large")


@pytest.mark.parametrize("value", [0, -1, 10**20, 10_001, True, 2.0, "5", None])
def test_a_listing_limit_is_an_integer_from_1_to_the_maximum(value: Any) -> None:
    with pytest.raises(errors.InvalidRequest):
        parse_limit(value)


def test_a_listing_limit_in_range_is_kept() -> None:
    assert parse_limit(1) == 1 and parse_limit(MAX_LIST_LIMIT) == MAX_LIST_LIMIT


@pytest.mark.parametrize("value", [-1, -0.5, math.nan, math.inf, "5", True])
def test_a_negative_or_senseless_timeout_is_a_usage_error(value: Any) -> None:
    with pytest.raises(errors.InvalidRequest, match="--timeout"):
        parse_timeout(value, "--timeout")


def test_a_timeout_of_zero_or_more_is_kept() -> None:
    assert parse_timeout(None) is None
    assert parse_timeout(0) == 0.0 and parse_timeout(2.5) == 2.5 and parse_timeout(10**20) == 1e20


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, None), (0, None), (0.0, None), (-0.0, None), (1, 1.0), (1.5, 1.5), (10**8, 1e8)],
)
def test_a_rate_of_zero_is_no_limit_and_one_is_the_minimum(value: Any, expected: Any) -> None:
    assert parse_rate(value) == expected


@pytest.mark.parametrize("value", [0.001, 0.999, -1, math.nan, math.inf, 10**8 + 1, "5", True])
def test_a_rate_below_the_minimum_or_not_a_number_is_refused(value: Any) -> None:
    with pytest.raises(errors.InvalidRequest, match="max_events_per_second"):
        parse_rate(value)


def test_a_request_carries_its_replay_type_as_the_enum() -> None:
    assert build_request("h", replay_type="event_type", event_types=["A"]).replay_type is (
        ReplayType.EVENT_TYPE
    )


def test_a_job_id_is_decoded_once_from_its_text_or_taken_as_a_uuid() -> None:
    key = uuid4()
    assert parse_job_id(key) is key
    assert parse_job_id(str(key)) == key and isinstance(parse_job_id(str(key)), UUID)


@pytest.mark.parametrize("value", ["", "not-a-uuid", "1234", None, 42, "x" * 10_000])
def test_what_is_not_a_uuid_is_no_job(value: Any) -> None:
    with pytest.raises(errors.NotFound, match="is not a job id"):
        parse_job_id(value)
