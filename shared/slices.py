"""The slices of a replay job as rows: the statements a slice attempt runs on its own row.

An attempt takes a slice (``start_slice``), then each batch's transaction begins with the
compare-and-set ``lock_slice_version`` and ends with ``record_batch``; the slice ends with
``complete_slice`` or ``fail_slice``. Events a handler fails on under ``on_error=park`` are
``park_event``-ed beside it. The slice rows are the truth about a job's progress.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import orjson

from shared import db, jobs, queries, sources
from shared.db import Connection, Jsonb
from shared.errors import NotFound
from shared.jobs import Status, params
from shared.scope import SliceBounds

QUERIES = queries.load("slices")


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
    #: the Celery task of the slice's latest dispatch (the only one that may take it)
    task_id: str | None = None

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Slice:
        return cls(
            job_id=row["job_id"],
            slice_no=row["slice_no"],
            bounds=_bounds(row),
            status=Status(row["status"]),
            total_events=int(row["total_events"]),
            processed_count=int(row["processed_count"]),
            checkpoint=row["checkpoint"],
            version=int(row["version"]),
            owner=row["owner"],
            task_id=row.get("task_id"),
        )

    def refusal(self, task_id: str | None) -> str:
        """Why ``start_slice`` did not let the attempt of ``task_id`` take this slice: it was
        dispatched again since that copy was sent, or it is done, failed or cancelled (or its
        job is)."""
        if task_id is not None and self.task_id != task_id:
            return f"superseded by task {self.task_id}"
        return str(self.status)


def _bounds(row: dict[str, Any]) -> SliceBounds:
    return SliceBounds(
        first_aggregate=row["first_aggregate"],
        last_aggregate=row["last_aggregate"],
        from_time=row["from_time"],
        to_time=row["to_time"],
    )


def start_slice(
    conn: Connection, job_id: UUID, slice_no: int, task_id: str | None
) -> tuple[Slice, bool]:
    """Take ownership of a slice for this attempt and mark it (and its job) running. Returns
    the slice and whether it was taken.

    Only a pending or running slice of an unfinished job is taken, and only by its latest
    dispatch (``task_id``, when given, must be the one the slice row holds); otherwise the
    slice is returned as it is (possibly with another attempt's owner) and the caller must
    stop. A copy from an earlier dispatch (queued before a resume or the reconciler's
    re-dispatch) is never taken: its chord no longer counts, and a slice it ended would leave
    the new chord one part short, the job running with every slice done. Taking ownership
    from a copy that is still running is deliberate: it is a redelivery (the same task id) or
    a re-dispatch of a slice whose worker looked dead, and the older copy stops at its next
    batch (see ``lock_slice_version``).
    """
    key = params(job_id=job_id, slice_no=slice_no, task_id=task_id)
    with conn.transaction():
        # Lock order, everywhere: the job row, then slice rows (cancel and resume do the same;
        # the other order deadlocks against them).
        jobs.lock_job(conn, job_id)
        row = conn.execute(QUERIES["take_slice"], key).fetchone()
        if row is None:
            row = conn.execute(QUERIES["slice_row"], key).fetchone()
            if row is None:
                raise NotFound(f"no slice {slice_no} in replay job {job_id}")
            return Slice.from_row(row), False
        conn.execute(QUERIES["start_job"], key)
    return Slice.from_row(row), True


def lock_slice_version(
    conn: Connection, job_id: UUID, slice_no: int, owner: UUID, version: int
) -> bool:
    """Compare-and-set, first statement of a batch's transaction: bump the slice's version if
    this attempt still owns the slice, it is still running and still at ``version``. False means
    stop and apply nothing: the slice was cancelled, or another copy took it over or moved it on.
    The row lock taken here also serializes two copies that race for the same batch."""
    row = conn.execute(
        QUERIES["lock_slice_version"],
        params(job_id=job_id, slice_no=slice_no, owner=owner, version=version),
    ).fetchone()
    return row is not None


def slice_status(conn: Connection, job_id: UUID, slice_no: int) -> Status:
    row = conn.execute(QUERIES["slice_status"], {"job_id": job_id, "slice_no": slice_no}).fetchone()
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
        QUERIES["slice_standing"],
        params(job_id=job_id, slice_no=slice_no, owner=owner, version=version),
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
    """Move the slice's checkpoint and counts on by one batch (in the batch's transaction)."""
    conn.execute(
        QUERIES["record_batch"],
        {
            "job_id": job_id, "slice_no": slice_no, "checkpoint": Jsonb(checkpoint),
            "last_event_id": last_event_id, "processed": processed, "applied": applied,
            "skipped": processed - applied - poisoned, "poisoned": poisoned,
        },
    )  # fmt: skip


def complete_slice(conn: Connection, job_id: UUID, slice_no: int) -> None:
    conn.execute(QUERIES["complete_slice"], params(job_id=job_id, slice_no=slice_no))


def fail_slice(
    conn: Connection,
    job_id: UUID,
    slice_no: int,
    error: str,
    *,
    owner: UUID | None = None,
    event_id: UUID | None = None,
) -> None:
    """Mark an unfinished slice failed (only if ``owner`` still owns it, when given)."""
    conn.execute(
        QUERIES["fail_slice"],
        params(job_id=job_id, slice_no=slice_no, error=error, owner=owner, event_id=event_id),
    )


def park_event(
    conn: Connection,
    *,
    job_id: UUID,
    slice_no: int,
    event: Mapping[str, Any],
    handler_name: str,
    error: str,
    traceback: str,
) -> None:
    """Set an event aside, beside its slice, with the error its handler failed with, and what
    it was (all but its payload: a source without an event table finds it again by its
    metadata, and ``replay parked`` describes it)."""
    conn.execute(
        QUERIES["park_event"],
        {
            "job_id": job_id, "slice_no": slice_no, "event_id": event["event_id"],
            "handler_name": handler_name, "error": error, "traceback": traceback,
            "aggregate_id": _text(event.get("aggregate_id")),
            "sequence_num": event.get("sequence_num"),
            "event_type": _text(event.get("event_type")),
            "metadata": Jsonb(_json_safe(event.get("metadata") or {})),
        },
    )  # fmt: skip


def _text(value: Any) -> str | None:
    """Text PostgreSQL can hold (no NUL): a parked event is kept whatever its source made."""
    return None if value is None else str(value).replace("\x00", "\ufffd")


def _json_safe(value: Any) -> Any:
    """``value`` as JSON that PostgreSQL takes: what JSON has no type for (a datetime, a UUID
    a decoder put in metadata) as text, and no NUL."""
    text = orjson.dumps(value, default=str, option=orjson.OPT_NON_STR_KEYS)
    return orjson.loads(text.replace(b"\\u0000", b"\\ufffd"))


def parked_events(
    conn: Connection, job_id: UUID, *, unresolved_only: bool = False
) -> list[dict[str, Any]]:
    """The job's parked events, in per-aggregate order."""
    return conn.execute(
        QUERIES["parked_events"], {"job_id": job_id, "unresolved_only": unresolved_only}
    ).fetchall()


