"""Planning a replay job: from a validated request to the committed job and slice rows.

One REPEATABLE READ transaction: freeze the source's scope, check the request against what the
source holds, reset the handler if asked, cut and count the slices, then write the job row once
(with its final counts, cache epoch and coverage) and its slice rows. The caller dispatches the
slices only after this commits (a worker could otherwise look for rows that do not exist yet).
"""

from __future__ import annotations

import logging
import time
import uuid
from uuid import UUID

from shared import db, idempotency, jobs, queries, shadow, slicing, sources
from shared.db import IsolationLevel
from shared.errors import ActiveJobExists, InvalidJobState, InvalidRequest
from shared.handlers import IdempotentEventHandler
from shared.jobs import Status
from shared.requests import ReplayRequest
from shared.scope import Scope
from shared.settings import Settings
from shared.slicing import SliceBy

log = logging.getLogger(__name__)
QUERIES = queries.load("jobs")


def check_fit(
    request: ReplayRequest, handler: IdempotentEventHandler, source: sources.Source
) -> None:
    """What the request asks of the handler and the source, before anything is written."""
    if request.slice_by not in source.slice_by:
        raise InvalidRequest(
            f"source {source.name!r} cannot slice by {request.slice_by}"
            f" (it can by {', '.join(source.slice_by)})"
        )
    if request.slice_by is SliceBy.TIME and handler.requires_order:
        raise InvalidRequest(
            f"handler {handler.name!r} needs per-aggregate order, so it cannot be replayed in"
            " time slices; use slice_by='aggregate'"
        )
    if request.reset and request.scope.aggregate_id is not None and not source.coverage:
        raise InvalidRequest(
            f"source {source.name!r} cannot reset one aggregate (its processed markers cannot be"
            " found by aggregate); rebuild the whole handler instead"
        )


def plan(
    settings: Settings,
    job_id: UUID,
    request: ReplayRequest,
    handler: IdempotentEventHandler,
    source: sources.Source,
) -> list[str]:
    """Plan the job in one transaction; returns the task ids of its slices (none for an empty
    scope: the job is completed at once). Raises ``ActiveJobExists`` if the consumer has an
    unfinished job, ``InvalidRequest`` or ``InvalidJobState`` for a request the store refuses."""
    started = time.perf_counter()
    scope = request.scope
    with db.connect(settings) as conn:
        _before_the_snapshot(conn, handler.name)
        conn.isolation_level = IsolationLevel.REPEATABLE_READ
        with conn.transaction():
            conn.execute(QUERIES["planning_memory"])
            if request.reset and not request.shadow:
                # Before the scope is frozen (LOCK takes no snapshot), held until commit: no
                # marker can be committed between the freeze and the reset, where live
                # processing would apply an event whose effect the reset then wipes while its
                # marker (invisible to the job) survives, so that the rebuild skips it. Two
                # rebuilds of one handler queue here (the mode conflicts with itself), so the
                # second one sees the first one's job below and resets nothing.
                conn.execute(QUERIES["lock_markers"])
            frozen = source.prepare(conn, scope, source.freeze(conn))
            _claim(conn, handler.name)
            _check_event_types(conn, source, scope)
            covered, epoch = _prepare_handler(conn, job_id, request, handler, source, frozen)
            catches_up_to = _catches_up_to(request, source, frozen)
            if not request.reset:
                frozen = source.narrow(conn, scope, frozen, request.slice_by, handler.name, job_id)
            count = request.slices
            if count is None:
                count = slicing.default_slice_count(source.count(conn, scope, frozen))
            planned = source.plan(conn, scope, frozen, request.slice_by, count)
            task_ids = [str(uuid.uuid4()) for _ in planned]
            planning_ms = round((time.perf_counter() - started) * 1000)
            job = jobs.Job(
                job_id=job_id, consumer_name=handler.name, replay_type=request.replay_type,
                scope=scope, status=Status.PENDING if planned else Status.COMPLETED,
                slice_by=request.slice_by, reset=request.reset, frozen=frozen,
                cache_epoch=epoch, total_events=sum(p.total_events for p in planned),
                on_error=request.on_error, covered_snapshot=covered,
                max_events_per_second=request.max_events_per_second, source=request.source,
                catches_up_to=catches_up_to,
            )  # fmt: skip
            try:
                with conn.transaction():
                    jobs.insert_job(conn, job, planned, task_ids, planning_ms)
            except ActiveJobExists:
                # A submit that committed after this one froze its scope: the unique index of
                # active jobs sees it, the snapshot does not (another connection does).
                with db.connect(settings) as other:
                    _claim(other, handler.name)
                raise
    log.info("planned job %s: %d slices in %d ms", job_id, len(planned), planning_ms)
    return task_ids


