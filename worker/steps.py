"""The reconciler as a part of the scheduler process, not a task.

The scheduler is the worker started with ``--beat`` (``-Q control``). It used to send itself a
``replay.reconcile`` task every ``reconcile_seconds``: with task events on, that was a row in
Flower every 15 s, most of the task list, with nothing done. A pass now runs in a thread of that
process; what it does shows where it matters: the slices it re-dispatches are tasks (labelled
"re-dispatched"), and its log says what it finalized.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from celery import bootsteps

from shared import reconcile
from shared.settings import Settings

log = logging.getLogger(__name__)


class Reconciler(bootsteps.StartStopStep):
    """A reconciler pass every ``reconcile_seconds`` in a thread of the worker that runs beat.
    Passes never overlap (an advisory lock), so a second scheduler is harmless, only useless."""

    def __init__(self, worker: Any, beat: bool = False, **kwargs: Any) -> None:
        super().__init__(worker, **kwargs)
        self.enabled = bool(beat)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, worker: Any) -> None:
        settings = Settings.from_env()
        self._thread = threading.Thread(
            target=self._loop, args=(settings, worker.app), name="replay-reconciler", daemon=True
        )
        self._thread.start()

    def stop(self, worker: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _loop(self, settings: Settings, app: Any) -> None:
        while not self._stop.wait(settings.reconcile_seconds):
            try:
                report = reconcile.reconcile(settings, app)
            except Exception as exc:  # a database or broker outage: the next pass retries
                log.warning("reconciler pass failed: %s", exc)
                continue
            done = report.as_dict()
            if report.finalized or report.redispatched or report.given_up:
                log.info("reconciler: %s", done)
