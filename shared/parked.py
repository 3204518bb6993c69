"""Parked events: a job's events its handler failed on under ``on_error=park``, run again after
a fix (``replay retry-parked JOB_ID``)."""

from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID

from shared import db, jobs, shadow, slices, sources
from shared.applying import apply_batch
from shared.context import Context
from shared.errors import SourceUnavailable
from shared.hooks import format_traceback


@dataclass(frozen=True)
class RetryResult:
    resolved: int
    still_failing: int


def retry_parked(ctx: Context, job_id: UUID) -> RetryResult:
    """Run a job's parked events through its handler again (after a fix), in per-aggregate
    order, each in its own transaction. Those that pass are marked processed and resolved; those
    that fail again stay parked with the new error."""
    resolved = failing = 0
    with ctx.pool.connection() as conn:
        job = jobs.load_job(conn, job_id)
        handler = ctx.registry.get(job.consumer_name)
        into = shadow.find(conn, job_id)
        if into is not None:  # a shadow rebuild's: into its tables, under its ledger
            shadow.check_writable(into)
            handler = shadow.in_shadow(handler, into)
        source = sources.get(job.source)
        parked = slices.parked_events(conn, job_id, unresolved_only=True)
        for p in parked:
            with conn.transaction():
                if into is not None:
                    shadow.enter(conn, into)
                try:
                    with conn.transaction():
                        # read again inside: a message that still cannot be decoded stays parked
                        events = source.reread(conn, job.scope, [p])
                        apply_batch(conn, handler, events, is_replay=True, in_order=source.progress)
                except Exception as exc:
                    if db.is_transient(exc) or isinstance(exc, SourceUnavailable):
                        raise
                    failing += 1
                    slices.park_event(
                        conn, job_id=job.job_id, slice_no=p["slice_no"],
                        event=p, handler_name=handler.name,
                        error=f"{type(exc).__name__}: {db.first_line(exc)}",
                        traceback=format_traceback(exc),
                    )  # fmt: skip
                    continue
                slices.resolve_parked(conn, job_id, p["event_id"])
                resolved += 1
    return RetryResult(resolved, failing)
