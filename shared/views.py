"""Replay jobs as their users see them: ``get_job``'s JSON-able view of a job and its slices,
and the list of recent jobs (``replay jobs``)."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from shared import queries
from shared.db import Connection
from shared.errors import NotFound
from shared.jobs import params

QUERIES = queries.load("jobs")


def job_view(conn: Connection, job_id: UUID) -> dict[str, Any]:
    """The job as ``get_job`` returns it: a JSON-able dict, with its slices."""
    row = conn.execute(QUERIES["job_views"], params(job_id=job_id, limit=1)).fetchone()
    if row is None:
        raise NotFound(f"no replay job {job_id}")
    slices = conn.execute(QUERIES["slice_views"], {"job_id": job_id}).fetchall()
    view = dict(row)
    view["slices"] = [dict(s) for s in slices]
    view["elapsed_seconds"] = _elapsed(view["started_at"], view["completed_at"])
    return view


def list_jobs(conn: Connection, limit: int = 20) -> list[dict[str, Any]]:
    """The latest ``limit`` jobs, newest first, as ``job_view`` shows them (without slices)."""
    rows = conn.execute(QUERIES["job_views"], params(job_id=None, limit=limit)).fetchall()
    return [dict(r) for r in rows]


def _elapsed(started: datetime | None, completed: datetime | None) -> float | None:
    if started is None:
        return None
    end = completed or datetime.now(started.tzinfo)
    return max(0.0, (end - started).total_seconds())
