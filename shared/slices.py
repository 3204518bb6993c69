"""The slices of a replay job as rows: the statements a slice attempt runs on its own row.

An attempt takes a slice (``start_slice``), then each batch's transaction begins with the
compare-and-set ``lock_slice_version`` and ends with ``record_batch``; the slice ends with
``complete_slice`` or ``fail_slice``. Events a handler fails on under ``on_error=park`` are
``park_event``-ed beside it. The slice rows are the truth about a job's progress.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from uuid import UUID

from shared import jobs
from shared.db import Connection, Jsonb
from shared.errors import NotFound
from shared.jobs import Status
from shared.scope import SliceBounds


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
        jobs.lock_job(conn, job_id)
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
                raise NotFound(f"no slice {slice_no} in replay job {job_id}")
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
        raise NotFound(f"no slice {slice_no} in replay job {job_id}")
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
        raise NotFound(f"no slice {slice_no} in replay job {job_id}")
    return Standing(Status(row["status"]), row["ours"], jobs.rate(row["max_events_per_second"]))


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
