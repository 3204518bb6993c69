"""The replay loop of one slice. It holds no policy: the speed limit, the cache, progress and what
to do with an event the handler fails on are hooks and policies around it (``shared.hooks``).

Every batch is one transaction holding, in this order: the compare-and-set of the slice's version
(so a second copy of the task cannot apply the batch again), the read of the batch after the
checkpoint, the claim of the batch's processed markers, the handler's writes for the events just
claimed, and the new checkpoint. A crash anywhere rolls all of it back; the next attempt re-reads
at most that one batch.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import functools
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, NamedTuple
from uuid import UUID

from shared import db, hooks, idempotency, jobs, shadow, slices, sources
from shared.applying import BatchResult, apply_batch
from shared.context import Context
from shared.db import Connection
from shared.errors import DatabaseUnavailable, SourceUnavailable
from shared.handlers import Event, IdempotentEventHandler
from shared.heartbeat import Heartbeat
from shared.hooks import Committed

log = logging.getLogger(__name__)

Progress = hooks.Progress


class SliceOutcome(enum.StrEnum):
    """How an attempt at a slice ended."""

    COMPLETED = jobs.Status.COMPLETED.value
    FAILED = jobs.Status.FAILED.value
    CANCELLED = jobs.Status.CANCELLED.value
    #: another attempt (a redelivered copy of the task) took the slice over
    SUPERSEDED = "superseded"


@dataclass(frozen=True)
class SliceResult:
    job_id: UUID
    slice_no: int
    #: a SliceOutcome, or "not taken (<status>)" when the slice was not this attempt's to run
    status: str
    processed: int
    applied: int
    #: a failed slice's error, its first line (the slice row keeps the traceback)
    error: str | None = None

    @property
    def ended_the_slice(self) -> bool:
        """True when this attempt completed or failed the slice (and no other attempt did)."""
        return self.status in (SliceOutcome.COMPLETED, SliceOutcome.FAILED)

    def as_dict(self) -> dict[str, Any]:
        """The task's result: what Flower shows first comes first."""
        fields = {"status": str(self.status), "processed": self.processed,
                  "applied": self.applied}  # fmt: skip
        return {**fields, **asdict(self), **fields, "job_id": str(self.job_id)}


class _Stop(Exception):
    """This attempt must stop: the slice was cancelled or another attempt owns it."""

    def __init__(self, outcome: SliceOutcome) -> None:
        super().__init__(outcome)
        self.outcome = outcome


def _propagates(exc: Exception) -> bool:
    """Errors that are no fault of the work, which no error policy may take: a stop of this
    attempt, or a transient error (``db.is_transient``, or a source's server that does not
    answer) that the task retries, once the
    transaction in flight has rolled back."""
    return isinstance(exc, _Stop | SourceUnavailable) or db.is_transient(exc)


def run_slice(
    ctx: Context,
    job_id: UUID,
    slice_no: int,
    *,
    task_id: str | None = None,
    progress: Progress | None = None,
) -> SliceResult:
    """Replay one slice from its checkpoint to its end.

    A handler error is dealt with by the job's ``on_error`` policy (``hooks.ErrorPolicy``);
    transient errors propagate for the task to retry. Any other error fails the slice, recorded
    in its row: a worker without the handler's module, say, must not be re-dispatched forever.
    """
    with ctx.pool.connection() as conn:
        job = jobs.load_job(conn, job_id)
        current, taken = slices.start_slice(conn, job_id, slice_no, task_id)
        if not taken:  # not ours to run (``start_slice`` says when): nothing was done
            return SliceResult(job_id, slice_no, f"not taken ({current.refusal(task_id)})", 0, 0)
        assert current.owner is not None
        try:
            handler = ctx.registry.get(job.consumer_name)
            into = shadow.find(conn, job_id) if job.full_rebuild else None
            if into is not None:  # the same handler, under the shadow's ledger and schema
                shadow.check_writable(into)
                handler = shadow.in_shadow(handler, into)
            run = _SliceRun(ctx, conn, job, current, handler, progress, into)
            beat = Heartbeat(
                ctx.pool, job.job_id, slice_no, current.owner, ctx.settings.heartbeat_seconds
            )
            with beat:
                result = run.run()
            if result.status == SliceOutcome.FAILED:
                error = slices.slice_error(conn, job_id, slice_no)
                result = dataclasses.replace(result, error=error)
            return result
        except Exception as exc:
            if _propagates(exc):
                raise
            log.exception("slice %s of job %s failed outside any handler", slice_no, job_id)
            slices.fail_slice(
                conn, job_id, slice_no, f"{type(exc).__name__}: {db.first_line(exc)}\n"
                f"{hooks.format_traceback(exc)}", owner=current.owner,
            )  # fmt: skip
            error = f"{type(exc).__name__}: {db.first_line(exc)}"
            return SliceResult(job_id, slice_no, SliceOutcome.FAILED, 0, 0, error)


