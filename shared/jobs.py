"""Replay jobs and their slices as rows: records, statuses, and the statements that move them.

The slice rows are the truth about a job's progress; the job's own status is derived from them by
``finalize_job`` (called by the chord callback, and safe to call any number of times).
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from psycopg.types.json import Jsonb

from shared.db import Connection
from shared.errors import JobNotFound
from shared.scope import Scope, SliceBounds
from shared.slicing import PlannedSlice, slice_row


class Status(enum.StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def final(self) -> bool:
        return self in (Status.COMPLETED, Status.FAILED, Status.CANCELLED)


FINAL_STATUSES = frozenset(s.value for s in Status if s.final)


@dataclass(frozen=True)
class Job:
    job_id: UUID
    consumer_name: str
    replay_type: str
    scope: Scope
    status: Status
    slice_by: str
    reset: bool
    snapshot: str
    cache_epoch: str
    total_events: int

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Job:
        return cls(
            job_id=row["job_id"],
            consumer_name=row["consumer_name"],
            replay_type=row["replay_type"],
            scope=Scope.from_json(row["filter_params"]),
            status=Status(row["status"]),
            slice_by=row["slice_by"],
            reset=row["reset"],
            snapshot=row["snapshot"],
            cache_epoch=str(row["cache_epoch"]),
            total_events=int(row["total_events"]),
        )


@dataclass(frozen=True)
class Slice:
    job_id: UUID
    slice_no: int
    bounds: SliceBounds
    status: Status
    total_events: int
    processed_count: int
    checkpoint: dict[str, Any] | None
    version: int

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Slice:
        return cls(
            job_id=row["job_id"],
            slice_no=row["slice_no"],
            bounds=SliceBounds(
                first_aggregate=row["first_aggregate"],
                last_aggregate=row["last_aggregate"],
                from_time=row["from_time"],
                to_time=row["to_time"],
            ),
            status=Status(row["status"]),
            total_events=int(row["total_events"]),
            processed_count=int(row["processed_count"]),
            checkpoint=row["checkpoint"],
            version=int(row["version"]),
        )


_JOB_COLUMNS = (
    "job_id, consumer_name, replay_type, filter_params, status, slice_by, reset,"
    " snapshot::text AS snapshot, cache_epoch, total_events"
)


def insert_job(
    conn: Connection,
    *,
    job_id: UUID,
    consumer_name: str,
    replay_type: str,
    scope: Scope,
    slice_by: str,
    reset: bool,
    snapshot: str,
    cache_epoch: str,
) -> None:
    conn.execute(
        "INSERT INTO replay_job (job_id, consumer_name, replay_type, filter_params, slice_by,"
        " reset, snapshot, cache_epoch) VALUES (%s, %s, %s, %s, %s, %s, %s::pg_snapshot, %s)",
        (
            job_id,
            consumer_name,
            replay_type,
            Jsonb(scope.to_json()),
            slice_by,
            reset,
            snapshot,
            cache_epoch,
        ),
    )


def insert_slices(
    conn: Connection,
    job_id: UUID,
    planned: Sequence[PlannedSlice],
    task_ids: Sequence[str],
    planning_ms: int,
) -> None:
    rows = [
        {**slice_row(p), "job_id": job_id, "task_id": t}
        for p, t in zip(planned, task_ids, strict=True)
    ]
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO replay_slice (job_id, slice_no, first_aggregate, last_aggregate,"
            " from_time, to_time, total_events, task_id) VALUES (%(job_id)s, %(slice_no)s,"
            " %(first_aggregate)s, %(last_aggregate)s, %(from_time)s, %(to_time)s,"
            " %(total_events)s, %(task_id)s)",
            rows,
        )
    total = sum(p.total_events for p in planned)
    status = Status.PENDING if planned else Status.COMPLETED
    conn.execute(
        "UPDATE replay_job SET total_events = %s, planning_ms = %s, status = %s,"
        " completed_at = CASE WHEN %s THEN now() END, started_at = CASE WHEN %s THEN now() END"
        " WHERE job_id = %s",
        (total, planning_ms, status, not planned, not planned, job_id),
    )


def load_job(conn: Connection, job_id: UUID | str) -> Job:
    row = conn.execute(
        f"SELECT {_JOB_COLUMNS} FROM replay_job WHERE job_id = %s", (job_id,)
    ).fetchone()
    if row is None:
        raise JobNotFound(f"no replay job {job_id}")
    return Job.from_row(row)


def start_slice(conn: Connection, job_id: UUID | str, slice_no: int, task_id: str | None) -> Slice:
    """Mark a slice (and its job) running; count the attempt. Returns the slice as stored."""
    with conn.transaction():
        row = conn.execute(
            "UPDATE replay_slice SET status = CASE WHEN status = 'completed' THEN status"
            " ELSE 'running' END, attempts = attempts + 1, heartbeat_at = now(),"
            " started_at = coalesce(started_at, now()), task_id = coalesce(%s, task_id),"
            " last_error = NULL"
            " WHERE job_id = %s AND slice_no = %s RETURNING *",
            (task_id, job_id, slice_no),
        ).fetchone()
        if row is None:
            raise JobNotFound(f"no slice {slice_no} in replay job {job_id}")
        conn.execute(
            "UPDATE replay_job SET status = 'running', started_at = coalesce(started_at, now())"
            " WHERE job_id = %s AND status = 'pending'",
            (job_id,),
        )
    return Slice.from_row(row)


def lock_slice_version(conn: Connection, job_id: UUID, slice_no: int, version: int) -> bool:
    """Compare-and-set, first statement of a batch's transaction: bump the slice's version if it
    is still ``version``. False means another copy of this slice moved on: stop, apply nothing.
    The row lock taken here also serializes two copies that race for the same batch."""
    row = conn.execute(
        "UPDATE replay_slice SET version = version + 1, heartbeat_at = now()"
        " WHERE job_id = %s AND slice_no = %s AND version = %s AND status = 'running'"
        " RETURNING version",
        (job_id, slice_no, version),
    ).fetchone()
    return row is not None


def record_batch(
    conn: Connection,
    job_id: UUID,
    slice_no: int,
    *,
    checkpoint: dict[str, Any],
    last_event_id: UUID,
    processed: int,
    applied: int,
) -> None:
    conn.execute(
        "UPDATE replay_slice SET checkpoint = %s, last_event_id = %s,"
        " processed_count = processed_count + %s, applied_count = applied_count + %s,"
        " skipped_count = skipped_count + %s WHERE job_id = %s AND slice_no = %s",
        (
            Jsonb(checkpoint),
            last_event_id,
            processed,
            applied,
            processed - applied,
            job_id,
            slice_no,
        ),
    )


def complete_slice(conn: Connection, job_id: UUID, slice_no: int) -> None:
    conn.execute(
        "UPDATE replay_slice SET status = 'completed', completed_at = now(), heartbeat_at = now()"
        " WHERE job_id = %s AND slice_no = %s",
        (job_id, slice_no),
    )


def fail_slice(conn: Connection, job_id: UUID | str, slice_no: int, error: str) -> None:
    conn.execute(
        "UPDATE replay_slice SET status = 'failed', last_error = %s, heartbeat_at = now()"
        " WHERE job_id = %s AND slice_no = %s AND status <> 'completed'",
        (error, job_id, slice_no),
    )


def finalize_job(conn: Connection, job_id: UUID | str) -> Status:
    """Derive the job's status from its slice rows and store it. Idempotent.

    All slices completed: ``completed``, with the counts summed. Some failed and none left to
    run: ``failed``, with the first slice error. Otherwise the job keeps its status.
    """
    with conn.transaction():
        job = conn.execute(
            "SELECT status FROM replay_job WHERE job_id = %s FOR UPDATE", (job_id,)
        ).fetchone()
        if job is None:
            raise JobNotFound(f"no replay job {job_id}")
        status = Status(job["status"])
        if status.final:
            return status
        s = conn.execute(
            """
            SELECT count(*) AS slices,
                   count(*) FILTER (WHERE status = 'completed') AS completed,
                   count(*) FILTER (WHERE status = 'failed') AS failed,
                   count(*) FILTER (WHERE status IN ('pending', 'running')) AS unfinished,
                   coalesce(sum(processed_count), 0)::bigint AS processed,
                   coalesce(sum(applied_count), 0)::bigint AS applied,
                   coalesce(sum(skipped_count), 0)::bigint AS skipped,
                   (array_agg(last_error ORDER BY slice_no) FILTER (WHERE status = 'failed'))[1]
                       AS error,
                   (array_agg(last_event_id ORDER BY slice_no DESC)
                       FILTER (WHERE last_event_id IS NOT NULL))[1] AS last_event_id
              FROM replay_slice WHERE job_id = %s
            """,
            (job_id,),
        ).fetchone()
        assert s is not None
        if s["completed"] == s["slices"]:
            new = Status.COMPLETED
        elif s["failed"] and not s["unfinished"]:
            new = Status.FAILED
        else:
            return status
        conn.execute(
            "UPDATE replay_job SET status = %s, processed_count = %s, applied_count = %s,"
            " skipped_count = %s, last_event_id = %s, error = %s, completed_at = now()"
            " WHERE job_id = %s",
            (
                new,
                s["processed"],
                s["applied"],
                s["skipped"],
                s["last_event_id"],
                s["error"] if new is Status.FAILED else None,
                job_id,
            ),
        )
        return new


_VIEW = """
SELECT j.job_id::text AS job_id, j.consumer_name AS consumer, j.replay_type, j.filter_params,
       j.status, j.slice_by, j.reset, j.total_events,
       CASE WHEN j.status IN ('completed', 'failed', 'cancelled') THEN j.processed_count
            ELSE coalesce(s.processed, 0) END AS processed_count,
       CASE WHEN j.status IN ('completed', 'failed', 'cancelled') THEN j.applied_count
            ELSE coalesce(s.applied, 0) END AS applied_count,
       CASE WHEN j.status IN ('completed', 'failed', 'cancelled') THEN j.skipped_count
            ELSE coalesce(s.skipped, 0) END AS skipped_count,
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
        raise JobNotFound(f"no replay job {job_id}")
    slices = conn.execute(
        "SELECT slice_no, status, first_aggregate, last_aggregate, from_time, to_time,"
        " total_events, processed_count, applied_count, skipped_count, checkpoint, attempts,"
        " task_id, last_error, heartbeat_at, started_at, completed_at"
        " FROM replay_slice WHERE job_id = %s ORDER BY slice_no",
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
