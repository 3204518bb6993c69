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

from shared.db import Connection, Jsonb, UniqueViolation
from shared.errors import ActiveJobExists, InvalidJobState, JobNotFound
from shared.scope import Scope, SliceBounds
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
            max_events_per_second=_rate(row["max_events_per_second"]),
            source=row["source"],
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
    owner: UUID | None

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
            owner=row["owner"],
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
    frozen: str,
    cache_epoch: str,
    on_error: OnError,
    max_events_per_second: float | None = None,
    source: str = "postgres",
) -> None:
    """Insert a pending job. Raises ``db.UniqueViolation`` if the consumer has an active job."""
    conn.execute(
        "INSERT INTO replay_job (job_id, consumer_name, replay_type, filter_params, slice_by,"
        " reset, frozen_scope, cache_epoch, on_error, max_events_per_second, source)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
        (
            job_id,
            consumer_name,
            replay_type,
            Jsonb(scope.to_json()),
            slice_by,
            reset,
            frozen,
            cache_epoch,
            on_error,
            max_events_per_second,
            source,
        ),
    )


def _rate(value: Any) -> float | None:
    return None if value is None else float(value)


def set_rate(conn: Connection, job_id: UUID | str, rate: float | None) -> None:
    """Change a running job's speed limit (None: none); its slices pick it up within seconds."""
    with conn.transaction():
        if _lock_job(conn, job_id).final:
            raise InvalidJobState(f"job {job_id} has ended; there is nothing to throttle")
        conn.execute(
            "UPDATE replay_job SET max_events_per_second = %s WHERE job_id = %s", (rate, job_id)
        )


def set_cache_epoch(
    conn: Connection, job_id: UUID, cache_epoch: str, covered_snapshot: str | None = None
) -> None:
    conn.execute(
        "UPDATE replay_job SET cache_epoch = %s, covered_snapshot = %s::pg_snapshot"
        " WHERE job_id = %s",
        (cache_epoch, covered_snapshot, job_id),
    )


def active_job_id(conn: Connection, consumer_name: str) -> str | None:
    row = conn.execute(
        "SELECT job_id::text AS job_id FROM replay_job"
        " WHERE consumer_name = %s AND status IN ('pending', 'running')",
        (consumer_name,),
    ).fetchone()
    return row["job_id"] if row else None


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
            " from_time, to_time, total_events, task_id, dispatched_at) VALUES (%(job_id)s,"
            " %(slice_no)s, %(first_aggregate)s, %(last_aggregate)s, %(from_time)s, %(to_time)s,"
            " %(total_events)s, %(task_id)s, now())",
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


def start_slice(
    conn: Connection, job_id: UUID | str, slice_no: int, task_id: str | None
) -> tuple[Slice, bool]:
    """Take ownership of a slice for this attempt and mark it (and its job) running. Returns
    the slice and whether it was taken.

    Only a pending or running slice of an unfinished job is taken; otherwise the slice is
    returned as it is (possibly with another attempt's owner) and the caller must stop. Taking
    ownership from a copy that is still running is deliberate: it is a redelivery or a
    re-dispatch of a slice whose worker looked dead, and the older copy stops at its next batch
    (see ``lock_slice_version``).
    """
    with conn.transaction():
        # Lock order, everywhere: the job row, then slice rows (cancel and resume do the same;
        # the other order deadlocks against them).
        _lock_job(conn, job_id)
        row = conn.execute(
            "UPDATE replay_slice s SET status = 'running', owner = gen_random_uuid(),"
            " attempts = attempts + 1, heartbeat_at = now(),"
            " started_at = coalesce(s.started_at, now()), task_id = coalesce(%s, s.task_id)"
            " FROM replay_job j"
            " WHERE s.job_id = %s AND s.slice_no = %s AND j.job_id = s.job_id"
            " AND s.status IN ('pending', 'running') AND j.status IN ('pending', 'running')"
            " RETURNING s.*",
            (task_id, job_id, slice_no),
        ).fetchone()
        if row is None:
            row = conn.execute(
                "SELECT * FROM replay_slice WHERE job_id = %s AND slice_no = %s",
                (job_id, slice_no),
            ).fetchone()
            if row is None:
                raise JobNotFound(f"no slice {slice_no} in replay job {job_id}")
            return Slice.from_row(row), False
        conn.execute(
            "UPDATE replay_job SET status = 'running', started_at = coalesce(started_at, now())"
            " WHERE job_id = %s AND status = 'pending'",
            (job_id,),
        )
    return Slice.from_row(row), True


def lock_slice_version(
    conn: Connection, job_id: UUID, slice_no: int, owner: UUID, version: int
) -> bool:
    """Compare-and-set, first statement of a batch's transaction: bump the slice's version if
    this attempt still owns the slice, it is still running and still at ``version``. False means
    stop and apply nothing: the slice was cancelled, or another copy took it over or moved it on.
    The row lock taken here also serializes two copies that race for the same batch."""
    row = conn.execute(
        "UPDATE replay_slice SET version = version + 1, heartbeat_at = now()"
        " WHERE job_id = %s AND slice_no = %s AND owner = %s AND version = %s"
        " AND status = 'running' RETURNING version",
        (job_id, slice_no, owner, version),
    ).fetchone()
    return row is not None


