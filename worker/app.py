"""The Celery app. Its configuration is read from the environment when Celery first needs it,
not at import (``add_defaults`` takes a callable and calls it lazily)."""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

from celery import Celery

from local import servers
from shared.celeryconf import celery_config
from shared.errors import ConfigurationError
from shared.settings import Settings
from worker.steps import Reconciler


def _config() -> dict[str, Any]:
    # Variables first, then the local servers, then an embedded stack already running (from
    # `replay up` in this directory): a worker or Flower never starts servers of its own. The
    # URLs found go into os.environ, so that every Settings.from_env() in this process and in
    # its pool processes (forked later) agrees with the broker this app connects to.
    found = servers.discover()
    if found.line:
        print(f"event-replay: {found.line}", file=sys.stderr)
    os.environ.update(found.overlay)
    try:
        settings = Settings.from_env()
    except ConfigurationError as exc:
        # One line and exit code 2, like the `replay` CLI: a setting the worker cannot use is
        # the operator's to fix, and an 80-line traceback only hides the line that says how.
        print(f"event-replay: error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    return celery_config(settings)


# worker.control: Revoke/Terminate on a slice cancels its job (it registers a control command).
app = Celery("event_replay", include=["worker.tasks", "worker.control"])
app.add_defaults(_config)
# The reconciler runs in the scheduler (the worker started with --beat), not as a task.
app.steps["worker"].add(Reconciler)

logging.getLogger("shared").setLevel(logging.INFO)
