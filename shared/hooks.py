"""The policies around a slice's loop of batches (``shared.runner``), in the manner of dramatiq's
middleware: the loop fires hooks and asks a policy, and knows nothing of what they do.

* ``Hook``: called before each batch's transaction and after each commit. ``Pace`` keeps the
  job's speed limit, ``KnownEvents`` the cache of processed markers, ``ProgressReport`` reports
  the slice's progress.
* ``ErrorPolicy``: what becomes of an event its handler fails on (the job's ``on_error``), one
  class per ``OnError`` member: ``FailSlice``, ``SkipEvent``, ``ParkEvent``.
"""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar
from uuid import UUID

from shared import db, slices
from shared.handlers import Event
from shared.idempotency import ProcessedCache
from shared.jobs import OnError
from shared.sources import Batch
from shared.throttle import Throttle, batch_limit, effective_rate, sleep_until

log = logging.getLogger(__name__)

#: a slice re-reads its job's limit at most this long apart between batches, in seconds
#: (`replay throttle` takes effect); while it waits for the limit, after every step of the wait
RATE_REFRESH_SECONDS = 2.0


@dataclass(frozen=True)
class Committed:
    """What one batch's transaction committed."""

    #: events the checkpoint moved past
    processed: int
    applied: int
    #: events the database (not the cache) said were processed before: worth caching
    already_processed: list[UUID]
    #: the slice's checkpoint after the batch
    checkpoint: dict[str, Any] | None
    #: the error policy failed the slice in this transaction (``FailSlice``)
    failed: bool = False


class Hook:
    """A policy the loop calls at fixed points; each does nothing unless overridden."""

    def before_batch(self) -> None:
        """Before a batch's transaction: none is open, no lock is held."""

    def after_commit(self, batch: Committed) -> None:
        """After a batch's transaction committed."""


class Pace(Hook):
    """The job's speed limit, before each batch: how many events the next batch may hold
    (``limit``), and the wait for its share of the job's rate, in batches of about 0.1 s of
    events.

    The wait is outside any transaction (no lock, no snapshot held) and in steps
    (``sleep_until``): between two, ``standing`` is read again (it raises to stop the attempt:
    a cancel or a takeover) and a lifted limit ends the wait, within a step. A new limit keeps
    the wait: the reservation taken stays due when it was."""

    def __init__(
        self,
        throttle: Throttle,
        job_id: UUID,
        batch_size: int,
        stored_rate: float | None,
        standing: Callable[[], float | None],
    ) -> None:
        self.throttle, self.key, self.batch_size = throttle, str(job_id), batch_size
        #: reads the job's limit as stored, or raises to stop this attempt
        self.standing = standing
        self.stored: float | None = None
        self.rate: float | None = None
        self.limit = batch_size
        self._take(stored_rate)
        self.read_at = time.monotonic()

    def before_batch(self) -> None:
        if time.monotonic() - self.read_at > RATE_REFRESH_SECONDS:
            self._refresh()
        if self.rate is None:
            self.limit = self.batch_size
            return
        self.limit = batch_limit(self.rate, self.batch_size)
        wait = self.throttle.reserve(self.key, self.limit, self.rate)
        if wait > 0:
            sleep_until(time.monotonic() + wait, self._still_limited)

    def _still_limited(self) -> bool:
        self._refresh()
        return self.rate is not None

    def _refresh(self) -> None:
        stored = self.standing()
        self.read_at = time.monotonic()
        self._take(stored)

    def _take(self, stored: float | None) -> None:
        """Take up the stored limit, at least the minimum (``effective_rate``)."""
        rate = effective_rate(stored)
        if rate != stored and stored != self.stored:  # say so once per stored value
            log.warning("job %s: a limit of %s events/s is applied as %s", self.key, stored,
                        "no limit" if rate is None else f"{rate:g} events/s")  # fmt: skip
        self.stored, self.rate = stored, rate


