"""The coordinator of replay jobs, and the ``replay`` command."""

from scheduler.archives import archive_events, archived_segments, unarchive_events
from scheduler.coordinator import (
    Coordinator,
    cancel_job,
    configure,
    get_job,
    load_aggregate,
    resume_job,
    submit_replay,
    wait_for_job,
)

__all__ = [
    "Coordinator",
    "archive_events",
    "archived_segments",
    "cancel_job",
    "configure",
    "get_job",
    "load_aggregate",
    "resume_job",
    "submit_replay",
    "unarchive_events",
    "wait_for_job",
]
