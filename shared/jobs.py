"""Replay jobs as rows: the job record, its statuses and policies, and the statements that move
a job (write it once planned, throttle, cancel, resume, finalize).

The slice rows (``shared.slices``) are the truth about a job's progress; the job's own status is
derived from them by ``finalize_job``, the one function that finishes a job from its slices
(called by the chord callback, the link of a re-dispatched slice, the reconciler and
``prepare_resume``; safe to call any number of times).
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from shared import queries
from shared.db import Connection, Jsonb
from shared.errors import ActiveJobExists, InvalidJobState, NotFound
from shared.scope import Scope
from shared.slicing import PlannedSlice, SliceBy, slice_row

QUERIES = queries.load("jobs")


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

#: What the named queries call the statuses: each by its value, and the sets ``active`` (a job
#: or slice still to run: pending or running) and ``final``. Every query gets them all.
STATUS_PARAMS: dict[str, Any] = {
    **{s.value: s for s in Status},
    "active": [s for s in Status if not s.final],
    "final": [s for s in Status if s.final],
}


def params(**values: Any) -> dict[str, Any]:
    """The parameters of a named query: ``values`` and the statuses (``STATUS_PARAMS``)."""
    return {**STATUS_PARAMS, **values}


class ReplayType(enum.StrEnum):
    """What a replay covers: everything, one aggregate, a time range, or some event types (each
    may be narrowed further by a time range and event types)."""

    FULL = "full"
    AGGREGATE = "aggregate"
    TIME_RANGE = "time_range"
    EVENT_TYPE = "event_type"


class OnError(enum.StrEnum):
    """What a slice does with an event its handler fails on (``shared.hooks.ErrorPolicy``)."""

    FAIL = "fail"
    SKIP = "skip"
    PARK = "park"


@dataclass(frozen=True)
class Job:
    job_id: UUID
    consumer_name: str
    replay_type: ReplayType
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
    #: a catch-up of the whole event table: the snapshot its handler is caught up to if it
    #: completes with nothing skipped or parked (0012_caught_up)
    catches_up_to: str | None = None

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
            replay_type=ReplayType(row["replay_type"]),
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


def rate(value: Any) -> float | None:
    return None if value is None else float(value)


def insert_job(
    conn: Connection,
    job: Job,
    planned: Sequence[PlannedSlice],
    task_ids: Sequence[str],
    planning_ms: int,
) -> None:
    """Write the planned job once, with its final values (``job``: pending, or completed when
    there is nothing to replay), then its slices with their task ids. Raises
    ``ActiveJobExists`` if the consumer has an active job (the unique index
    ``replay_job_one_active_per_consumer``)."""
    conn.execute(
        QUERIES["insert_job"],
        {
            "job_id": job.job_id, "consumer_name": job.consumer_name,
            "replay_type": job.replay_type, "filter_params": Jsonb(job.scope.to_json()),
            "slice_by": job.slice_by, "reset": job.reset, "frozen": job.frozen,
            "cache_epoch": job.cache_epoch, "covered": job.covered_snapshot,
            "on_error": job.on_error, "max_events_per_second": job.max_events_per_second,
            "source": job.source, "total_events": job.total_events,
            "planning_ms": planning_ms, "status": job.status, "ended": job.status.final,
            "catches_up_to": job.catches_up_to,
        },
    )  # fmt: skip
    rows = [
        {**slice_row(p), "job_id": job.job_id, "task_id": t}
        for p, t in zip(planned, task_ids, strict=True)
    ]
    with conn.cursor() as cur:
        cur.executemany(QUERIES["insert_slice"], rows)
    if job.status is Status.COMPLETED:  # nothing to replay: completed as it is planned
        _completed(conn, job.job_id, poisoned=False)


def load_job(conn: Connection, job_id: UUID) -> Job:
    row = conn.execute(QUERIES["load_job"], {"job_id": job_id}).fetchone()
    if row is None:
        raise NotFound(f"no replay job {job_id}")
    return Job.from_row(row)


def lock_job(conn: Connection, job_id: UUID) -> Status:
    """Lock the job's row (lock order, everywhere: the job row, then its slice rows) and
    return its status."""
    row = conn.execute(QUERIES["lock_job"], {"job_id": job_id}).fetchone()
    if row is None:
        raise NotFound(f"no replay job {job_id}")
    return Status(row["status"])


def active_job_id(conn: Connection, consumer_name: str) -> UUID | None:
    """The consumer's pending or running job, if it has one."""
    row = conn.execute(QUERIES["active_job"], params(consumer_name=consumer_name)).fetchone()
    return row["job_id"] if row else None


def unfinished_jobs(conn: Connection) -> list[UUID]:
    """Every pending or running job, oldest first (the reconciler's round)."""
    rows = conn.execute(QUERIES["unfinished_jobs"], params()).fetchall()
    return [r["job_id"] for r in rows]


