"""Replay jobs as rows: the job record, statuses and error policies, and the statements that
move a job (plan, throttle, cancel, resume, finalize, list).

The slice rows (``shared.slices``) are the truth about a job's progress; the job's own status is
derived from them by ``finalize_job`` (called by the chord callback, and safe to call any number
of times).
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from shared.db import Connection, Jsonb
from shared.errors import ActiveJobExists, InvalidJobState, NotFound
from shared.scope import Scope
from shared.slicing import PlannedSlice, SliceBy, slice_row


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


class ReplayType(enum.StrEnum):
    """What a replay covers: everything, one aggregate, a time range, or some event types (each
    may be narrowed further by a time range and event types)."""

    FULL = "full"
    AGGREGATE = "aggregate"
    TIME_RANGE = "time_range"
    EVENT_TYPE = "event_type"


class OnError(enum.StrEnum):
    """What a slice does with an event its handler fails on (see ``runner._SliceRun._isolate``)."""

    FAIL = "fail"
    SKIP = "skip"
    PARK = "park"


@dataclass(frozen=True)
class Job:
    job_id: UUID
    consumer_name: str
    replay_type: str
    scope: Scope
    status: Status
    slice_by: SliceBy
    reset: bool
    #: the frozen scope, in the source's notation (the event table's: a pg_snapshot)
    frozen: str
    cache_epoch: str
    total_events: int
    on_error: OnError
    covered_snapshot: str | None = None
    max_events_per_second: float | None = None
    #: the name of the job's source (``shared.sources``)
    source: str = "postgres"

    @property
    def full_rebuild(self) -> bool:
        """A rebuild of every event in the source. Of a source with ``coverage`` it is
        positional: it checkpoints by position and writes no per-event markers (its frozen scope
        says what it covers; see 0004_rebuild_coverage)."""
        return self.reset and self.scope == Scope()

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Job:
        return cls(
            job_id=row["job_id"],
            consumer_name=row["consumer_name"],
            replay_type=row["replay_type"],
            scope=Scope.from_json(row["filter_params"]),
            status=Status(row["status"]),
            slice_by=SliceBy(row["slice_by"]),
            reset=row["reset"],
            frozen=row["frozen_scope"],
            cache_epoch=str(row["cache_epoch"]),
            total_events=int(row["total_events"]),
            on_error=OnError(row["on_error"]),
            covered_snapshot=row["covered_snapshot"],
            max_events_per_second=rate(row["max_events_per_second"]),
            source=row["source"],
        )


_JOB_COLUMNS = (
    "job_id, consumer_name, replay_type, filter_params, status, slice_by, reset,"
    " frozen_scope, cache_epoch, total_events, on_error,"
    " covered_snapshot::text AS covered_snapshot, max_events_per_second, source"
)


def insert_job(
    conn: Connection,
    *,
    job_id: UUID,
    consumer_name: str,
    replay_type: str,
    scope: Scope,
    slice_by: SliceBy,
    reset: bool,
    on_error: OnError,
    max_events_per_second: float | None,
    source: str,
    planned: Sequence[PlannedSlice],
    frozen: str,
    covered: str | None,
    cache_epoch: str,
    planning_ms: int,
) -> None:
    """Write the planned job, once, with its final values: pending, or completed at once when
    there is nothing to replay. Raises ``ActiveJobExists`` if the consumer has an active job
    (the unique index ``replay_job_one_active_per_consumer``)."""
    empty = not planned
    conn.execute(
        "INSERT INTO replay_job (job_id, consumer_name, replay_type, filter_params, slice_by,"
        " reset, frozen_scope, cache_epoch, covered_snapshot, on_error, max_events_per_second,"
        " source, total_events, planning_ms, status, started_at, completed_at)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s::pg_snapshot, %s, %s, %s, %s, %s, %s,"
        " CASE WHEN %s THEN now() END, CASE WHEN %s THEN now() END)",
        (
            job_id, consumer_name, replay_type, Jsonb(scope.to_json()), slice_by, reset,
            frozen, cache_epoch, covered, on_error, max_events_per_second, source,
            sum(p.total_events for p in planned), planning_ms,
            Status.COMPLETED if empty else Status.PENDING, empty, empty,
        ),
    )  # fmt: skip


def rate(value: Any) -> float | None:
    return None if value is None else float(value)


def set_rate(conn: Connection, job_id: UUID | str, rate: float | None) -> None:
    """Change a running job's speed limit (None: none); its slices pick it up within seconds."""
    with conn.transaction():
        if lock_job(conn, job_id).final:
            raise InvalidJobState(f"job {job_id} has ended; there is nothing to throttle")
        conn.execute(
            "UPDATE replay_job SET max_events_per_second = %s WHERE job_id = %s", (rate, job_id)
        )