def slice_status(conn: Connection, job_id: UUID | str, slice_no: int) -> Status:
    row = conn.execute(
        "SELECT status FROM replay_slice WHERE job_id = %s AND slice_no = %s", (job_id, slice_no)
    ).fetchone()
    if row is None:
        raise JobNotFound(f"no slice {slice_no} in replay job {job_id}")
    return Status(row["status"])


@dataclass(frozen=True)
class Standing:
    """A running attempt's view of its slice between two batches: one cheap read, no lock."""

    status: Status
    #: still this attempt's to run: running, owned by it, at its version (what
    #: ``lock_slice_version`` will require of the next batch)
    ours: bool
    #: the job's speed limit now, as stored (None: none)
    rate: float | None


def slice_standing(
    conn: Connection, job_id: UUID, slice_no: int, owner: UUID, version: int
) -> Standing:
    """Whether the attempt (``owner`` at ``version``) may go on, and the job's limit: read by
    a throttled slice while it waits, so a cancel or a takeover stops it within seconds."""
    row = conn.execute(
        "SELECT s.status, coalesce(s.status = 'running' AND s.owner = %s AND s.version = %s,"
        " false) AS ours, j.max_events_per_second"
        " FROM replay_slice s JOIN replay_job j ON j.job_id = s.job_id"
        " WHERE s.job_id = %s AND s.slice_no = %s",
        (owner, version, job_id, slice_no),
    ).fetchone()
    if row is None:
        raise JobNotFound(f"no slice {slice_no} in replay job {job_id}")
    return Standing(Status(row["status"]), row["ours"], _rate(row["max_events_per_second"]))


