"""Pure parts of the throttle: the minimum, batches at the minimum, and waits in steps."""

from __future__ import annotations

import math
import time

import pytest

from shared.throttle import (
    MIN_EVENTS_PER_SECOND,
    WAIT_STEP_SECONDS,
    batch_limit,
    effective_rate,
    sleep_until,
)


def test_the_minimum_is_one_event_per_second_and_a_step_at_most_a_second() -> None:
    assert MIN_EVENTS_PER_SECOND == 1.0
    assert 0 < WAIT_STEP_SECONDS <= 1.0


@pytest.mark.parametrize(
    ("stored", "applied"),
    [
        (None, None),
        (math.inf, None),
        (0.001, MIN_EVENTS_PER_SECOND),
        (0.0, MIN_EVENTS_PER_SECOND),
        (-5.0, MIN_EVENTS_PER_SECOND),
        (math.nan, MIN_EVENTS_PER_SECOND),
        (0.999, MIN_EVENTS_PER_SECOND),
        (1.0, 1.0),
        (2.5, 2.5),
        (600.0, 600.0),
    ],
)
def test_a_stored_limit_below_the_minimum_is_applied_as_the_minimum(
    stored: float | None, applied: float | None
) -> None:
    assert effective_rate(stored) == applied


@pytest.mark.parametrize("rate", [MIN_EVENTS_PER_SECOND, 1.5, 9.99, 10.0, 600.0, 1e8])
def test_one_batch_is_due_within_a_second_at_any_allowed_rate(rate: float) -> None:
    # A reservation waits for the batches queued before it, each at most a second's worth:
    # that bounds a throttled wait (no hours-long sleep at the minimum).
    limit = batch_limit(rate, 1000)
    assert 1 <= limit <= 1000
    assert limit / rate <= 1.0


def test_at_the_minimum_a_batch_is_one_event() -> None:
    assert batch_limit(MIN_EVENTS_PER_SECOND, 1000) == 1
    assert batch_limit(effective_rate(0.001) or 0.0, 1000) == 1


def test_sleep_until_reaches_the_due_time_in_steps() -> None:
    asked: list[float] = []

    def keep_waiting() -> bool:
        asked.append(time.monotonic())
        return True

    start = time.monotonic()
    done = sleep_until(start + 0.35, keep_waiting, step=0.1)
    elapsed = time.monotonic() - start
    assert done is True
    assert 0.35 <= elapsed < 0.6
    # asked between steps, not after the last one
    assert 2 <= len(asked) <= 3
    assert all(b - a < 0.2 for a, b in zip([start, *asked], asked, strict=False))


def test_sleep_until_stops_within_a_step_when_told() -> None:
    calls = 0

    def keep_waiting() -> bool:
        nonlocal calls
        calls += 1
        return calls < 2

    start = time.monotonic()
    assert sleep_until(start + 3600, keep_waiting, step=0.05) is False
    assert time.monotonic() - start < 0.5
    assert calls == 2


def test_what_keep_waiting_raises_ends_the_wait() -> None:
    class Cancelled(Exception):
        pass

    def cancelled() -> bool:
        raise Cancelled

    start = time.monotonic()
    with pytest.raises(Cancelled):
        sleep_until(start + 3600, cancelled, step=0.05)
    assert time.monotonic() - start < 0.5


def test_sleep_until_a_past_instant_returns_at_once_without_asking() -> None:
    def never() -> bool:
        raise AssertionError("asked")

    assert sleep_until(time.monotonic() - 1, never) is True
