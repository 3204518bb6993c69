"""What the ``replay`` command prints: its console, a job's progress bar and summary, and an
error as one line."""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, ProgressColumn, Task, TextColumn
from rich.table import Column
from rich.text import Text

from scheduler.cli import formats
from scheduler.coordinator import Coordinator
from shared import db
from shared.errors import JobTimeout
from shared.jobs import Status

# An error message is one line and at most this long: a value the user gave is quoted shortened
# where the message is made, and this is the last guard for one that is not (issue 11).
MAX_MESSAGE_CHARACTERS = 1000
POLL_SECONDS = 0.25
# soft_wrap: a message is one line however narrow the terminal (scripts grep them).
# markup and emoji off: what the console prints is data (aggregate ids, error texts, handler
# names) and must come out literally; "[/x]" in an id raised rich's MarkupError (issue 11).
console = Console(soft_wrap=True, markup=False, emoji=False)


class FiguresColumn(ProgressColumn):
    """The job's figures as ``replay status`` writes them (``formats.figures``): events done of
    the total, its rate, its run time and, while it runs, its ETA."""

    def render(self, task: Task) -> Text:
        return Text(task.fields["figures"], no_wrap=True)


def follow(coordinator: Coordinator, job_id: str, timeout: float | None = None) -> dict[str, Any]:
    """Show a live progress bar (events done / total, events/s, run time, ETA) until the job
    ends; after ``timeout`` seconds raise ``JobTimeout`` (the job keeps running)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    job = coordinator.get(job_id)
    console.print(
        f"job {job_id}: {formats.count(job['slice_count'])} slices,"
        f" {formats.count(job['total_events'])} events",
        highlight=False,
    )
    with Progress(
        TextColumn("{task.fields[status]}", style="bold", markup=False),
        # the bar takes what the figures leave: they are never cut
        BarColumn(bar_width=None, table_column=Column(ratio=1)),
        FiguresColumn(table_column=Column(no_wrap=True)),
        console=console,
        transient=False,
        expand=True,
    ) as bar:
        task = bar.add_task(
            "replay", total=max(job["total_events"], 1), status=job["status"], figures=""
        )
        while True:
            final = Status(job["status"]).final
            # a job of 0 events: the bar's total is 1, full once the job has ended
            done = job["processed_count"] if job["total_events"] else int(final)
            bar.update(task, completed=done, status=job["status"], figures=formats.figures(job))
            if final:
                return job
            if deadline is not None and time.monotonic() > deadline:
                raise JobTimeout(
                    f"gave up waiting: job {job['job_id']} still {job['status']}"
                    f" ({formats.fraction(job['processed_count'], job['total_events'])} events);"
                    " it keeps running"
                )
            time.sleep(POLL_SECONDS)
            job = coordinator.get(job_id)


def print_summary(job: dict[str, Any]) -> None:
    """One line for the job (events, run time, rate, ETA), and one for its poison events and
    its error (``formats.summary``)."""
    for line in formats.summary(job):
        console.print(line, highlight=False)


def message(exc: BaseException) -> str:
    """The error's first line, passwords masked, cut to MAX_MESSAGE_CHARACTERS."""
    line = db.first_line(exc)
    if len(line) > MAX_MESSAGE_CHARACTERS:
        line = f"{line[:MAX_MESSAGE_CHARACTERS]}… ({len(line):,} characters)"
    return line
