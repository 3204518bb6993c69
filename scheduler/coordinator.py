"""The Python API of the scheduler side: submit, inspect, wait for, cancel, resume and throttle
replay jobs. Every step is a function of ``shared``, called in one direction: the request is
validated (``shared.requests``), planned and committed (``shared.planning``), then dispatched
(``shared.dispatch``); the job is read back through ``shared.views``.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import threading
import time
import uuid
from collections.abc import Iterator
from functools import cached_property
from typing import Any

from celery import Celery

from scheduler import pools
from shared import (
    celeryconf,
    db,
    dispatch,
    jobs,
    planning,
    reconcile,
    shadow,
    shadow_diff,
    shadow_ops,
    sources,
    views,
)
from shared.celeryconf import sender_config
from shared.errors import BrokerUnavailable, JobTimeout
from shared.handlers import Registry, load_registry
from shared.jobs import OnError, ReplayType
from shared.requests import build_request, parse_job_id, parse_limit, parse_rate, parse_timeout
from shared.settings import Settings
from shared.slicing import SliceBy

log = logging.getLogger(__name__)

POLL_SECONDS = 0.5


class Coordinator:
    """Submits, inspects and waits for replay jobs against one configuration.

    Its calls take their connections from the process's pool of its database
    (``scheduler.pools``, shared with every other coordinator of that database), held from the
    first call to ``close``: a call costs a checkout, not a connection (``load_aggregate`` of a
    snapshotted order: 7.7 ms with a connection per call). In a process forked from one that
    used it, a coordinator takes the child's own pool: the parent's connections are never
    touched in the child."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._pool: tuple[int, db.Pool] | None = None  # (the pid that holds it, the pool)
        self._pool_lock = threading.Lock()

    @contextlib.contextmanager
    def connection(self) -> Iterator[db.Connection]:
        """A connection of the pool (autocommit, rows as dicts) for a ``with`` block, given back
        after it. ``DatabaseUnavailable`` if the server cannot be reached."""
        with self._current_pool().connection() as conn:
            yield conn

    def _current_pool(self) -> db.Pool:
        held = self._pool
        if held is None or held[0] != os.getpid():
            with self._pool_lock:
                held = self._pool
                if held is None or held[0] != os.getpid():
                    held = self._pool = (os.getpid(), pools.acquire(self.settings))
        return held[1]

    @cached_property
    def registry(self) -> Registry:
        return load_registry(self.settings.handler_modules)

    @cached_property
    def celery(self) -> Celery:
        app = Celery("event_replay_scheduler", set_as_current=False)
        app.conf.update(sender_config(self.settings))
        return app

    def close(self) -> None:
        """Give back the pool (the last coordinator of its database closes it) and release the
        broker connections (those that were opened). A closed coordinator can still be used: it
        takes the pool again."""
        with self._pool_lock:
            held, self._pool = self._pool, None
        if held is not None and held[0] == os.getpid():
            pools.release(held[1])
        if "celery" in self.__dict__:
            celeryconf.close_app(self.celery)

    def _discard_celery(self) -> None:
        # After a failed send the app may be unusable (Celery's result consumer gives up for
        # good: "The Celery application must be restarted"): the next send builds a new one.
        with contextlib.suppress(Exception):
            self.close()
        self.__dict__.pop("celery", None)

    # --- submit ---------------------------------------------------------------------------------
    def submit(self, consumer: Any, **kwargs: Any) -> str:
        handlers = self.registry  # first: its modules may register the source named
        request = build_request(consumer, **kwargs)
        handler = handlers.get(request.consumer)
        source = sources.get(request.source)
        planning.check_fit(request, handler, source)
        # Before anything is written: a broker or result backend that cannot be named or
        # reached refuses the submit, instead of leaving a job that was never sent (issue 11).
        dispatch.check_reachable(self.celery)
        job_id = uuid.uuid4()
        task_ids = planning.plan(self.settings, job_id, request, handler, source)
        if task_ids:
            self._send(job_id, list(enumerate(task_ids)))
        if request.shadow:
            dispatch.announce_shadow(self.celery, self.settings, job_id, shadow.Phase.REBUILDING)
        return str(job_id)

    def _send(self, job_id: uuid.UUID, slices: list[tuple[int, str]]) -> None:
        """Send the job's slices; if that fails in any way, fail the job and raise
        ``BrokerUnavailable``: a job that was planned is never left pending unsent."""
        try:
            dispatch.send_job(self.celery, self.settings, job_id, slices)
        except Exception as exc:
            # Whatever failed (kombu, a socket, Redis, the result backend's RuntimeError after
            # its retries, a URL kombu cannot parse), the job must not stay pending: it would
            # hold its consumer (ActiveJobExists) with nothing running. Part of the chord may
            # have been sent: failing the job (and its slices, under the job lock) stops
            # whatever does run at its first batch. `replay resume` retries.
            message = (
                f"could not dispatch to the broker or result backend: {db.first_line(exc)};"
                f" `replay resume {job_id}` retries"
            )
            with self.connection() as conn:
                jobs.fail_job(conn, job_id, message)
            self._discard_celery()
            raise BrokerUnavailable(f"job {job_id} planned but {message}") from None

    # --- operate ---------------------------------------------------------------------------------
    def cancel(self, job_id: Any) -> dict[str, Any]:
        """Cancel an unfinished job; its slices stop at their next batch boundary."""
        key = parse_job_id(job_id)
        with self.connection() as conn:
            jobs.cancel_job(conn, key)
        return self.get(key)

    def resume(self, job_id: Any) -> dict[str, Any]:
        """Re-dispatch a failed, cancelled or stuck job's unfinished slices from their
        checkpoints (a failed slice retries the event it failed on)."""
        key = parse_job_id(job_id)
        dispatch.check_reachable(self.celery)
        with self.connection() as conn:
            found = shadow.find(conn, key)
            if found is not None:  # a discarded shadow must not be rebuilt into live tables
                shadow.check_writable(found)
            slices = jobs.prepare_resume(conn, key)
        if slices:
            self._send(key, slices)
        return self.get(key)

    def throttle(self, job_id: Any, rate: float | None) -> dict[str, Any]:
        """Change a running job's speed limit (None lifts it); in effect within seconds."""
        key = parse_job_id(job_id)
        rate = parse_rate(rate)
        with self.connection() as conn:
            jobs.set_rate(conn, key, rate)
        return self.get(key)

    # --- shadow rebuilds (shared.shadow): compare, swap in, swap back, drop ----------------------
    def diff(self, job_id: Any) -> dict[str, Any]:
        """A shadow rebuild's tables against the live ones (``shadow_diff.diff``)."""
        key = parse_job_id(job_id)
        with self.connection() as conn:
            return shadow_diff.diff(conn, self.registry, key)

    def cutover(self, job_id: Any) -> dict[str, Any]:
        """Swap a ready shadow in, in one transaction (``shadow_ops.cutover``)."""
        return self._shadow_op(shadow_ops.cutover, job_id)

    def rollback(self, job_id: Any) -> dict[str, Any]:
        """Swap the tables a cutover replaced back in (``shadow_ops.rollback``)."""
        return self._shadow_op(shadow_ops.rollback, job_id)

    def discard(self, job_id: Any) -> dict[str, Any]:
        """Drop a shadow's side that is not live (``shadow_ops.discard``)."""
        return self._shadow_op(lambda conn, _registry, key: shadow_ops.discard(conn, key), job_id)

    def _shadow_op(self, op: Any, job_id: Any) -> dict[str, Any]:
        key = parse_job_id(job_id)
        with self.connection() as conn:
            phase = op(conn, self.registry, key)
        dispatch.announce_shadow(self.celery, self.settings, key, phase)
        return self.get(key)

    def reconcile(self) -> reconcile.ReconcileReport:
        """One reconciler pass, now (``replay reconcile``)."""
        return reconcile.reconcile(self.settings, self.celery)

    # --- inspect ---------------------------------------------------------------------------------
    def get(self, job_id: Any) -> dict[str, Any]:
        """The job as ``get_job`` returns it; each slice's checkpoint also described in words
        by the job's source (``position``)."""
        key = parse_job_id(job_id)
        with self.connection() as conn:
            view = views.job_view(conn, key)
        source = self._source(view["source"])
        for s in view["slices"]:
            s["position"] = source.describe_checkpoint(s["checkpoint"]) if source else None
        return view

    def _source(self, name: str) -> sources.Source | None:
        """The named source, or None if this process cannot find it (describing only)."""
        if name not in sources.names():
            self.registry  # noqa: B018 -- imports the modules that may register it
        return sources.get(name) if name in sources.names() else None

    def list(self, limit: int = 20) -> list[dict[str, Any]]:
        limit = parse_limit(limit)
        with self.connection() as conn:
            return views.list_jobs(conn, limit)

    def wait(self, job_id: Any, timeout: float | None = None) -> dict[str, Any]:
        key = parse_job_id(job_id)
        timeout = parse_timeout(timeout)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            job = self.get(key)
            # a completed shadow rebuild has ended once its shadow caught up (ready)
            settling = job["status"] == jobs.Status.COMPLETED and job["shadow_phase"] in (
                "rebuilding", "catching_up"
            )  # fmt: skip
            if job["status"] in jobs.FINAL_STATUSES and not settling:
                return job
            if deadline is not None and time.monotonic() >= deadline:
                raise JobTimeout(
                    f"job {job_id} is still {job['status']} after {timeout} s "
                    f"({job['processed_count']}/{job['total_events']} events)"
                )
            time.sleep(POLL_SECONDS)


