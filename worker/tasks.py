"""Thin tasks: decode ids (a job id arrives as the text of a UUID and is a ``uuid.UUID`` from
here on), call one function of ``shared``, return a small JSON-able result."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from celery import Task
from celery.exceptions import Ignore
from celery.utils.log import get_task_logger

from shared import context, jobs, live, runner, shadow
from shared.celeryconf import FINALIZE_TASK, LIVE_STEP_TASK, LIVE_TASK, SHADOW_TASK, SLICE_TASK
from shared.errors import DatabaseUnavailable, ReplayFailed, SourceUnavailable
from shared.settings import Settings
from worker.app import app
from worker.progress import PROGRESS_EVENT, SliceProgress

log = get_task_logger(__name__)


def _retry_while_db_down(first: int, cap: int, **extra: Any) -> dict[str, Any]:
    """Task options: retry on a PostgreSQL outage (or a source's server's), forever, with backoff
    from ``first`` to ``cap`` seconds (the work resumes from its committed state, so retrying is
    always safe)."""
    return {
        "acks_late": True,
        "autoretry_for": (DatabaseUnavailable, SourceUnavailable),
        "retry_backoff": first,
        "retry_backoff_max": cap,
        "max_retries": None,
        **extra,
    }


def _context() -> context.Context:
    return context.process_context(Settings.from_env())


@app.task(
    name=SLICE_TASK,
    bind=True,
    throws=(ReplayFailed,),
    **_retry_while_db_down(2, 60, reject_on_worker_lost=True, retry_jitter=True),
)
def replay_slice(self: Task, job_id: str, slice_no: int) -> dict[str, Any]:
    """Replay one slice of a job from its checkpoint. Its progress shows in Flower as it goes
    (``SliceProgress``); a slice that fails raises ``ReplayFailed`` (FAILURE in Flower) once
    its failure is recorded."""
    key = UUID(job_id)
    progress = SliceProgress(self, job_id, slice_no)
    result = runner.run_slice(_context(), key, slice_no, task_id=self.request.id, progress=progress)
    if not result.ended_the_slice:
        # A copy that did not end the slice (superseded by a redelivered copy, sent before the
        # slice was dispatched again, cancelled, or the slice was already done) must not count
        # as the slice's part of the job's chord: the callback would fire before the slice is
        # done. Ignore() stores no result and is not counted; the message is acknowledged.
        log.info("slice %s/%s: %s", job_id, slice_no, result.status)
        raise Ignore()
    if result.status == runner.SliceOutcome.FAILED:
        progress.failed()
        raise ReplayFailed(
            f"slice {slice_no} of job {job_id} failed: {result.error}"
            f" (`replay resume {job_id}` retries from its checkpoint)"
        )
    return result.as_dict()


@app.task(name=FINALIZE_TASK, bind=True, throws=(ReplayFailed,), **_retry_while_db_down(2, 60))
def finalize(self: Task, _results: Any = None, *, job_id: str) -> dict[str, Any]:
    """The chord's callback, its error callback (a slice failed), and the link of a
    re-dispatched slice: derive the job's status from its slice rows (``jobs.finalize_job``;
    the reconciler calls it too). A job that failed raises, so that Flower shows FAILURE.

    ``job_id`` is keyword-only: Celery calls an error callback that takes more than one
    positional argument in-process, with (request, exc, traceback); this one it sends as a
    task, with the failed task's id as ``_results``."""
    key = UUID(job_id)
    ctx = _context()
    with ctx.pool.connection() as conn:
        status = jobs.finalize_job(conn, key)
        if status is jobs.Status.FAILED:
            raise ReplayFailed(f"job {job_id} failed: {jobs.job_error(conn, key)}")
        phase = None
        if status is jobs.Status.COMPLETED:  # a shadow rebuild's: caught up and ready
            phase = shadow.settle(conn, ctx.registry, key, on_catch_up=lambda: _catching_up(self))
    if phase is not None:  # Flower shows it in the finalization's result
        return {"job_id": job_id, "status": str(status), "shadow_phase": str(phase)}
    return {"job_id": job_id, "status": str(status)}


def _catching_up(task: Task) -> None:
    """Flower shows a shadow's catch-up as the finalization's progress (best effort)."""
    try:
        task.send_event(PROGRESS_EVENT, result=f"shadow {shadow.Phase.CATCHING_UP}")
    except Exception as exc:
        log.warning("the shadow's catch-up goes unannounced: %s", exc)


@app.task(name=SHADOW_TASK)
def shadow_phase(job_id: str, phase: str) -> dict[str, Any]:
    """A shadow rebuild's new phase, as Flower records it (``dispatch.announce_shadow``: an
    operator changed it outside any task); PostgreSQL has the phase already."""
    return {"job_id": job_id, "shadow_phase": phase}


@app.task(name=LIVE_TASK, **_retry_while_db_down(1, 30))
def live_events(consumer: str, event_ids: list[str]) -> dict[str, Any]:
    """Hand new events to a handler with is_replay=False (the live path, on the live queue)."""
    result = live.process_live(_context(), consumer, event_ids)
    return {"consumer": consumer, "applied": len(result.applied), "skipped": result.skipped}


@app.task(name=LIVE_STEP_TASK, **_retry_while_db_down(1, 30))
def live_step(handlers: list[str] | None = None) -> dict[str, Any]:
    """The Celery-driven live consumer: one step (everything committed since the last) for each
    live handler, or the named ones. Steps of one handler serialize on its checkpoint row, so
    this can run beside `replay live` and beside itself."""
    ctx = _context()
    counts: dict[str, Any] = {}
    with ctx.pool.connection() as conn:
        for handler in live.live_handlers(ctx, handlers):
            result = live.step(conn, handler)
            counts[handler.name] = {"events": result.events, "applied": result.applied}
    return counts