def set_rate(conn: Connection, job_id: UUID, rate: float | None) -> None:
    """Change a running job's speed limit (None: none); its slices pick it up within seconds."""
    with conn.transaction():
        if lock_job(conn, job_id).final:
            raise InvalidJobState(f"job {job_id} has ended; there is nothing to throttle")
        conn.execute(QUERIES["set_rate"], {"job_id": job_id, "rate": rate})


def finalize_job(conn: Connection, job_id: UUID) -> Status:
    """Derive the job's status from its slice rows and store it; returns the job's status.
    Idempotent: an ended job is left as it is.

    All slices completed: ``completed``, with the counts summed (and a full rebuild's coverage
    recorded). Some failed and none left to run: ``failed``, with the first slice error.
    Otherwise the job keeps its status.
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
        if new is Status.COMPLETED:
            _completed(conn, job_id, poisoned=bool(totals["poisoned"]))
        return new


def _completed(conn: Connection, job_id: UUID, *, poisoned: bool) -> None:
    """What a completed job leaves: if it was a full rebuild, what it covers is now processed;
    if a catch-up of the whole table that skipped or parked nothing, all it saw is; a catch-up's
    starts are read no more."""
    conn.execute(QUERIES["complete_rebuild"], {"job_id": job_id})
    if not poisoned:
        conn.execute(QUERIES["complete_catch_up"], {"job_id": job_id})
    conn.execute(QUERIES["drop_starts"], {"job_id": job_id})


def job_error(conn: Connection, job_id: UUID) -> str:
    """The first line of an ended job's error (empty if it has none)."""
    row = conn.execute(QUERIES["job_error"], {"job_id": job_id}).fetchone()
    return ((row and row["error"]) or "").partition("\n")[0]


def fail_job(conn: Connection, job_id: UUID, error: str) -> None:
    """Fail an unfinished job and its unfinished slices (e.g. it could not be dispatched);
    ``prepare_resume`` can take it up again later."""
    with conn.transaction():
        if lock_job(conn, job_id).final:
            return
        _end_job(conn, job_id, Status.FAILED, error)


def cancel_job(conn: Connection, job_id: UUID) -> Status:
    """Cancel an unfinished job: its slices stop at their next batch boundary (their
    compare-and-set requires a running slice). Returns the job's status afterwards."""
    with conn.transaction():
        status = lock_job(conn, job_id)
        if status.final:
            raise InvalidJobState(f"job {job_id} is already {status}; nothing to cancel")
        # Waits for a batch in flight to commit (it holds its slice's row lock), so the counts
        # include it, and no batch commits after this.
        _end_job(conn, job_id, Status.CANCELLED, None)
        return Status.CANCELLED


def prepare_resume(conn: Connection, job_id: UUID) -> list[tuple[int, str]]:
    """Reopen a failed, cancelled or stuck job: every unfinished slice goes back to pending
    (keeping its checkpoint) with a new task id, and the job to running. Returns the
    (slice_no, task_id) pairs to dispatch; none if every slice was done already (the job is
    then finalized here). Raises ``ActiveJobExists`` if the consumer has another active job,
    ``InvalidJobState`` for a completed job."""
    with conn.transaction():
        conn.execute(QUERIES["hold_swaps_off_here"], params(job_id=job_id))  # see planning
        status = lock_job(conn, job_id)
        if status is Status.COMPLETED:
            raise InvalidJobState(f"job {job_id} is completed; nothing to resume")
        try:
            with conn.transaction():
                conn.execute(QUERIES["reopen_job"], params(job_id=job_id))
        except ActiveJobExists:
            other = conn.execute(QUERIES["other_active_job"], params(job_id=job_id)).fetchone()
            raise ActiveJobExists(
                f"cannot resume job {job_id}: its consumer has another active job"
                f" ({other['job_id'] if other else 'unknown'})"
            ) from None
        rows = conn.execute(QUERIES["reopen_slices"], params(job_id=job_id)).fetchall()
        if not rows:  # every slice was done: only the finalization was missing
            finalize_job(conn, job_id)
        return sorted((r["slice_no"], r["task_id"]) for r in rows)


def _slice_totals(conn: Connection, job_id: UUID) -> dict[str, Any]:
    row = conn.execute(QUERIES["slice_totals"], params(job_id=job_id)).fetchone()
    assert row is not None  # an aggregate without GROUP BY returns one row
    return row


def _end_job(conn: Connection, job_id: UUID, status: Status, error: str | None) -> None:
    """End a locked, unfinished job and its unfinished slices with ``status`` (failed or
    cancelled, by a decision rather than by its slices)."""
    conn.execute(
        QUERIES["end_unfinished_slices"], params(job_id=job_id, status=status, error=error)
    )
    _close_job(conn, job_id, status, _slice_totals(conn, job_id), error or status)


def _close_job(
    conn: Connection, job_id: UUID, status: Status, totals: dict[str, Any], error: str | None
) -> None:
    conn.execute(
        QUERIES["close_job"],
        {
            "job_id": job_id, "status": status, "processed": totals["processed"],
            "applied": totals["applied"], "skipped": totals["skipped"],
            "poisoned": totals["poisoned"], "last_event_id": totals["last_event_id"],
            "error": error,
        },
    )  # fmt: skip
