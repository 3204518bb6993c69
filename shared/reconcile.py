"""The reconciler: repairs what lost messages and lost callbacks leave behind.

Run every ``reconcile_seconds`` by the scheduler process (a thread of the worker started with
``--beat``: ``worker.steps``) and on demand by ``replay reconcile``. Each pass, under an
advisory lock so that passes never overlap:

1. finalizes every unfinished job whose slices are all done (the chord callback may never run:
   a header task's message lost, the callback's message lost, results flushed);
2. re-dispatches slices nobody works on: running with a heartbeat older than ``stale_seconds``
   (the worker died: SIGKILL, OOM, a lost machine), or pending since a dispatch older than that
   whose message no longer waits in the queue (Redis restarted without persistence, FLUSHALL, or
   the message was delivered to a worker that died before starting it).

Re-dispatching is always safe: a slice resumes from its checkpoint, the new attempt takes
ownership, an older copy that is somehow still alive stops at its next batch, and one still
queued is refused (only a slice's latest task id may take it).
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from typing import Any

from celery import Celery

from shared import broker, db, jobs, queries, shadow, slices
from shared.dispatch import send_slice
from shared.handlers import load_registry
from shared.jobs import Status
from shared.settings import Settings

log = logging.getLogger(__name__)
QUERIES = queries.load("jobs")

_LOCK_KEY = 0x7265636F6E63  # "reconc"
# A slice re-dispatched this many times without ending is failed instead: something about it
# (not the workers) is broken, and an operator should look (then `replay resume`).
MAX_ATTEMPTS = 25


@dataclass
class ReconcileReport:
    finalized: list[str] = field(default_factory=list)
    redispatched: list[tuple[str, int]] = field(default_factory=list)
    given_up: list[tuple[str, int]] = field(default_factory=list)
    waiting: int = 0  # stale-looking pending slices whose message is still queued
    skipped: bool = False  # another pass held the lock

    def as_dict(self) -> dict[str, Any]:
        return {
            "finalized": self.finalized,
            "redispatched": [f"{j}/{n}" for j, n in self.redispatched],
            "given_up": [f"{j}/{n}" for j, n in self.given_up],
            "waiting": self.waiting,
            "skipped": self.skipped,
        }


def reconcile(settings: Settings, app: Celery) -> ReconcileReport:
    """One pass (skipped if another holds the lock): finalize what is done, then re-dispatch
    (or give up on) the slices nobody works on."""
    report = ReconcileReport()
    with db.connect(settings) as conn:
        conn.execute(QUERIES["reconciler_lock_timeout"])
        locked = conn.execute(QUERIES["try_reconciler_lock"], {"key": _LOCK_KEY}).fetchone()
        if not locked or not locked["ok"]:
            report.skipped = True
            return report
        try:
            for job_id in jobs.unfinished_jobs(conn):
                if jobs.finalize_job(conn, job_id).final:
                    report.finalized.append(str(job_id))
            _settle_shadows(conn, settings)
            _repair_stale_slices(conn, settings, app, report)
        finally:
            conn.execute(QUERIES["release_reconciler_lock"], {"key": _LOCK_KEY})
    return report


def _settle_shadows(conn: db.Connection, settings: Settings) -> None:
    """Shadow rebuilds whose job completed but which are not ready yet (a finalization that
    did not run, or a crash while catching up): caught up and made ready."""
    unsettled = shadow.unsettled(conn)
    if unsettled:
        registry = load_registry(settings.handler_modules)
        for job_id in unsettled:
            try:
                shadow.settle(conn, registry, job_id)
            except Exception:  # one shadow must not stop the repair of every job
                log.exception("the shadow of job %s could not be settled; next pass", job_id)


def _repair_stale_slices(
    conn: db.Connection, settings: Settings, app: Celery, report: ReconcileReport
) -> None:
    stale = slices.stale_slices(conn, settings.stale_seconds)
    queued = (
        broker.queued_task_ids(settings.broker_url, [settings.queue])
        if any(s["status"] == Status.PENDING for s in stale)
        else set()
    )
    for s in stale:
        job_id, slice_no = s["job_id"], s["slice_no"]
        if s["status"] == Status.PENDING and (queued is None or s["task_id"] in queued):
            # Still waiting its turn (or the broker cannot tell us, and a message delivered to
            # a dead worker comes back with the visibility timeout).
            report.waiting += 1
            continue
        if s["attempts"] >= MAX_ATTEMPTS:
            error = f"given up after {s['attempts']} attempts without ending"
            slices.fail_slice(conn, job_id, slice_no, error)
            report.given_up.append((str(job_id), slice_no))
            jobs.finalize_job(conn, job_id)
            continue
        task_id = str(uuid.uuid4())
        if not slices.redispatch(conn, job_id, slice_no, task_id, settings.stale_seconds):
            continue  # alive after all
        label = slices.labels(conn, job_id).get(slice_no, f"job {job_id} · slice {slice_no}")
        send_slice(app, settings, job_id, slice_no, task_id, f"{label} · re-dispatched")
        report.redispatched.append((str(job_id), slice_no))
        log.warning(
            "re-dispatched slice %s of job %s (%s, no sign of life for %ss)",
            slice_no, job_id, s["status"], settings.stale_seconds,
        )  # fmt: skip
