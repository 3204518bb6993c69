"""The Celery worker: ``celery -A worker worker -Q replay``."""

from worker.app import app

__all__ = ["app"]