class KnownEvents(Hook):
    """Which events of a batch are known as processed without asking processed_event: covered
    by the handler's last completed full rebuild (the source says which), or cached.

    Ask the cache only while it can help: it knows only events processed before, and
    PostgreSQL tells us whether the last batch had any. A fresh catch-up thus pays for one
    lookup, not one per batch (MGET of a thousand misses was a fifth of a batch's time). A
    rebuild asks nothing: it replaced the cache epoch, so nothing can be cached for it yet. Nor
    do events of the event table (``cached=False``): their aggregate's watermark answers for a
    whole batch at the cost of a row per aggregate, which beats a cache entry per event."""

    def __init__(
        self, cache: ProcessedCache, handler: str, epoch: str, *, rebuild: bool, cached: bool = True
    ) -> None:
        self.cache, self.handler, self.epoch, self.rebuild = cache, handler, epoch, rebuild
        self.cached = cached
        self.ask = cached and not rebuild
        self.hits = 0

    def of(self, batch: Batch) -> set[UUID]:
        known = set(batch.covered)
        if not self.ask or len(known) == len(batch.events):
            return known
        ids = [e["event_id"] for e in batch.events if e["event_id"] not in known]
        cached = self.cache.seen(self.handler, self.epoch, ids)
        self.hits = len(cached)
        return known | cached

    def after_commit(self, batch: Committed) -> None:
        """The cache learns only the events that PostgreSQL said were processed before: those
        are the ones a catch-up meets again. Caching every event just applied cost as much as
        the rest of the batch (one SET per event) for entries a rebuild never reads."""
        if not self.cached:
            return
        self.cache.mark(self.handler, self.epoch, batch.already_processed)
        self.ask = not self.rebuild and bool(batch.already_processed or self.hits)
        self.hits = 0


#: reports a slice's progress: (processed, total, events per second of this attempt)
Progress = Callable[[int, int, float], None]


class ProgressReport(Hook):
    """Reports the slice's processed count, its total and this attempt's rate after each commit
    (best effort: the slice row holds the truth)."""

    def __init__(self, report: Progress, processed: int, total: int) -> None:
        self.report, self.processed, self.total = report, processed, total
        self.started, self.started_with = time.monotonic(), processed

    def after_commit(self, batch: Committed) -> None:
        self.processed += batch.processed
        elapsed = time.monotonic() - self.started
        rate = (self.processed - self.started_with) / elapsed if elapsed > 0 else 0.0
        self.report(self.processed, self.total, rate)


@dataclass(frozen=True)
class SliceKey:
    """Which slice attempt an error policy acts for."""

    job_id: UUID
    slice_no: int
    owner: UUID
    handler_name: str


class ErrorPolicy:
    """What becomes of an event the handler failed on, in the batch's transaction (the event's
    savepoint has been rolled back). ``stops``: the slice ends at the event (the events before
    it commit); otherwise the event stays unapplied and unmarked, and the slice goes on."""

    stops: ClassVar[bool] = False

    def failed(self, conn: db.Connection, key: SliceKey, event: Event, exc: Exception) -> None:
        raise NotImplementedError


class FailSlice(ErrorPolicy):
    """``fail``: the slice fails at the event, with the error, traceback and event id;
    ``resume_job`` retries from that event."""

    stops = True

    def failed(self, conn: db.Connection, key: SliceKey, event: Event, exc: Exception) -> None:
        slices.fail_slice(
            conn, key.job_id, key.slice_no,
            f"{type(exc).__name__} on event {event['event_id']}"
            f" ({event['aggregate_id']} #{event['sequence_num']}):"
            f" {db.first_line(exc)}\n{format_traceback(exc)}",
            owner=key.owner, event_id=event["event_id"],
        )  # fmt: skip


class SkipEvent(ErrorPolicy):
    """``skip``: the event is left out (logged, counted as poisoned in the slice row)."""

    def failed(self, conn: db.Connection, key: SliceKey, event: Event, exc: Exception) -> None:
        log.error("slice %s of job %s: skipped event %s (%s)", key.slice_no, key.job_id,
                  event["event_id"], db.first_line(exc))  # fmt: skip


class ParkEvent(ErrorPolicy):
    """``park``: the event is left out and recorded in ``parked_event``, for ``retry-parked``."""

    def failed(self, conn: db.Connection, key: SliceKey, event: Event, exc: Exception) -> None:
        log.error("slice %s of job %s: parked event %s (%s)", key.slice_no, key.job_id,
                  event["event_id"], db.first_line(exc))  # fmt: skip
        slices.park_event(
            conn, job_id=key.job_id, slice_no=key.slice_no, event=event,
            handler_name=key.handler_name, error=f"{type(exc).__name__}: {db.first_line(exc)}",
            traceback=format_traceback(exc),
        )  # fmt: skip


POLICIES: dict[OnError, ErrorPolicy] = {
    OnError.FAIL: FailSlice(),
    OnError.SKIP: SkipEvent(),
    OnError.PARK: ParkEvent(),
}


def error_policy(on_error: OnError, *, positional: bool) -> ErrorPolicy:
    """The job's policy. In a full rebuild (``positional``) a skipped event is parked instead:
    no marker would ever bring it back (a catch-up takes the rebuild's events as processed)."""
    if positional and on_error is OnError.SKIP:
        return POLICIES[OnError.PARK]
    return POLICIES[on_error]


def format_traceback(exc: BaseException) -> str:
    return "".join(traceback.format_exception(exc))
