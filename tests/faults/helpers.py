"""Checks shared by the fault tests."""

from __future__ import annotations

from scheduler.coordinator import Coordinator
from shared import db
from shared.settings import Settings
from tests.folds import fold_order_summary, read_order_summary
from tests.support import count, events_where


def assert_exact(settings: Settings, handler: str, total: int) -> None:
    """The read model equals an independent fold of every event, and every event has exactly
    one processed marker for ``handler``."""
    with db.connect(settings) as conn:
        actual, expected = read_order_summary(conn), fold_order_summary(events_where(conn))
        wrong = sorted(
            k for k in expected.keys() | actual.keys() if actual.get(k) != expected.get(k)
        )
        slices = conn.execute(
            "SELECT slice_no, status, processed_count, applied_count, skipped_count, attempts,"
            " first_aggregate, last_aggregate FROM replay_slice ORDER BY slice_no"
        ).fetchall()
        assert not wrong, (
            f"{len(wrong)} orders differ, e.g. {wrong[0]}: {actual.get(wrong[0])} instead of"
            f" {expected.get(wrong[0])}; slices: {slices}"
        )
        markers = count(conn, "SELECT count(*) FROM processed WHERE handler_name = %s", (handler,))
        assert markers == total


def running(coordinator: Coordinator, job_id: str, at_least: int = 1) -> bool:
    job = coordinator.get(job_id)
    return job["processed_count"] >= at_least and job["status"] == "running"