def resolve_parked(conn: Connection, job_id: UUID, event_id: UUID) -> None:
    conn.execute(QUERIES["resolve_parked"], {"job_id": job_id, "event_id": event_id})


def labels(conn: Connection, job_id: UUID) -> dict[int, str]:
    """Each slice's label, for Flower (``dispatch`` sends it as the task's ``argsrepr``): the
    slice's number, its size, its bounds and the whole job id (so that a search for it finds the
    job's slices), most telling first (Flower's column shows the start): ``slice 3 of 8 · 1,500
    events · aggregates ord-1 … ord-9 · job 9417c1d2-…``."""
    rows = conn.execute(QUERIES["slice_labels"], params(job_id=job_id)).fetchall()
    return {
        r["slice_no"]: f"slice {r['slice_no']} of {r['slices']} · {r['total_events']:,} events"
        f" · {sources.get(r['source']).describe_bounds(_bounds(r))} · job {job_id}"
        for r in rows
    }


def slice_error(conn: Connection, job_id: UUID, slice_no: int) -> str:
    """The first line of a failed slice's error (its row keeps the traceback)."""
    row = conn.execute(QUERIES["slice_error"], params(job_id=job_id, slice_no=slice_no)).fetchone()
    return ((row and row["last_error"]) or "no error recorded").splitlines()[0]


def stale_slices(conn: Connection, stale_seconds: float) -> list[dict[str, Any]]:
    """Slices of unfinished jobs that nobody seems to work on: running with a heartbeat older
    than ``stale_seconds``, or pending since a dispatch older than that."""
    return conn.execute(QUERIES["stale_slices"], params(stale=stale_seconds)).fetchall()


def redispatch(
    conn: Connection, job_id: UUID, slice_no: int, task_id: str, stale_seconds: float
) -> bool:
    """Record a re-dispatch if the slice is still stale: a new task id; a running slice goes
    back to pending and loses its owner (if its old copy is alive after all, it stops at its
    next batch). False, and nothing changed, if the slice came back to life meanwhile or a batch
    holds its row right now (SKIP LOCKED: a locked row is a live one; never wait for it)."""
    key = params(job_id=job_id, slice_no=slice_no, task_id=task_id, stale=stale_seconds)
    with conn.transaction():
        if conn.execute(QUERIES["lock_slice_unless_busy"], key).fetchone() is None:
            return False
        return conn.execute(_REDISPATCH, key).fetchone() is not None


_REDISPATCH = db.sql.SQL(QUERIES["redispatch"]).format(stale=db.sql.SQL(QUERIES["stale_slices"]))
