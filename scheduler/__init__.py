"""The coordinator of replay jobs, and the ``replay`` command."""

from scheduler.coordinator import Coordinator, get_job, submit_replay, wait_for_job

__all__ = ["Coordinator", "get_job", "submit_replay", "wait_for_job"]
