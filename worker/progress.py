"""A running slice's progress, where Flower shows it.

Flower builds its pages from task events, not from the result backend: ``update_state`` alone
shows nothing there. So a slice also sends a custom task event, ``task-progress``, whose fields
Flower merges into the task it knows: its state becomes PROGRESS and its ``result`` (a column of
the task list, a row of the task's page, ``/api/task/info``) reads e.g. ``1,500/12,000 events
(12%) · 3,400 events/s · ETA 3 s``. The result backend gets the same numbers (PROGRESS, with
``processed``, ``total``, ``rate`` and that line), for ``AsyncResult`` users.

Both are sent at most once a second per slice, and always for the last batch. Best effort: the
slice row holds the truth; a broker or backend outage must not fail a slice whose batch has
committed already.
"""

from __future__ import annotations

import math
import time

from celery import Task
from celery.utils.log import get_task_logger

from shared.runner import SliceOutcome

log = get_task_logger(__name__)

#: the event's type: Flower shows its state as PROGRESS
PROGRESS_EVENT = "task-progress"
#: a slice reports its progress at most this often, in seconds
PROGRESS_EVERY_SECONDS = 1.0


def progress_line(processed: int, total: int, rate: float) -> str:
    """``1,500/12,000 events (12%) · 3,400 events/s · ETA 3 s``."""
    share = f" ({100 * processed // total}%)" if total else ""
    line = f"{processed:,}/{total:,} events{share} · {rate:,.0f} events/s"
    if rate > 0 and processed < total:
        line += f" · ETA {format_duration((total - processed) / rate)}"
    return line


def format_duration(seconds: float) -> str:
    """``3 s``, ``4 min 05 s``, ``2 h 07 min``."""
    s = math.ceil(seconds)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


class SliceProgress:
    """The runner's progress callback for one slice task."""

    def __init__(self, task: Task, job_id: str, slice_no: int) -> None:
        self.task, self.job_id, self.slice_no = task, job_id, slice_no
        self.sent_at = -math.inf
        self.processed = self.total = 0

    def __call__(self, processed: int, total: int, rate: float) -> None:
        self.processed, self.total = processed, total
        now = time.monotonic()
        if now - self.sent_at < PROGRESS_EVERY_SECONDS and processed < total:
            return
        self.sent_at = now
        line = progress_line(processed, total, rate)
        numbers = {"processed": processed, "total": total, "rate": round(rate, 1)}
        try:
            self.task.send_event(PROGRESS_EVENT, result=line, **numbers)
            self.task.update_state(
                state="PROGRESS",
                meta={"job_id": self.job_id, "slice_no": self.slice_no, "progress": line,
                      **numbers},
            )  # fmt: skip
        except Exception as exc:
            self._warn(exc)

    def failed(self) -> None:
        """Before the task fails: its last progress line (an ETA, say) must not outlive it."""
        line = str(SliceOutcome.FAILED)
        if self.total:
            line += f" after {self.processed:,}/{self.total:,} events"
        try:
            self.task.send_event(PROGRESS_EVENT, result=line)
        except Exception as exc:
            self._warn(exc)

    def _warn(self, exc: Exception) -> None:
        log.warning("cannot report progress of slice %s/%s: %s", self.job_id, self.slice_no, exc)