def record_batch(
    conn: Connection,
    job_id: UUID,
    slice_no: int,
    *,
    checkpoint: dict[str, Any],
    last_event_id: UUID,
    processed: int,
    applied: int,
    poisoned: int = 0,
) -> None:
    conn.execute(
        "UPDATE replay_slice SET checkpoint = %s, last_event_id = %s,"
        " processed_count = processed_count + %s, applied_count = applied_count + %s,"
        " skipped_count = skipped_count + %s, poison_count = poison_count + %s"
        " WHERE job_id = %s AND slice_no = %s",
        (
            Jsonb(checkpoint),
            last_event_id,
            processed,
            applied,
            processed - applied - poisoned,
            poisoned,
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


def fail_slice(
    conn: Connection,
    job_id: UUID | str,
    slice_no: int,
    error: str,
    *,
    owner: UUID | None = None,
    event_id: UUID | None = None,
) -> None:
    """Mark an unfinished slice failed (only if ``owner`` still owns it, when given)."""
    conn.execute(
        "UPDATE replay_slice SET status = 'failed', last_error = %s, error_event_id = %s,"
        " heartbeat_at = now() WHERE job_id = %s AND slice_no = %s"
        " AND status IN ('pending', 'running')"
        " AND (%s::uuid IS NULL OR owner = %s::uuid)",
        (error, event_id, job_id, slice_no, owner, owner),
    )


def park_event(
    conn: Connection,
    *,
    job_id: UUID,
    slice_no: int,
    event_id: UUID,
    handler_name: str,
    error: str,
    traceback: str,
) -> None:
    conn.execute(
        "INSERT INTO parked_event (job_id, event_id, handler_name, slice_no, error, traceback)"
        " VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (job_id, event_id) DO UPDATE"
        " SET error = EXCLUDED.error, traceback = EXCLUDED.traceback,"
        " attempts = parked_event.attempts + 1, resolved_at = NULL",
        (job_id, event_id, handler_name, slice_no, error, traceback),
    )


def parked_events(
    conn: Connection, job_id: UUID | str, *, unresolved_only: bool = False
) -> list[dict[str, Any]]:
    return conn.execute(
        "SELECT p.event_id, p.handler_name, p.slice_no, p.error, p.traceback, p.attempts,"
        " p.parked_at, p.resolved_at, e.aggregate_id, e.sequence_num, e.event_type"
        " FROM parked_event p LEFT JOIN event e ON e.event_id = p.event_id"
        " WHERE p.job_id = %s AND (NOT %s OR p.resolved_at IS NULL)"
        " ORDER BY e.aggregate_id, e.sequence_num",
        (job_id, unresolved_only),
    ).fetchall()


def resolve_parked(conn: Connection, job_id: UUID | str, event_id: UUID) -> None:
    conn.execute(
        "UPDATE parked_event SET resolved_at = now() WHERE job_id = %s AND event_id = %s",
        (job_id, event_id),
    )


_SLICE_TOTALS = """
SELECT count(*) AS slices,
       count(*) FILTER (WHERE status = 'completed') AS completed,
       count(*) FILTER (WHERE status = 'failed') AS failed,
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


def _lock_job(conn: Connection, job_id: UUID | str) -> Status:
    # NO KEY UPDATE, not UPDATE: it does not conflict with the KEY SHARE lock that inserting a
    # parked_event (a foreign key to the job) takes while a batch holds its slice's row.
    row = conn.execute(
        "SELECT status FROM replay_job WHERE job_id = %s FOR NO KEY UPDATE", (job_id,)
    ).fetchone()
    if row is None:
        raise JobNotFound(f"no replay job {job_id}")
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
        status = _lock_job(conn, job_id)
        if status.final:
            return status
        totals = _slice_totals(conn, job_id)
        error = totals["error"]
        if totals["completed"] == totals["slices"]:
            new = Status.COMPLETED
            if totals["processed"] != totals["total"]:  # never expected; never hidden either
                new = Status.FAILED
                error = (
                    f"every slice completed, but {totals['processed']} events were processed"
                    f" of {totals['total']} planned"
                )
        elif totals["failed"] and not totals["unfinished"]:
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
        if _lock_job(conn, job_id).final:
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
        status = _lock_job(conn, job_id)
        if status.final:
            raise InvalidJobState(f"job {job_id} is already {status}; nothing to cancel")
        # Waits for a batch in flight to commit (it holds its slice's row lock), so the counts
        # below include it, and no batch commits after this.
        conn.execute(
            "UPDATE replay_slice SET status = 'cancelled', owner = NULL"
            " WHERE job_id = %s AND status IN ('pending', 'running')",
            (job_id,),
        )
        _close_job(conn, job_id, Status.CANCELLED, _slice_totals(conn, job_id), "cancelled")
        return Status.CANCELLED


def prepare_resume(conn: Connection, job_id: UUID | str) -> list[tuple[int, str]]:
    """Reopen a failed, cancelled or stuck job: every unfinished slice goes back to pending
    (keeping its checkpoint) with a new task id, and the job to running. Returns the
    (slice_no, task_id) pairs to dispatch. Raises ``ActiveJobExists`` if the consumer has
    another active job, ``InvalidJobState`` for a completed job."""
    with conn.transaction():
        status = _lock_job(conn, job_id)
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
        except UniqueViolation:
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
            _close_job(conn, job_id, Status.COMPLETED, _slice_totals(conn, job_id), None)
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


def stale_slices(conn: Connection, stale_seconds: float) -> list[dict[str, Any]]:
    """Slices of unfinished jobs that nobody seems to work on: running with a heartbeat older
    than ``stale_seconds``, or pending since a dispatch older than that."""
    return conn.execute(
        f"SELECT s.job_id, s.slice_no, s.status, s.task_id, s.attempts FROM replay_slice s"
        f" JOIN replay_job j ON j.job_id = s.job_id AND j.status IN ('pending', 'running')"
        f" LEFT JOIN slice_heartbeat h ON (h.job_id, h.slice_no) = (s.job_id, s.slice_no)"
        f" WHERE {_STALE} ORDER BY s.job_id, s.slice_no",
        {"stale": stale_seconds},
    ).fetchall()


# A running slice is stale when neither its batches nor its pulse were seen for `stale` seconds;
# a pending one when it was dispatched that long ago.
_STALE = (
    "((s.status = 'running' AND greatest(s.heartbeat_at, h.beat_at)"
    "   < now() - make_interval(secs => %(stale)s))"
    " OR (s.status = 'pending' AND coalesce(s.dispatched_at, s.started_at, now())"
    "   < now() - make_interval(secs => %(stale)s)))"
)


def redispatch(
    conn: Connection, job_id: UUID, slice_no: int, task_id: str, stale_seconds: float
) -> bool:
    """Record a re-dispatch if the slice is still stale: a new task id; a running slice goes
    back to pending and loses its owner (if its old copy is alive after all, it stops at its
    next batch). False, and nothing changed, if the slice came back to life meanwhile or a batch
    holds its row right now (SKIP LOCKED: a locked row is a live one; never wait for it)."""
    with conn.transaction():
        locked = conn.execute(
            "SELECT 1 FROM replay_slice WHERE job_id = %s AND slice_no = %s"
            " FOR NO KEY UPDATE SKIP LOCKED",
            (job_id, slice_no),
        ).fetchone()
        if locked is None:
            return False
        row = conn.execute(
            f"UPDATE replay_slice s SET task_id = %(task_id)s, dispatched_at = now(),"
            f" owner = NULL, status = 'pending'"
            f" FROM (SELECT s.job_id, s.slice_no FROM replay_slice s"
            f"       LEFT JOIN slice_heartbeat h ON (h.job_id, h.slice_no) = (s.job_id, s.slice_no)"
            f"       WHERE s.job_id = %(job_id)s AND s.slice_no = %(slice_no)s AND {_STALE}) stale"
            f" WHERE (s.job_id, s.slice_no) = (stale.job_id, stale.slice_no) RETURNING 1",
            {"task_id": task_id, "job_id": job_id, "slice_no": slice_no, "stale": stale_seconds},
        ).fetchone()
        return row is not None


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
        raise JobNotFound(f"no replay job {job_id}")
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
