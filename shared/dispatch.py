"""Sending slice tasks: the chord of a new (or resumed) job, and single re-dispatched slices.

Used by the coordinator and by the reconciler (which runs in a worker process); tasks are sent
by name, so neither side imports the other.
"""

from __future__ import annotations

from collections.abc import Sequence
from uuid import UUID

from celery import Celery, chord

from shared.celeryconf import FINALIZE_TASK, SLICE_TASK
from shared.settings import Settings


def send_job(
    app: Celery, settings: Settings, job_id: str, slices: Sequence[tuple[int, str]]
) -> None:
    """A chord: one task per (slice_no, task_id), then the callback that finalizes the job.
    Call only after the transaction that wrote the slice rows has committed."""
    header = [
        app.signature(SLICE_TASK, args=(job_id, n), task_id=tid, queue=settings.queue)
        for n, tid in slices
    ]
    body = app.signature(FINALIZE_TASK, kwargs={"job_id": job_id}, queue=settings.queue)
    chord(header, app=app)(body)


def send_slice(
    app: Celery, settings: Settings, job_id: UUID | str, slice_no: int, task_id: str
) -> None:
    """One slice outside any chord (a re-dispatch), linked to a finalization of its job: the
    job completes when its last slice does, whether or not the original chord still can."""
    # A link callback receives the slice's result as its first argument, like a chord body.
    finalize = app.signature(FINALIZE_TASK, kwargs={"job_id": str(job_id)}, queue=settings.queue)
    app.signature(SLICE_TASK, args=(str(job_id), slice_no), task_id=task_id,
                  queue=settings.queue).apply_async(link=finalize)  # fmt: skip