def active_job_id(conn: Connection, consumer_name: str) -> str | None:
    row = conn.execute(
        "SELECT job_id::text AS job_id FROM replay_job"
        " WHERE consumer_name = %s AND status IN ('pending', 'running')",
        (consumer_name,),
    ).fetchone()
    return row["job_id"] if row else None


def insert_slices(
    conn: Connection, job_id: UUID, planned: Sequence[PlannedSlice], task_ids: Sequence[str]
) -> None:
    rows = [
        {**slice_row(p), "job_id": job_id, "task_id": t}
        for p, t in zip(planned, task_ids, strict=True)
    ]
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO replay_slice (job_id, slice_no, first_aggregate, last_aggregate,"
            " from_time, to_time, total_events, task_id, dispatched_at) VALUES (%(job_id)s,"
            " %(slice_no)s, %(first_aggregate)s, %(last_aggregate)s, %(from_time)s, %(to_time)s,"
            " %(total_events)s, %(task_id)s, now())",
            rows,
        )


def load_job(conn: Connection, job_id: UUID | str) -> Job:
    row = conn.execute(
        f"SELECT {_JOB_COLUMNS} FROM replay_job WHERE job_id = %s", (job_id,)
    ).fetchone()
    if row is None:
        raise NotFound(f"no replay job {job_id}")
    return Job.from_row(row)


_SLICE_TOTALS = """
SELECT count(*) AS slices,
       count(*) FILTER (WHERE status = 'completed') AS completed_slices,
       count(*) FILTER (WHERE status = 'failed') AS failed_slices,
       count(*) FILTER (WHERE status IN ('pending', 'running')) AS unfinished,
       coalesce(sum(total_events), 0)::bigint AS total,
       coalesce(sum(processed_count), 0)::bigint AS processed,
       coalesce(sum(applied_count), 0)::bigint AS applied,
       coalesce(sum(skipped_count), 0)::bigint AS skipped,
       coalesce(sum(poison_count), 0)::bigint AS poisoned,
       (array_agg(last_error ORDER BY slice_no) FILTER (WHERE status = 'failed'))[1] AS error,
       (array_agg(last_event_id ORDER BY slice_no DESC)
           FILTER (WHERE last_event_id IS NOT NULL))[1] AS last_event_id
  FROM replay_slice WHERE job_id = %s
"""


def lock_job(conn: Connection, job_id: UUID | str) -> Status:
    # NO KEY UPDATE, not UPDATE: it does not conflict with the KEY SHARE lock that inserting a
    # parked_event (a foreign key to the job) takes while a batch holds its slice's row.
    row = conn.execute(
        "SELECT status FROM replay_job WHERE job_id = %s FOR NO KEY UPDATE", (job_id,)
    ).fetchone()
    if row is None:
        raise NotFound(f"no replay job {job_id}")
    return Status(row["status"])


def _slice_totals(conn: Connection, job_id: UUID | str) -> dict[str, Any]:
    row = conn.execute(_SLICE_TOTALS, (job_id,)).fetchone()
    assert row is not None
    return row


def finalize_job(conn: Connection, job_id: UUID | str) -> Status:
    """Derive the job's status from its slice rows and store it. Idempotent.

    All slices completed: ``completed``, with the counts summed. Some failed and none left to
    run: ``failed``, with the first slice error. Otherwise the job keeps its status.
    """
    with conn.transaction():
        status = lock_job(conn, job_id)
        if status.final:
            return status
        totals = _slice_totals(conn, job_id)
        error = totals["error"]
        if totals["completed_slices"] == totals["slices"]:
            new = Status.COMPLETED
            if totals["processed"] != totals["total"]:  # never expected; never hidden either
                new = Status.FAILED
                error = (
                    f"every slice completed, but {totals['processed']} events were processed"
                    f" of {totals['total']} planned"
                )
        elif totals["failed_slices"] and not totals["unfinished"]:
            new = Status.FAILED
        else:
            return status
        _close_job(conn, job_id, new, totals, error if new is Status.FAILED else None)
        if new is Status.COMPLETED:  # if it was a full rebuild, what it covers is now processed
            conn.execute(
                "UPDATE handler_state SET rebuild_completed = true, updated_at = now()"
                " WHERE rebuild_job_id = %s",
                (job_id,),
            )
        return new


