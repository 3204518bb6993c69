"""A job's speed limit, across both worker processes, changed while it runs."""

from __future__ import annotations

import time

import pytest

from scheduler.coordinator import Coordinator
from tests.integration.conftest import TOTAL_SEEDED

pytestmark = pytest.mark.integration

FIRST, SECOND = 600.0, 1200.0  # events/s


def rate_between(samples: list[tuple[float, int]], start: float, end: float) -> float:
    inside = [(t, n) for t, n in samples if start <= t <= end]
    (t0, n0), (t1, n1) = inside[0], inside[-1]
    return (n1 - n0) / (t1 - t0)


def test_a_throttled_job_keeps_its_rate_and_follows_a_change(coordinator: Coordinator) -> None:
    job_id = coordinator.submit("order_summary", slices=8, max_events_per_second=FIRST)
    began = time.monotonic()
    samples: list[tuple[float, int]] = []
    changed_at = None
    while True:
        job = coordinator.get(job_id)
        now = time.monotonic() - began
        samples.append((now, job["processed_count"]))
        if job["status"] != "pending" and job["status"] != "running":
            break
        if changed_at is None and now >= 6:
            coordinator.throttle(job_id, SECOND)
            changed_at = now
        assert now < 120, "the throttled job did not finish"
        time.sleep(0.1)
    assert job["status"] == "completed" and job["processed_count"] == TOTAL_SEEDED
    assert changed_at is not None

    first = rate_between(samples, 1.0, changed_at)
    second = rate_between(samples, changed_at + 3.0, samples[-1][0] - 0.5)
    print(f"\nlimit {FIRST:g} -> {first:,.0f} events/s; after the change to {SECOND:g} -> "
          f"{second:,.0f} events/s")  # fmt: skip
    assert abs(first - FIRST) <= 0.10 * FIRST
    assert abs(second - SECOND) <= 0.10 * SECOND
