"""Revoke and Terminate on a replay slice (Flower's buttons, ``celery control revoke``) cancel
its job, as ``replay cancel`` does: every slice stops at its next batch boundary, with what it
committed kept, and ``replay resume`` goes on from the checkpoints.

Celery's own revoke would kill the process running the slice (Terminate), or drop its message
(Revoke): the job then waited for a slice nobody ran, until the reconciler sent it again a minute
later. So this worker answers ``revoke`` itself for the slice tasks it holds (running or
received), and leaves every other task id to Celery's command. A slice revoked before any worker
received it is dropped by the worker that receives it; that worker cancels its job then
(``task_revoked``).
"""

from __future__ import annotations

import logging
from typing import Any
from uuid import UUID

from celery.signals import task_revoked
from celery.utils.functional import maybe_list
from celery.worker import control
from celery.worker import state as worker_state

from shared import db, jobs
from shared.celeryconf import SLICE_TASK
from shared.errors import InvalidJobState, ReplayError
from shared.settings import Settings

log = logging.getLogger(__name__)

_celery_revoke = control.Panel.data["revoke"]


@control.control_command(variadic="task_id", signature="[id1 [id2 [... [idN]]]]")
def revoke(state: Any, task_id: Any, terminate: bool = False, signal: Any = None,
           **kwargs: Any) -> dict[str, Any]:  # fmt: skip
    """Revoke tasks by id; a replay slice's job is cancelled instead (see the module)."""
    ids = set(maybe_list(task_id) or [])
    held = [*worker_state.active_requests, *worker_state.reserved_requests]
    slices = {r.id: r for r in held if r.name == SLICE_TASK and r.id in ids}
    said = [_cancel(r.args[0], r.args[1], r.id) for r in slices.values()]
    rest = ids - slices.keys()
    if rest:
        reply = _celery_revoke(state, list(rest), terminate=terminate, signal=signal, **kwargs)
        said.append(str(reply.get("ok", reply)))
    return {"ok": "; ".join(said)}


@task_revoked.connect
def _revoked_on_receipt(request: Any = None, terminated: bool = False, **_: Any) -> None:
    """A slice message dropped because its id was revoked before it ran."""
    if request is not None and getattr(request, "name", None) == SLICE_TASK and not terminated:
        _cancel(request.args[0], request.args[1], request.id)


def _cancel(job_id: str, slice_no: int, task_id: str) -> str:
    try:
        with db.connect(Settings.from_env()) as conn:
            jobs.cancel_job(conn, UUID(job_id))
    except InvalidJobState as exc:
        return f"slice {slice_no} of job {job_id}: {exc}"
    except ReplayError as exc:
        log.error("revoke of slice %s of job %s (task %s): %s", slice_no, job_id, task_id, exc)
        return f"slice {slice_no} of job {job_id}: could not cancel its job: {exc}"
    line = (
        f"revoke of slice {slice_no} (task {task_id}) cancels job {job_id}: its slices stop at"
        f" their next batch; `replay resume {job_id}` goes on"
    )
    log.warning("%s", line)
    return line
