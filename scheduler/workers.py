"""Moved to ``local.workers`` (issue 12). Kept only until ``scheduler.coordinator`` imports
``close_app`` from there: delete this module then."""

from local.workers import close_app

__all__ = ["close_app"]
