"""What the ``replay`` command prints: its console, a job's progress bar and summary, and an
error as one line."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
)
from rich.text import Text

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


class RateColumn(ProgressColumn):
    """Events per second, averaged over the job so far."""

    def render(self, task: Task) -> Text:
        elapsed = task.elapsed or 0.0
        rate = task.completed / elapsed if elapsed > 0 else 0.0
        return Text(f"{rate:,.0f} events/s", style="progress.data.speed")


def follow(coordinator: Coordinator, job_id: str, timeout: float | None = None) -> dict[str, Any]:
    """Show a live progress bar (events done / total, events/s) until the job ends; after
    ``timeout`` seconds raise ``JobTimeout`` (the job keeps running)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    job = coordinator.get(job_id)
    console.print(f"job {job_id}: {job['slice_count']} slices, {job['total_events']:,} events")
    with Progress(
        TextColumn("[bold]{task.fields[status]}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("events"),
        RateColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    ) as bar:
        task = bar.add_task("replay", total=max(job["total_events"], 1), status=job["status"])
        while True:
            bar.update(task, completed=job["processed_count"], status=job["status"])
            if Status(job["status"]).final:
                if job["total_events"] == 0:
                    bar.update(task, completed=1)
                return job
            if deadline is not None and time.monotonic() > deadline:
                raise JobTimeout(
                    f"gave up waiting: job {job['job_id']} still {job['status']}"
                    f" ({job['processed_count']:,}/{job['total_events']:,} events);"
                    " it keeps running"
                )
            time.sleep(POLL_SECONDS)
            job = coordinator.get(job_id)


def print_summary(job: dict[str, Any]) -> None:
    """One line for the job (events, rate), and one for its poison events and its error."""
    elapsed = job.get("elapsed_seconds") or 0.0
    rate = job["processed_count"] / elapsed if elapsed else 0.0
    console.print(
        f"job {job['job_id']} {job['status']}: {job['processed_count']:,}/{job['total_events']:,}"
        f" events ({job['applied_count']:,} applied, {job['skipped_count']:,} already processed)"
        f" in {elapsed:.1f} s, {rate:,.0f} events/s"
    )
    if job.get("poison_count"):
        console.print(
            f"{job['poison_count']:,} event(s) skipped or parked by on_error={job['on_error']}"
        )
    if job.get("error"):
        console.print(f"error: {job['error'].splitlines()[0]}")


def message(exc: BaseException) -> str:
    """The error's first line, passwords masked, cut to MAX_MESSAGE_CHARACTERS."""
    line = db.first_line(exc)
    if len(line) > MAX_MESSAGE_CHARACTERS:
        line = f"{line[:MAX_MESSAGE_CHARACTERS]}… ({len(line):,} characters)"
    return line


def fmt_time(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value else "-"


def json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)
