"""Sending slice tasks: the chord of a new (or resumed) job, and single re-dispatched slices;
and the check, before a job is written, that the broker and the result backend can be reached.

Used by the coordinator and by the reconciler (which runs in a worker process); tasks are sent
by name, so neither side imports the other.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any
from uuid import UUID

import redis
from celery import Celery, Signature, chord
from celery.exceptions import ImproperlyConfigured
from redis.backoff import NoBackoff
from redis.retry import Retry

from shared import db
from shared import slices as slices_table
from shared.celeryconf import FINALIZE_TASK, SENDER_TIMEOUT_SECONDS, SHADOW_TASK, SLICE_TASK
from shared.db import first_line
from shared.errors import ConfigurationError, ReplayError, ServiceUnavailable
from shared.settings import Settings, redact

log = logging.getLogger(__name__)


def check_reachable(app: Celery, timeout: float = SENDER_TIMEOUT_SECONDS) -> None:
    """Raise unless ``app``'s broker and result backend can be named and answer within
    ``timeout`` seconds each: ``ConfigurationError`` for a URL that Celery or kombu cannot use,
    ``ServiceUnavailable`` for a server that does not answer. Call it before writing a job, so
    that a closed door refuses the submit instead of leaving a job that was never sent."""
    broker_url = str(app.conf.broker_write_url)
    backend_url = str(app.conf.result_backend)
    try:
        # Both parse their URL here (kombu: KeyError for an unknown transport, ValueError for a
        # bad port; Celery: ImproperlyConfigured, or ValueError for rediss:// without
        # ssl_cert_reqs), and connect only when used.
        connection = app.connection_for_write(
            transport_options={"socket_connect_timeout": timeout, "socket_timeout": timeout}
        )
        backend = app.backend
    except (KeyError, ValueError, ImportError, ImproperlyConfigured) as exc:
        raise ConfigurationError(
            f"the Celery broker or result backend cannot be used"
            f" ({redact(broker_url)}, {redact(backend_url)}): {first_line(exc)}"
        ) from None
    try:
        with connection:
            connection.ensure_connection(max_retries=1, interval_start=0, timeout=timeout)
    except Exception as exc:  # kombu's OperationalError, OSError, redis errors: all one answer
        raise ServiceUnavailable(
            f"the Celery broker at {redact(broker_url)} does not accept a connection"
            f" ({first_line(exc)}); nothing was sent or written"
        ) from None
    params = getattr(backend, "connparams", None)
    if params is not None:  # Redis (the only result backend Settings accept)
        _ping_redis(params, timeout, backend_url)


def _ping_redis(params: dict[str, Any], timeout: float, url: str) -> None:
    # A client of its own with no retries: the backend's client retries with backoff (redis-py)
    # and then again per Celery's retry_policy.
    pool = redis.ConnectionPool(
        **{**params, "socket_connect_timeout": timeout, "socket_timeout": timeout},
        retry=Retry(NoBackoff(), 0),
    )
    try:
        redis.Redis(connection_pool=pool).ping()
    except (redis.RedisError, OSError) as exc:
        raise ServiceUnavailable(
            f"the Celery result backend at {redact(url)} does not accept a connection"
            f" ({first_line(exc)}); nothing was sent or written"
        ) from None
    finally:
        pool.disconnect()


def send_job(
    app: Celery,
    settings: Settings,
    job_id: UUID,
    slices: Sequence[tuple[int, str]],
    labels: Mapping[int, str] | None = None,
) -> None:
    """A chord: one task per (slice_no, task_id), then the callback that finalizes the job.
    Call only after the transaction that wrote the slice rows has committed.

    A slice that fails raises (FAILURE in Flower), and a chord with a failed part never calls
    its body: the body's error callback, the same finalization, runs instead (and is FAILURE
    too when the job failed). Each slice task carries its label (``slices.labels``) as the
    text Flower shows for its arguments."""
    labels = _labels(settings, job_id) if labels is None else labels
    header = [_slice(app, settings, job_id, n, tid, labels.get(n)) for n, tid in slices]
    chord(header, app=app)(_finalize(app, settings, job_id, on_error=True))


def send_slice(
    app: Celery, settings: Settings, job_id: UUID, slice_no: int, task_id: str, label: str = ""
) -> None:
    """One slice outside any chord (a re-dispatch), linked to a finalization of its job: the
    job completes (or fails) when its last slice does, whether or not the original chord still
    can."""
    # A link callback receives the slice's result as its first argument, like a chord body; an
    # error callback, the failed task's id.
    _slice(app, settings, job_id, slice_no, task_id, label or None).apply_async(
        link=_finalize(app, settings, job_id), link_error=_finalize(app, settings, job_id)
    )


def announce_shadow(app: Celery, settings: Settings, job_id: UUID, phase: str) -> None:
    """Flower's record of a shadow rebuild's new phase, where an operator changed it outside
    any task (a submit, a cutover, a rollback, a discard): a small task whose arguments read
    ``job <id> · shadow cut over`` and whose result is ``{job_id, shadow_phase}``. Sent after
    the change committed, best effort: ``replay status`` reads the phase from PostgreSQL."""
    try:
        app.signature(
            SHADOW_TASK, args=(str(job_id), phase), queue=settings.queue,
            argsrepr=f"job {job_id} · shadow {phase.replace('_', ' ')}",
        ).apply_async()  # fmt: skip
    except Exception as exc:
        log.warning("job %s: Flower will not show its shadow %s: %s", job_id, phase, exc)


def _slice(
    app: Celery, settings: Settings, job_id: UUID, slice_no: int, task_id: str, label: str | None
) -> Signature:
    options: dict[str, Any] = {"task_id": task_id, "queue": settings.queue}
    if label:
        options["argsrepr"] = label
    return app.signature(SLICE_TASK, args=(str(job_id), slice_no), **options)


def _finalize(
    app: Celery, settings: Settings, job_id: UUID, *, on_error: bool = False
) -> Signature:
    body = app.signature(FINALIZE_TASK, kwargs={"job_id": str(job_id)}, queue=settings.queue,
                         argsrepr=f"job {job_id}")  # fmt: skip
    if on_error:
        body.link_error(_finalize(app, settings, job_id))
    return body


def _labels(settings: Settings, job_id: UUID) -> dict[int, str]:
    """The slices' labels, read after the commit that wrote them; none if that fails (a label
    is not worth failing a dispatch for)."""
    try:
        with db.connect(settings) as conn:
            return slices_table.labels(conn, job_id)
    except ReplayError as exc:
        log.warning("job %s: its slices go unlabelled: %s", job_id, exc)
        return {}
