"""Replay jobs as their users see them: ``get_job``'s JSON-able view of a job and its slices,
and the list of recent jobs (``replay jobs``)."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from shared.db import Connection
from shared.errors import NotFound

_VIEW = """
SELECT j.job_id::text AS job_id, j.consumer_name AS consumer, j.replay_type, j.filter_params,
       j.status, j.source, j.slice_by, j.reset, j.total_events,
       CASE WHEN j.status IN ('completed', 'failed', 'cancelled') THEN j.processed_count
            ELSE coalesce(s.processed, 0) END AS processed_count,
       CASE WHEN j.status IN ('completed', 'failed', 'cancelled') THEN j.applied_count
            ELSE coalesce(s.applied, 0) END AS applied_count,
       CASE WHEN j.status IN ('completed', 'failed', 'cancelled') THEN j.skipped_count
            ELSE coalesce(s.skipped, 0) END AS skipped_count,
       j.on_error, j.poison_count, j.max_events_per_second::float8 AS max_events_per_second,
       j.last_event_id::text AS last_event_id, j.error, j.planning_ms,
       j.created_at, j.started_at, j.completed_at, coalesce(s.n, 0) AS slice_count
  FROM replay_job j
  LEFT JOIN LATERAL (
        SELECT count(*) AS n, sum(processed_count)::bigint AS processed,
               sum(applied_count)::bigint AS applied, sum(skipped_count)::bigint AS skipped
          FROM replay_slice WHERE job_id = j.job_id
  ) s ON TRUE
"""


def job_view(conn: Connection, job_id: UUID | str) -> dict[str, Any]:
    """The job as ``get_job`` returns it: a JSON-able dict, with its slices."""
    row = conn.execute(_VIEW + " WHERE j.job_id = %s", (job_id,)).fetchone()
    if row is None:
        raise NotFound(f"no replay job {job_id}")
    slices = conn.execute(
        "SELECT s.slice_no, s.status, s.first_aggregate, s.last_aggregate, s.from_time,"
        " s.to_time, s.total_events, s.processed_count, s.applied_count, s.skipped_count,"
        " s.poison_count, s.checkpoint, s.attempts, s.task_id, s.owner::text AS owner,"
        " s.last_error, s.error_event_id::text AS error_event_id,"
        " greatest(s.heartbeat_at, h.beat_at) AS heartbeat_at, s.dispatched_at, s.started_at,"
        " s.completed_at FROM replay_slice s"
        " LEFT JOIN slice_heartbeat h ON (h.job_id, h.slice_no) = (s.job_id, s.slice_no)"
        " WHERE s.job_id = %s ORDER BY s.slice_no",
        (job_id,),
    ).fetchall()
    view = dict(row)
    view["slices"] = [dict(s) for s in slices]
    view["elapsed_seconds"] = _elapsed(view["started_at"], view["completed_at"])
    return view


def list_jobs(conn: Connection, limit: int = 20) -> list[dict[str, Any]]:
    rows = conn.execute(_VIEW + " ORDER BY j.created_at DESC LIMIT %s", (limit,)).fetchall()
    return [dict(r) for r in rows]


def _elapsed(started: datetime | None, completed: datetime | None) -> float | None:
    if started is None:
        return None
    end = completed or datetime.now(started.tzinfo)
    return max(0.0, (end - started).total_seconds())
