"""The replay loop of one slice.

Every batch is one transaction holding, in this order: the compare-and-set of the slice's version
(so a second copy of the task cannot apply the batch again), the read of the batch after the
checkpoint, the claim of the batch's processed markers, the handler's writes for the events just
claimed, and the new checkpoint. A crash anywhere rolls all of it back; the next attempt re-reads
at most that one batch.
"""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any
from uuid import UUID

from shared import db, jobs, slices, sources
from shared.applying import BatchResult, apply_batch
from shared.context import Context
from shared.db import Connection
from shared.handlers import Event, IdempotentEventHandler
from shared.heartbeat import Heartbeat
from shared.throttle import batch_limit, effective_rate, sleep_until

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]
#: a slice re-reads its job's limit at most this long apart between batches, in seconds
#: (`replay throttle` takes effect); while it waits for the limit, after every step of the wait
RATE_REFRESH_SECONDS = 2.0


@dataclass(frozen=True)
class SliceResult:
    job_id: UUID
    slice_no: int
    #: a Status when this attempt ended it (completed, failed) or was cancelled; "superseded"
    #: when another attempt took it over; "not taken (<status>)" when it was not this one's to run
    status: str
    processed: int
    applied: int

    @property
    def ended_the_slice(self) -> bool:
        """True when this attempt completed or failed the slice (and no other attempt did)."""
        return self.status in (jobs.Status.COMPLETED, jobs.Status.FAILED)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "job_id": str(self.job_id)}


class _Stop(Exception):
    """This attempt must stop: the slice was cancelled or another attempt owns it."""

    def __init__(self, status: str) -> None:
        super().__init__(status)
        self.status = status


def run_slice(
    ctx: Context,
    job_id: UUID,
    slice_no: int,
    *,
    task_id: str | None = None,
    progress: Progress | None = None,
) -> SliceResult:
    """Replay one slice from its checkpoint to its end.

    A handler error is dealt with by the job's ``on_error`` policy (see ``_SliceRun._isolate``);
    transient errors (``db.is_transient``) propagate for the task to retry, after the transaction
    of the batch in flight was rolled back. Any other error fails the slice, recorded in its row:
    a worker without the handler's module, say, must not be re-dispatched forever.
    """
    with ctx.pool.connection() as conn:
        job = jobs.load_job(conn, job_id)
        current, taken = slices.start_slice(conn, job_id, slice_no, task_id)
        if not taken:
            # Not ours to run (done, failed, cancelled, or its job ended): nothing was done.
            return SliceResult(job_id, slice_no, f"not taken ({current.status})", 0, 0)
        assert current.owner is not None
        try:
            run = _SliceRun(ctx, conn, job, current, ctx.registry.get(job.consumer_name), progress)
            beat = Heartbeat(
                ctx.pool, job.job_id, slice_no, current.owner, ctx.settings.heartbeat_seconds
            )
            with beat:
                return run.run()
        except Exception as exc:
            if db.is_transient(exc):
                raise
            log.exception("slice %s of job %s failed outside any handler", slice_no, job_id)
            slices.fail_slice(
                conn, job_id, slice_no, f"{type(exc).__name__}: {db.first_line(exc)}\n"
                f"{_traceback(exc)}", owner=current.owner,
            )  # fmt: skip
            return SliceResult(job_id, slice_no, jobs.Status.FAILED, 0, 0)


