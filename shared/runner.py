"""The replay loop of one slice, and the live entry point: the two ways an event reaches a handler.

Every batch is one transaction holding, in this order: the compare-and-set of the slice's version
(so a second copy of the task cannot apply the batch again), the read of the batch after the
checkpoint, the claim of the batch's processed markers, the handler's writes for the events just
claimed, and the new checkpoint. A crash anywhere rolls all of it back; the next attempt re-reads
at most that one batch.
"""

from __future__ import annotations

import logging
import os
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from psycopg_pool import ConnectionPool

from shared import db, idempotency, jobs
from shared.db import Connection
from shared.errors import SliceOwnershipLost
from shared.handlers import Event, IdempotentEventHandler, Registry, load_registry
from shared.idempotency import ProcessedCache
from shared.scope import EVENT_COLUMN_NAMES, SliceReader
from shared.settings import Settings

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]


@dataclass
class Context:
    """What a worker process needs to run slices: built once per process (after the fork)."""

    settings: Settings
    pool: ConnectionPool[Connection]
    registry: Registry
    cache: ProcessedCache

    @classmethod
    def create(cls, settings: Settings) -> Context:
        return cls(
            settings=settings,
            pool=db.make_pool(settings, max_size=2),
            registry=load_registry(settings.handler_modules),
            cache=ProcessedCache.from_url(settings.redis_url, settings.cache_ttl_seconds),
        )

    def close(self) -> None:
        self.pool.close()
        self.cache.close()


_context: tuple[int, Context] | None = None


def process_context(settings: Settings) -> Context:
    """This process's Context, created on first use; a forked child never reuses its parent's
    connections (they are not safe to share across processes)."""
    global _context
    if _context is None or _context[0] != os.getpid():
        _context = (os.getpid(), Context.create(settings))
    return _context[1]


@dataclass(frozen=True)
class BatchResult:
    applied: list[Event]
    skipped: int


def apply_batch(
    conn: Connection,
    handler: IdempotentEventHandler,
    events: Sequence[Event],
    *,
    is_replay: bool,
    known_processed: set[UUID] = frozenset(),  # type: ignore[assignment]
) -> BatchResult:
    """Claim ``events`` for ``handler`` and hand it those not processed before, in order.
    Must run inside the caller's transaction."""
    candidates = [e for e in events if e["event_id"] not in known_processed]
    claimed = idempotency.claim(conn, handler.name, [e["event_id"] for e in candidates])
    fresh = [e for e in candidates if e["event_id"] in claimed]
    if fresh:
        handler.handle_batch(conn, fresh, is_replay=is_replay)
    return BatchResult(applied=fresh, skipped=len(events) - len(fresh))


@dataclass(frozen=True)
class SliceResult:
    job_id: str
    slice_no: int
    status: str
    processed: int
    applied: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "job_id": self.job_id,
            "slice_no": self.slice_no,
            "status": self.status,
            "processed": self.processed,
            "applied": self.applied,
        }


def run_slice(
    ctx: Context,
    job_id: str,
    slice_no: int,
    *,
    task_id: str | None = None,
    progress: Progress | None = None,
) -> SliceResult:
    """Replay one slice from its checkpoint to its end. Handler errors fail the slice (recorded
    in its row, with the traceback); infrastructure errors propagate for the task to retry."""
    with ctx.pool.connection() as conn, db.translate_errors():
        job = jobs.load_job(conn, job_id)
        if job.status.final:
            return SliceResult(job_id, slice_no, f"job {job.status}", 0, 0)
        current = jobs.start_slice(conn, job_id, slice_no, task_id)
        if current.status is jobs.Status.COMPLETED:
            return SliceResult(job_id, slice_no, "completed", 0, 0)
        handler = ctx.registry.get(job.consumer_name)
        reader = SliceReader(job.scope, current.bounds, job.snapshot, ctx.settings.batch_size)
        checkpoint, version = current.checkpoint, current.version
        processed, applied = current.processed_count, 0
        try:
            while True:
                with conn.transaction():
                    if not jobs.lock_slice_version(conn, job.job_id, slice_no, version):
                        raise SliceOwnershipLost(
                            f"slice {slice_no} of job {job_id} was advanced by another task"
                        )
                    query, params = reader.query(checkpoint)
                    events: list[Event] = conn.execute(query, params).fetchall()  # type: ignore[assignment]
                    if not events:
                        jobs.complete_slice(conn, job.job_id, slice_no)
                        break
                    ids = [e["event_id"] for e in events]
                    cached = ctx.cache.seen(handler.name, job.cache_epoch, ids)
                    result = apply_batch(
                        conn, handler, events, is_replay=True, known_processed=cached
                    )
                    checkpoint = reader.checkpoint_after(events[-1])
                    jobs.record_batch(
                        conn,
                        job.job_id,
                        slice_no,
                        checkpoint=checkpoint,
                        last_event_id=events[-1]["event_id"],
                        processed=len(events),
                        applied=len(result.applied),
                    )
                version += 1
                processed += len(events)
                applied += len(result.applied)
                ctx.cache.mark(handler.name, job.cache_epoch, [i for i in ids if i not in cached])
                if progress is not None:
                    progress(processed, current.total_events)
        except SliceOwnershipLost:
            log.warning(
                "slice %s of job %s: another copy is running it; this one stops", slice_no, job_id
            )
            return SliceResult(job_id, slice_no, "superseded", processed, applied)
        except db.TRANSIENT_ERRORS:
            raise
        except Exception as exc:
            # A handler (or a bug) failed on this batch: nothing of it was committed. Record why
            # in the slice row, where `replay status` and the job's final state show it.
            log.exception("slice %s of job %s failed", slice_no, job_id)
            with conn.transaction():
                jobs.fail_slice(conn, job_id, slice_no, _describe(exc))
            return SliceResult(job_id, slice_no, "failed", processed, applied)
        return SliceResult(job_id, slice_no, "completed", processed, applied)


def _describe(exc: BaseException) -> str:
    tb = "".join(traceback.format_exception(exc))
    return f"{type(exc).__name__}: {db.first_line(exc)}\n{tb}"


_EVENTS_BY_ID = (
    f"SELECT {EVENT_COLUMN_NAMES} FROM event WHERE event_id = ANY(%s::uuid[])"
    " ORDER BY aggregate_id, sequence_num"
)


def process_live(ctx: Context, consumer: str, event_ids: Sequence[UUID | str]) -> BatchResult:
    """The live entry point: hand events (by id) to a handler with ``is_replay=False``, in
    per-aggregate order, exactly once each (already processed ones are skipped)."""
    handler = ctx.registry.get(consumer)
    with ctx.pool.connection() as conn, db.translate_errors(), conn.transaction():
        events: list[Event] = conn.execute(  # type: ignore[assignment]
            _EVENTS_BY_ID, ([str(e) for e in event_ids],)
        ).fetchall()
        result = apply_batch(conn, handler, events, is_replay=False)
        epoch = idempotency.current_epoch(conn, handler.name)
    ctx.cache.mark(handler.name, epoch, [e["event_id"] for e in result.applied])
    return result