# --- the module-level API (DESIGN.md: "Python API — contract") -----------------------------------
# One coordinator for the process, rebuilt when the environment's settings change (or after
# ``configure``): the calls share its pool, and a forked child gets its own (see Coordinator).
_default: Coordinator | None = None
_default_key: tuple[str | None, ...] | None = None  # the environment it was built from
_configured = False  # configure() chose its settings: the environment is not read
_default_lock = threading.Lock()
#: the environment variables of Settings.from_env (as_env reproduces every one of them)
_ENV_VARIABLES = tuple(Settings().as_env())


def default_coordinator() -> Coordinator:
    """The coordinator of the module-level calls: for the environment's settings as they are
    now (a change of ``REPLAY_DATABASE_URL`` or any other is honoured at the next call), or for
    those given to ``configure``. Built on first use; closed at exit."""
    key = None if _configured else tuple(os.environ.get(v) for v in _ENV_VARIABLES)
    current = _default
    if current is not None and (_configured or key == _default_key):
        return current  # the common case: a few dictionary look-ups, no lock
    with _default_lock:
        if _default is None or (not _configured and key != _default_key):
            _replace_default(Settings.from_env(), key)
        assert _default is not None
        return _default


def configure(settings: Settings | None) -> None:
    """Use ``settings`` for the module-level calls from now on, instead of the environment's
    (``None``: the environment's again). The previous default coordinator, if any, is closed."""
    global _configured
    with _default_lock:
        _configured = settings is not None
        if settings is None:
            _close_default()
        else:
            _replace_default(settings, None)