def fail_job(conn: Connection, job_id: UUID | str, error: str) -> None:
    """Fail an unfinished job and its unfinished slices (e.g. it could not be dispatched);
    ``resume_job`` can take it up again later."""
    with conn.transaction():
        if lock_job(conn, job_id).final:
            return
        conn.execute(
            "UPDATE replay_slice SET status = 'failed', owner = NULL, last_error = %s"
            " WHERE job_id = %s AND status IN ('pending', 'running')",
            (error, job_id),
        )
        _close_job(conn, job_id, Status.FAILED, _slice_totals(conn, job_id), error)


def cancel_job(conn: Connection, job_id: UUID | str) -> Status:
    """Cancel an unfinished job: its slices stop at their next batch boundary (their
    compare-and-set requires a running slice). Returns the job's status afterwards."""
    with conn.transaction():
        status = lock_job(conn, job_id)
        if status.final:
            raise InvalidJobState(f"job {job_id} is already {status}; nothing to cancel")
        # Waits for a batch in flight to commit (it holds its slice's row lock), so the counts
        # below include it, and no batch commits after this.
        conn.execute(
            "UPDATE replay_slice SET status = 'cancelled', owner = NULL"
            " WHERE job_id = %s AND status IN ('pending', 'running')",
            (job_id,),
        )
        _close_job(conn, job_id, Status.CANCELLED, _slice_totals(conn, job_id), Status.CANCELLED)
        return Status.CANCELLED


def prepare_resume(conn: Connection, job_id: UUID | str) -> list[tuple[int, str]]:
    """Reopen a failed, cancelled or stuck job: every unfinished slice goes back to pending
    (keeping its checkpoint) with a new task id, and the job to running. Returns the
    (slice_no, task_id) pairs to dispatch. Raises ``ActiveJobExists`` if the consumer has
    another active job, ``InvalidJobState`` for a completed job."""
    with conn.transaction():
        status = lock_job(conn, job_id)
        if status is Status.COMPLETED:
            raise InvalidJobState(f"job {job_id} is completed; nothing to resume")
        try:
            with conn.transaction():
                # The cache epoch too: a rebuild since may have replaced it, and entries of the
                # old epoch must not be trusted.
                conn.execute(
                    "UPDATE replay_job j SET status = 'running', error = NULL,"
                    " completed_at = NULL, cache_epoch = coalesce("
                    "(SELECT h.cache_epoch FROM handler_state h"
                    " WHERE h.handler_name = j.consumer_name), j.cache_epoch)"
                    " WHERE job_id = %s",
                    (job_id,),
                )
        except ActiveJobExists:
            raise ActiveJobExists(
                f"cannot resume job {job_id}: its consumer has another active job"
                f" ({active_job_id_for(conn, job_id)})"
            ) from None
        rows = conn.execute(
            "UPDATE replay_slice SET status = 'pending', owner = NULL, last_error = NULL,"
            " error_event_id = NULL, task_id = gen_random_uuid()::text, dispatched_at = now()"
            " WHERE job_id = %s AND status <> 'completed' RETURNING slice_no, task_id",
            (job_id,),
        ).fetchall()
        if not rows:  # every slice was done: only the finalization was missing
            finalize_job(conn, job_id)
        return sorted((r["slice_no"], r["task_id"]) for r in rows)


def active_job_id_for(conn: Connection, job_id: UUID | str) -> str | None:
    row = conn.execute(
        "SELECT a.job_id::text AS job_id FROM replay_job j JOIN replay_job a"
        " ON a.consumer_name = j.consumer_name AND a.status IN ('pending', 'running')"
        " WHERE j.job_id = %s AND a.job_id <> j.job_id",
        (job_id,),
    ).fetchone()
    return row["job_id"] if row else None


# --- the reconciler's view ----------------------------------------------------------------------
def unfinished_jobs(conn: Connection) -> list[UUID]:
    rows = conn.execute(
        "SELECT job_id FROM replay_job WHERE status IN ('pending', 'running') ORDER BY created_at"
    ).fetchall()
    return [r["job_id"] for r in rows]


def _close_job(
    conn: Connection, job_id: UUID | str, status: Status, totals: dict[str, Any], error: str | None
) -> None:
    conn.execute(
        "UPDATE replay_job SET status = %s, processed_count = %s, applied_count = %s,"
        " skipped_count = %s, poison_count = %s, last_event_id = %s, error = %s,"
        " completed_at = now() WHERE job_id = %s",
        (
            status,
            totals["processed"],
            totals["applied"],
            totals["skipped"],
            totals["poisoned"],
            totals["last_event_id"],
            error,
            job_id,
        ),
    )