class _SliceRun:
    """One attempt at one slice: the loop of batches, and what to do when a handler fails."""

    def __init__(
        self,
        ctx: Context,
        conn: Connection,
        job: jobs.Job,
        current: slices.Slice,
        handler: IdempotentEventHandler,
        progress: Progress | None,
    ) -> None:
        assert current.owner is not None
        self.ctx, self.conn, self.job, self.handler, self.progress = (
            ctx, conn, job, handler, progress,
        )  # fmt: skip
        self.slice_no = current.slice_no
        self.owner: UUID = current.owner
        self.total = current.total_events
        source = sources.get(job.source)
        # A full rebuild of a source with coverage is positional: no per-event markers.
        self.positional = job.full_rebuild and source.coverage
        self.reader = source.reader(
            job.scope, current.bounds, job.frozen, ctx.settings.batch_size, job.covered_snapshot
        )
        self.checkpoint = current.checkpoint
        self.version = current.version
        self.processed = current.processed_count
        self.applied = 0
        # Ask the cache only while it can help: it knows only events processed before, and
        # PostgreSQL tells us whether the last batch had any. A fresh catch-up thus pays for one
        # lookup, not one per batch (MGET of a thousand misses was a fifth of a batch's time).
        self.ask_cache = not job.reset
        self.cache_hits = 0
        self.fold_sql = (
            handler.rebuild_sql
            if self.positional and ctx.settings.sql_folds and self.reader.can_fold
            else None
        )
        self.stored_rate: float | None = None
        self.rate: float | None = None
        self._take_rate(job.max_events_per_second)
        self.rate_read_at = time.monotonic()
        self.limit = ctx.settings.batch_size

    def result(self, status: str) -> SliceResult:
        return SliceResult(self.job.job_id, self.slice_no, status, self.processed, self.applied)

    def run(self) -> SliceResult:
        try:
            while True:
                self._throttle()
                outcome = self._batch()
                if outcome is not None:
                    return self.result(outcome)
        except _Stop as stop:
            log.warning("slice %s of job %s stops: %s", self.slice_no, self.job.job_id, stop.status)
            return self.result(stop.status)

    def _throttle(self) -> None:
        """Under a speed limit: wait for the next batch's share of the job's rate, in batches of
        about 0.1 s of events. The wait is outside any transaction (no lock, no snapshot held)
        and in steps (``sleep_until``): between two, the slice's standing is read again, so a
        cancel or a takeover stops this attempt, and a lifted limit ends the wait, within a
        step. A new limit keeps the wait: the reservation taken stays due when it was."""
        if time.monotonic() - self.rate_read_at > RATE_REFRESH_SECONDS:
            self._refresh()
        if self.rate is None:
            self.limit = self.ctx.settings.batch_size
            return
        self.limit = batch_limit(self.rate, self.ctx.settings.batch_size)
        wait = self.ctx.throttle.reserve(str(self.job.job_id), self.limit, self.rate)
        if wait > 0:
            sleep_until(time.monotonic() + wait, self._still_throttled)

    def _still_throttled(self) -> bool:
        """Between two steps of a wait: raise _Stop if the slice is no longer this attempt's
        to run; False if the limit was lifted."""
        self._refresh()
        return self.rate is not None

    def _refresh(self) -> None:
        """Read the slice's standing: stop (as ``_lock`` would) if it was cancelled or taken
        over; otherwise take up the job's limit, at least the minimum (``effective_rate``)."""
        standing = slices.slice_standing(
            self.conn, self.job.job_id, self.slice_no, self.owner, self.version
        )
        self.rate_read_at = time.monotonic()
        if not standing.ours:
            raise _Stop(_stopped(standing.status))
        self._take_rate(standing.rate)

    def _take_rate(self, stored: float | None) -> None:
        rate = effective_rate(stored)
        if rate != stored and stored != self.stored_rate:  # say so once per stored value
            log.warning("job %s: a limit of %s events/s is applied as %s", self.job.job_id,
                        stored, "no limit" if rate is None else f"{rate:g} events/s")  # fmt: skip
        self.stored_rate, self.rate = stored, rate

    def _lock(self) -> None:
        """First statement of a batch's transaction: the compare-and-set."""
        conn = self.conn
        if not slices.lock_slice_version(
            conn, self.job.job_id, self.slice_no, self.owner, self.version
        ):
            status = slices.slice_status(conn, self.job.job_id, self.slice_no)
            raise _Stop(_stopped(status))

    def _lock_and_read(self) -> sources.Batch:
        """First statements of a batch's transaction: the compare-and-set, then the batch."""
        self._lock()
        batch = self.reader.read(self.conn, self.checkpoint, self.limit)
        return batch

    def _batch(self) -> str | None:
        """Process the next batch. Returns the slice's final status when it is done."""
        if self.fold_sql is not None:
            try:
                return self._fold_batch(self.fold_sql)
            except _Stop:
                raise
            except Exception as exc:
                if db.is_transient(exc):
                    raise
                # The set-based fold failed (a malformed event, say): nothing of it committed.
                # The handler's Python path takes this batch, and finds the event if need be.
                log.warning("SQL fold of slice %s of job %s failed; batch by batch in Python",
                            self.slice_no, self.job.job_id, exc_info=True)  # fmt: skip
        try:
            with self.conn.transaction():
                batch = self._lock_and_read()
                events = batch.events
                if not events:
                    slices.complete_slice(self.conn, self.job.job_id, self.slice_no)
                    return jobs.Status.COMPLETED
                result = self._apply(events, self._known(batch))
                checkpoint = self._record(events, len(result.applied), 0)
        except _Stop:
            raise
        except Exception as exc:
            if db.is_transient(exc):
                raise
            # Something in this batch failed (most likely the handler on one event): nothing of
            # the batch was committed. Find the event, one at a time, and apply the policy.
            log.warning("batch of slice %s of job %s failed; isolating the event",
                        self.slice_no, self.job.job_id, exc_info=True)  # fmt: skip
            return self._isolate()
        self._after_commit(len(events), result.already_processed, len(result.applied), checkpoint)
        return None

    def _fold_batch(self, fold_sql: str) -> str | None:
        """A full rebuild's batch as one statement: the handler's set-based fold reads the batch
        in PostgreSQL, and no event travels to Python (see IdempotentEventHandler.rebuild_sql)."""
        with self.conn.transaction():
            self._lock()
            folded = self.reader.fold(self.conn, self.checkpoint, fold_sql, self.limit)
            if folded is None:
                slices.complete_slice(self.conn, self.job.job_id, self.slice_no)
                return jobs.Status.COMPLETED
            n = folded.count
            checkpoint = self.reader.checkpoint_after(folded.last)
            slices.record_batch(
                self.conn, self.job.job_id, self.slice_no, checkpoint=checkpoint,
                last_event_id=folded.last["event_id"], processed=n, applied=n,
            )  # fmt: skip
        self._after_commit(n, [], n, checkpoint)
        return None

    def _apply(self, events: Sequence[Event], known: set[UUID]) -> BatchResult:
        if self.positional:
            # A full rebuild owns every event of its snapshot (no one else may claim them, see
            # idempotency.covered): no per-event markers, the checkpoint's compare-and-set
            # alone keeps a batch from being applied twice.
            self.handler.handle_batch(self.conn, events, is_replay=True)
            return BatchResult(applied=list(events), skipped=0, already_processed=[])
        return apply_batch(self.conn, self.handler, events, is_replay=True, known_processed=known)

    def _known(self, batch: sources.Batch) -> set[UUID]:
        """Events known as processed without asking processed_event: covered by the handler's
        last completed full rebuild (the source says which), or cached. A rebuild asks nothing:
        it replaced the cache epoch, so nothing can be cached for it yet."""
        events = batch.events
        known = set(batch.covered)
        if not self.ask_cache or len(known) == len(events):
            return known
        cached = self.ctx.cache.seen(
            self.handler.name, self.job.cache_epoch,
            [e["event_id"] for e in events if e["event_id"] not in known],
        )  # fmt: skip
        self.cache_hits = len(cached)
        return known | cached

    def _isolate(self) -> str | None:
        """Re-run the failed batch event by event, each in a savepoint, and apply ``on_error``:

        * ``fail``: commit the events before the poison event, stop the slice there (failed,
          with the error, traceback and event id); ``resume_job`` retries from that event.
        * ``skip``: leave the event unapplied and unmarked, go on.
        * ``park``: the same, and record it in ``parked_event`` for ``retry-parked``.
        """
        policy = self.job.on_error
        failure: tuple[Event, BaseException] | None = None
        applied, done = 0, 0
        poisoned: set[UUID] = set()  # skipped or parked: not processed
        already: list[UUID] = []
        with self.conn.transaction():
            batch = self._lock_and_read()
            events, known = batch.events, self._known(batch)
            for event in events:
                try:
                    with self.conn.transaction():  # a savepoint per event
                        one = self._apply([event], known)
                    applied += len(one.applied)
                    already += one.already_processed
                except Exception as exc:
                    if db.is_transient(exc):
                        raise
                    if policy is jobs.OnError.FAIL:
                        failure = (event, exc)
                        break
                    poisoned.add(event["event_id"])
                    parked = policy is jobs.OnError.PARK
                    log.error("slice %s of job %s: %s event %s (%s)", self.slice_no,
                              self.job.job_id, "parked" if parked else "skipped",
                              event["event_id"], db.first_line(exc))  # fmt: skip
                    # In a full rebuild a skipped event is parked as well: no marker would ever
                    # bring it back (a catch-up takes the rebuild's events as processed).
                    if parked or self.positional:
                        slices.park_event(
                            self.conn, job_id=self.job.job_id, slice_no=self.slice_no,
                            event_id=event["event_id"], handler_name=self.handler.name,
                            error=f"{type(exc).__name__}: {db.first_line(exc)}",
                            traceback=_traceback(exc),
                        )  # fmt: skip
                done += 1
            handled = events[:done]
            checkpoint = (
                self._record(handled, applied, len(poisoned)) if handled else self.checkpoint
            )
            if failure is not None:
                poison, error = failure
                slices.fail_slice(
                    self.conn, self.job.job_id, self.slice_no,
                    f"{type(error).__name__} on event {poison['event_id']}"
                    f" ({poison['aggregate_id']} #{poison['sequence_num']}):"
                    f" {db.first_line(error)}\n{_traceback(error)}",
                    owner=self.owner, event_id=poison["event_id"],
                )  # fmt: skip
        self._after_commit(len(handled), already, applied, checkpoint)
        return jobs.Status.FAILED if failure is not None else None

    def _record(self, events: Sequence[Event], applied: int, poisoned: int) -> dict[str, Any]:
        """Write the batch's counts and new checkpoint (in its transaction); return the
        checkpoint, which becomes this attempt's only once the transaction has committed."""
        checkpoint = self.reader.checkpoint_after(events[-1])
        slices.record_batch(
            self.conn, self.job.job_id, self.slice_no, checkpoint=checkpoint,
            last_event_id=events[-1]["event_id"], processed=len(events), applied=applied,
            poisoned=poisoned,
        )  # fmt: skip
        return checkpoint

    def _after_commit(
        self,
        processed: int,
        already_processed: list[UUID],
        applied: int,
        checkpoint: dict[str, Any] | None,
    ) -> None:
        """Bookkeeping once a batch has committed.

        The cache learns only the events that PostgreSQL said were processed before: those are
        the ones a catch-up meets again. Caching every event just applied cost as much as the
        rest of the batch (one SET per event) for entries a rebuild never reads."""
        self.checkpoint = checkpoint
        self.version += 1
        self.processed += processed
        self.applied += applied
        self.ctx.cache.mark(self.handler.name, self.job.cache_epoch, already_processed)
        self.ask_cache = not self.job.reset and bool(already_processed or self.cache_hits)
        self.cache_hits = 0
        if self.progress is not None:
            self.progress(self.processed, self.total)


def _stopped(status: jobs.Status) -> str:
    """Why an attempt stops when its slice is no longer its own."""
    return jobs.Status.CANCELLED if status is jobs.Status.CANCELLED else "superseded"


def _traceback(exc: BaseException) -> str:
    return "".join(traceback.format_exception(exc))