def _before_the_snapshot(conn: db.Connection, consumer: str) -> None:
    """What planning does before its transaction takes its snapshot. The handler's state row,
    created on first use, is created here: concurrent submits creating it inside theirs would
    fail to serialize (REPEATABLE READ) instead of one of them being refused as
    ActiveJobExists. And a shadow's swap of the consumer's tables is held off until this
    connection closes after the commit, or waited for (``hold_swaps_off`` in jobs.sql)."""
    idempotency.current_epoch(conn, consumer)
    conn.execute(QUERIES["hold_swaps_off"], {"consumer": consumer})


def _catches_up_to(request: ReplayRequest, source: sources.Source, frozen: str) -> str | None:
    """A catch-up of everything: once it completes with nothing skipped or parked, all it saw
    is processed (0012_caught_up)."""
    whole = not request.reset and request.scope == Scope() and source.progress
    return frozen if whole else None


def _claim(conn: db.Connection, consumer: str) -> None:
    """One active job per consumer: refuse, naming it, when there is one already (before the
    reset; the unique index of active jobs still decides a race)."""
    active = jobs.active_job_id(conn, consumer)
    if active is not None:
        raise ActiveJobExists(
            f"consumer {consumer!r} already has an active job ({active});"
            " wait for it, or cancel it with `replay cancel`"
        )


def _check_event_types(conn: db.Connection, source: sources.Source, scope: Scope) -> None:
    if not scope.event_types:
        return
    missing = source.missing_event_types(conn, scope.event_types)
    if missing:
        known = ", ".join(source.known_event_types(conn)) or "none"
        raise InvalidRequest(
            f"no event in the store has type {', '.join(map(repr, missing))} (known: {known})"
        )


def _prepare_handler(
    conn: db.Connection,
    job_id: UUID,
    request: ReplayRequest,
    handler: IdempotentEventHandler,
    source: sources.Source,
    frozen: str,
) -> tuple[str | None, str]:
    """Reset the handler if asked, record a positional rebuild, and return what the job is
    planned with: its coverage (the frozen scope of the handler's last completed full rebuild,
    which a catch-up skips; only for a source with coverage, a rebuild applies everything
    again) and the handler's cache epoch (a reset starts a new one). A shadow rebuild resets
    nothing: it makes the shadow's tables and ledger (``shadow.prepare``)."""
    if request.shadow:  # the live handler is left alone: the shadow has a ledger of its own
        made = shadow.prepare(conn, job_id, handler, frozen)
        return None, idempotency.current_epoch(conn, made.ledger)
    full_rebuild = request.reset and request.scope == Scope()
    rebuild = idempotency.latest_rebuild(conn, handler.name) if source.coverage else None
    if rebuild is not None and not rebuild.completed and not full_rebuild:
        raise InvalidJobState(
            f"the last full rebuild of {handler.name!r} (job {rebuild.job_id}) did not"
            f" complete: `replay resume {rebuild.job_id}`, or rebuild again with --reset"
        )
    if request.reset:
        handler.reset(conn, request.scope.aggregate_id)
        idempotency.clear_markers(conn, handler.name, request.scope.aggregate_id)
    if full_rebuild and source.coverage:
        idempotency.start_rebuild(conn, handler.name, job_id, frozen)
    covered = rebuild.snapshot if rebuild is not None and not request.reset else None
    return covered, idempotency.current_epoch(conn, handler.name)