def _replace_default(settings: Settings, key: tuple[str | None, ...] | None) -> None:
    global _default, _default_key
    _close_default()
    _default, _default_key = Coordinator(settings), key


def _close_default() -> None:
    global _default, _default_key
    if _default is not None:
        _default.close()
    _default, _default_key = None, None


atexit.register(_close_default)


def submit_replay(
    consumer: str,
    replay_type: str = ReplayType.FULL,
    aggregate_id: str | None = None,
    from_time: Any = None,
    to_time: Any = None,
    event_types: Any = None,
    slices: int | None = None,
    slice_by: str = SliceBy.AGGREGATE,
    reset: bool = False,
    on_error: str = OnError.FAIL,
    max_events_per_second: float | None = None,
    source: str = sources.DEFAULT,
    topic: str | None = None,
    group: str | None = None,
    decoder: str | None = None,
    shadow: bool = False,
) -> str:
    """Plan a replay job and dispatch it to the workers; returns its id. Raises a
    ``shared.errors.InvalidRequest`` subclass (and writes nothing) for a bad request, and
    ``ActiveJobExists`` if the consumer already has a pending or running job. ``source``: the
    registered name of the event source to read (``shared.sources``; the event table by
    default). ``topic``: the topic a source that reads topics replays (``source="kafka"``:
    required there, refused by the other sources); with ``from_time``/``to_time`` the messages
    from/to those times, without them the whole retained topic. ``group``: the consumer group
    its progress is committed to (``replay-<job id>`` by default; one that has offsets for the
    topic already, a live consumer's, is refused). ``decoder``: a decoder declared with
    ``@decoder`` in a module of ``REPLAY_HANDLER_MODULES`` (JSON events by default).
    ``shadow``: with ``reset``, a full rebuild into shadow copies of the handler's ``tables``,
    the live ones untouched (then ``diff``, ``cutover``, ``rollback``, ``discard``)."""
    return default_coordinator().submit(
        consumer,
        replay_type=replay_type,
        aggregate_id=aggregate_id,
        from_time=from_time,
        to_time=to_time,
        event_types=event_types,
        slices=slices,
        slice_by=slice_by,
        reset=reset,
        on_error=on_error,
        max_events_per_second=max_events_per_second,
        source=source,
        topic=topic,
        group=group,
        decoder=decoder,
        shadow=shadow,
    )


def get_job(job_id: str | uuid.UUID) -> dict[str, Any]:
    """The job's status, counts, error and slices."""
    return default_coordinator().get(job_id)


def wait_for_job(job_id: str | uuid.UUID, timeout: float | None = None) -> dict[str, Any]:
    """Block until the job is completed, failed or cancelled; returns ``get_job``."""
    return default_coordinator().wait(job_id, timeout)


def resume_job(job_id: str | uuid.UUID) -> dict[str, Any]:
    """Re-dispatch the unfinished slices of a failed, cancelled or stuck job from their
    checkpoints; returns ``get_job``."""
    return default_coordinator().resume(job_id)


def cancel_job(job_id: str | uuid.UUID) -> dict[str, Any]:
    """Cancel a job: every slice stops at its next batch boundary; returns ``get_job``."""
    return default_coordinator().cancel(job_id)


def load_aggregate(
    aggregate_id: str, at_sequence: int | None = None, *, use_snapshots: bool = True
) -> Any:
    """An aggregate's state folded from its events (from its latest usable snapshot), as of
    ``at_sequence`` if given: ``shared.aggregates.Loaded``. The reducers are those of the
    built-in modules and ``REPLAY_HANDLER_MODULES``, imported on first use."""
    from shared import aggregates

    coordinator = default_coordinator()
    coordinator.registry  # noqa: B018 -- imports the modules that register the reducers
    with coordinator.connection() as conn:
        return aggregates.load_aggregate(
            conn, aggregate_id, at_sequence, use_snapshots=use_snapshots
        )
