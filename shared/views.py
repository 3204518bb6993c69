"""Replay jobs as their users see them: ``get_job``'s JSON-able view of a job and its slices,
and the list of recent jobs (``replay jobs``).

A job has one rate, the same wherever it is shown (``replay submit --wait``'s bar, ``replay
status``, ``replay jobs --json``, the demo): ``events_per_second`` is the events it processed
divided by its run time, ``elapsed_seconds``, from the moment its first slice started to the
moment it ended (or now, while it runs). Its ``eta_seconds``, while it runs, is the events left
at that rate; None when there is no rate yet (not started, nothing processed), nothing is left,
or the job ended.
Every time comes from the database's clock (``started_at``, ``completed_at``, and for a running
job the time the view was read), so the clock of the machine that asks does not matter.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from shared import queries
from shared.db import Connection
from shared.errors import NotFound
from shared.jobs import Status, params

QUERIES = queries.load("jobs")


def job_view(conn: Connection, job_id: UUID) -> dict[str, Any]:
    """The job as ``get_job`` returns it: a JSON-able dict, with its slices."""
    row = conn.execute(QUERIES["job_views"], params(job_id=job_id, limit=1)).fetchone()
    if row is None:
        raise NotFound(f"no replay job {job_id}")
    slices = conn.execute(QUERIES["slice_views"], {"job_id": job_id}).fetchall()
    view = with_timing(dict(row), row["read_at"])
    view["slices"] = [dict(s) for s in slices]
    return view


def list_jobs(conn: Connection, limit: int = 20) -> list[dict[str, Any]]:
    """The latest ``limit`` jobs, newest first, as ``job_view`` shows them (without slices)."""
    rows = conn.execute(QUERIES["job_views"], params(job_id=None, limit=limit)).fetchall()
    return [with_timing(dict(r), r["read_at"]) for r in rows]


def with_timing(view: dict[str, Any], now: datetime | None = None) -> dict[str, Any]:
    """``view`` with its ``elapsed_seconds``, ``events_per_second`` and ``eta_seconds`` (see
    the module's docstring), computed from its status, counts and times."""
    view.pop("read_at", None)
    elapsed = _elapsed(view["started_at"], view["completed_at"], now)
    rate = events_per_second(view["processed_count"], elapsed)
    view["elapsed_seconds"] = elapsed
    view["events_per_second"] = rate
    view["eta_seconds"] = (
        None
        if Status(view["status"]).final
        else eta_seconds(view["total_events"], view["processed_count"], rate)
    )
    return view


def events_per_second(processed: int, elapsed: float | None) -> float | None:
    """The job's rate: ``processed`` events over ``elapsed`` seconds of run time; None before it
    has run at all."""
    if elapsed is None or elapsed <= 0:
        return None
    return processed / elapsed


def eta_seconds(total: int, processed: int, rate: float | None) -> float | None:
    """Seconds until ``total`` events at ``rate``; None when nothing was processed yet (no
    rate to go by) or nothing is left (the job is being finished)."""
    if rate is None or rate <= 0 or processed <= 0 or processed >= total:
        return None
    return max(0, total - processed) / rate


def _elapsed(
    started: datetime | None, completed: datetime | None, now: datetime | None = None
) -> float | None:
    if started is None:
        return None
    end = completed or now or datetime.now(started.tzinfo)
    return max(0.0, (end - started).total_seconds())
