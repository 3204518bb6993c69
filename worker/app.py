"""The Celery app. Its configuration is read from the environment when Celery first needs it,
not at import (``add_defaults`` takes a callable and calls it lazily)."""

from __future__ import annotations

import logging

from celery import Celery

from shared.celeryconf import celery_config
from shared.settings import Settings

app = Celery("event_replay", include=["worker.tasks"])
app.add_defaults(lambda: celery_config(Settings.from_env()))

logging.getLogger("shared").setLevel(logging.INFO)