class _Way(NamedTuple):
    """A way to apply the next batch, inside its transaction (after the compare-and-set)."""

    apply: Callable[[], Committed | None]
    #: said when it fails on a batch and the next way takes the batch
    failure: str


class _SliceRun:
    """One attempt at one slice: a loop of batches that fires hooks, and knows no policy."""

    def __init__(
        self,
        ctx: Context,
        conn: Connection,
        job: jobs.Job,
        current: slices.Slice,
        handler: IdempotentEventHandler,
        progress: Progress | None,
        into: shadow.Shadow | None = None,
    ) -> None:
        assert current.owner is not None
        self.conn, self.job, self.handler, self.into = conn, job, handler, into
        self.key = hooks.SliceKey(job.job_id, current.slice_no, current.owner, handler.name)
        source = sources.get(job.source)
        # A full rebuild of a source with coverage is positional: no per-event markers.
        self.positional = job.full_rebuild and source.coverage
        self.in_order = source.progress
        self.reader = source.reader(
            job.scope, current.bounds, job.frozen, ctx.settings.batch_size, job.covered_snapshot
        )
        self.checkpoint, self.version = current.checkpoint, current.version
        self.processed, self.applied = current.processed_count, 0
        self.pace = hooks.Pace(
            ctx.throttle, job.job_id, ctx.settings.batch_size, job.max_events_per_second,
            self._standing,
        )  # fmt: skip
        self.known = hooks.KnownEvents(
            ctx.cache, handler.name, job.cache_epoch, rebuild=job.reset, cached=not self.in_order
        )
        self.hooks: list[hooks.Hook] = [self.pace, self.known]
        if progress is not None:
            report = hooks.ProgressReport(progress, self.processed, current.total_events)
            self.hooks.append(report)
        self.on_error = hooks.error_policy(job.on_error, positional=self.positional)
        self.ways = self._ways(ctx.settings.sql_folds)

    def _ways(self, sql_folds: bool) -> list[_Way]:
        """How a batch is applied, in the order tried: a way that fails on a batch leaves
        nothing of it committed, and the next one takes the same batch."""
        ways = [
            _Way(self._whole_batch, "batch of slice %s of job %s failed; isolating the event"),
            _Way(self._event_by_event, ""),  # the last: handler errors go to the error policy
        ]
        fold_sql = self.handler.rebuild_sql
        if not (sql_folds and fold_sql is not None and self.reader.can_fold):
            return ways
        # A set-based fold fails on a malformed event, say: the Python path then takes the
        # batch, and finds the event if need be.
        failure = "SQL fold of slice %s of job %s failed; batch by batch in Python"
        if self.positional:
            ways.insert(0, _Way(functools.partial(self._fold, fold_sql), failure))
        elif self.in_order and self.job.scope.gapless and not self.reader.bounds.by_time:
            ways.insert(0, _Way(functools.partial(self._catch_up_fold, fold_sql), failure))
        return ways

    def result(self, outcome: SliceOutcome) -> SliceResult:
        return SliceResult(
            self.job.job_id, self.key.slice_no, outcome, self.processed, self.applied
        )

    def run(self) -> SliceResult:
        """Batch after batch until the slice ends or this attempt must stop."""
        self.reader.open(self.conn)
        try:
            while True:
                for hook in self.hooks:
                    hook.before_batch()
                try:
                    done = self._next_batch()
                except DatabaseUnavailable:
                    if not self._read_again():
                        raise
                    continue
                if done is None:
                    return self.result(SliceOutcome.COMPLETED)
                self._advance(done)
                if done.failed:
                    return self.result(SliceOutcome.FAILED)
        except _Stop as stop:
            log.warning("slice %s of job %s stops: %s", self.key.slice_no, self.job.job_id,
                        stop.outcome)  # fmt: skip
            return self.result(stop.outcome)
        finally:
            if not self.conn.closed:
                self.reader.close(self.conn)

    def _next_batch(self) -> Committed | None:
        """The next batch, committed, by the first way that does not fail on it; None when the
        slice has completed."""
        *fallible, last = self.ways
        for way in fallible:
            try:
                return self._in_transaction(way.apply)
            except idempotency.NotInOrder:
                continue  # not a failure: the batch is the next way's
            except Exception as exc:
                if _propagates(exc):
                    raise
                log.warning(way.failure, self.key.slice_no, self.job.job_id, exc_info=True)
        return self._in_transaction(last.apply)

    def _in_transaction(self, apply: Callable[[], Committed | None]) -> Committed | None:
        with self.conn.transaction():
            self._lock()
            if self.into is not None:
                shadow.enter(self.conn, self.into)
            return apply()

    def _read_again(self) -> bool:
        """After a transient error: if the reader's staged data went out of date (an archive
        run moved events), open it again and go on in place; else the task retries."""
        with contextlib.suppress(Exception):  # if the database is away, the task's retry it is
            if self.reader.stale(self.conn):
                log.info("slice %s of job %s reads again", self.key.slice_no, self.job.job_id)
                self.reader.close(self.conn)
                self.reader.open(self.conn)
                return True
        return False

    def _advance(self, done: Committed) -> None:
        """Once a batch has committed: this attempt's position and counts, then the hooks."""
        self.checkpoint = done.checkpoint
        self.version += 1
        self.processed += done.processed
        self.applied += done.applied
        for hook in self.hooks:
            hook.after_commit(done)
        if done.checkpoint is not None:
            self.reader.committed(self.job.job_id, done.checkpoint)

    def _standing(self) -> float | None:
        """Between batches (``hooks.Pace``): stop, as ``_lock`` would, if the slice was
        cancelled or taken over; otherwise the job's limit as stored."""
        standing = slices.slice_standing(
            self.conn, self.job.job_id, self.key.slice_no, self.key.owner, self.version
        )
        if not standing.ours:
            raise _Stop(_stopped(standing.status))
        return standing.rate

    def _lock(self) -> None:
        """First statement of a batch's transaction: the compare-and-set."""
        job_id, slice_no = self.job.job_id, self.key.slice_no
        if not slices.lock_slice_version(self.conn, job_id, slice_no, self.key.owner, self.version):
            raise _Stop(_stopped(slices.slice_status(self.conn, job_id, slice_no)))

    def _complete(self) -> None:
        """The slice has no events left: it is completed, in the transaction that found so."""
        slices.complete_slice(self.conn, self.job.job_id, self.key.slice_no)

    def _fold(self, fold_sql: str) -> Committed | None:
        """A full rebuild's batch as one statement: the handler's set-based fold reads the batch
        in PostgreSQL, and no event travels to Python (see IdempotentEventHandler.rebuild_sql)."""
        folded = self.reader.fold(self.conn, self.checkpoint, fold_sql, self.pace.limit)
        if folded is None:
            self._complete()
            return None
        n = folded.count
        return Committed(n, n, [], self._record(folded.last, processed=n, applied=n))

    def _catch_up_fold(self, fold_sql: str) -> Committed | None:
        """A catch-up's batch as one statement, when every event of it is new and continues
        its aggregate's watermark (the common case: a handler's first catch-up, or new events
        appended to its aggregates); the watermarks move with it, and no per-event marker is
        needed. Any other batch (a gap, a marker, an event of a rebuild) is the Python path's."""
        batch, params = self.reader.query(self.checkpoint, self.pace.limit)
        n, last = idempotency.fold_in_order(
            self.conn, self.handler.name, batch, params,
            covered=self.reader.covered is not None, fold_sql=fold_sql,
        )  # fmt: skip
        if last is None:
            self._complete()
            return None
        return Committed(n, n, [], self._record(last, processed=n, applied=n))

    def _whole_batch(self) -> Committed | None:
        """The batch's events handed over together."""
        batch = self.reader.read(self.conn, self.checkpoint, self.pace.limit)
        events = batch.events
        if not events:
            self._complete()
            return None
        if batch.poison:  # the next way, event by event, hands them to the error policy
            raise next(iter(batch.poison.values()))
        result = self._apply(events, self.known.of(batch))
        applied = len(result.applied)
        checkpoint = self._record(events[-1], processed=len(events), applied=applied)
        return Committed(len(events), applied, result.already_processed, checkpoint)

    def _event_by_event(self) -> Committed:
        """The batch again, each event in a savepoint: an event the handler fails on goes to the
        job's error policy, which may end the slice there (the events before it commit)."""
        batch = self.reader.read(self.conn, self.checkpoint, self.pace.limit)
        known = self.known.of(batch)
        applied = done = poisoned = 0
        already: list[UUID] = []
        failed = False
        for event in batch.events:
            try:
                with self.conn.transaction():  # a savepoint per event
                    if event["event_id"] in batch.poison:
                        raise batch.poison[event["event_id"]]
                    one = self._apply([event], known)
            except Exception as exc:
                if _propagates(exc):
                    raise
                self.on_error.failed(self.conn, self.key, event, exc)
                if self.on_error.stops:
                    failed = True
                    break
                poisoned += 1  # skipped or parked: not processed
            else:
                applied += len(one.applied)
                already += one.already_processed
            done += 1
        checkpoint = self.checkpoint
        if done:
            checkpoint = self._record(
                batch.events[done - 1], processed=done, applied=applied, poisoned=poisoned
            )
        return Committed(done, applied, already, checkpoint, failed=failed)

    def _apply(self, events: Sequence[Event], known: set[UUID]) -> BatchResult:
        if self.positional:
            # A full rebuild owns every event of its snapshot (no one else may claim them, see
            # idempotency.covered): no per-event markers, the checkpoint's compare-and-set
            # alone keeps a batch from being applied twice.
            self.handler.handle_batch(self.conn, events, is_replay=True)
            return BatchResult(applied=list(events), skipped=0, already_processed=[])
        return apply_batch(
            self.conn, self.handler, events, is_replay=True, known_processed=known,
            in_order=self.in_order,
        )  # fmt: skip

    def _record(
        self, last: Mapping[str, Any], *, processed: int, applied: int, poisoned: int = 0
    ) -> dict[str, Any]:
        """Write the batch's counts and new checkpoint (in its transaction); return the
        checkpoint, which becomes this attempt's only once the transaction has committed."""
        checkpoint = self.reader.checkpoint_after(last)
        slices.record_batch(
            self.conn, self.job.job_id, self.key.slice_no, checkpoint=checkpoint,
            last_event_id=last["event_id"], processed=processed, applied=applied,
            poisoned=poisoned,
        )  # fmt: skip
        return checkpoint


def _stopped(status: jobs.Status) -> SliceOutcome:
    """Why an attempt stops when its slice is no longer its own."""
    if status is jobs.Status.CANCELLED:
        return SliceOutcome.CANCELLED
    return SliceOutcome.SUPERSEDED
