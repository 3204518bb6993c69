"""The coordinator of replay jobs, and the ``replay`` command."""

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
    "cancel_job",
    "configure",
    "get_job",
    "load_aggregate",
    "resume_job",
    "submit_replay",
    "wait_for_job",
]
