"""How ``replay`` writes numbers, times and tables: one format for each, pure functions.

Counts and rates carry thousands separators everywhere (the progress bar, ``replay status``, the
summary, the demo), durations read the same in the bar and in the summary, and a table fits the
terminal's width by leaving out its least needed columns, never by cutting a value: a job id or
a status is always printed whole, so that it can be copied into the next command.
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

from rich.cells import cell_len

from shared.jobs import Status
from shared.shadow import Phase

#: what a table assumes when neither COLUMNS nor a terminal says (output to a pipe or a file)
DEFAULT_WIDTH = 80
#: between two columns of a table
GAP = "  "
#: between the figures of the progress bar, as in Flower's progress line (worker.progress)
DOT = " · "


def count(n: int) -> str:
    """A count of events, slices, rows: ``1,234,567``."""
    return f"{n:,}"


def fraction(done: int, total: int) -> str:
    """Progress as ``89,000/300,000``."""
    return f"{done:,}/{total:,}"


def rate(events_per_second: float | None) -> str:
    """A rate: ``91,955 events/s`` (``2.5 events/s`` below 10); ``-`` when there is none."""
    if events_per_second is None or not math.isfinite(events_per_second):
        return "- events/s"
    if events_per_second < 10 and events_per_second != int(events_per_second):
        return f"{events_per_second:.1f} events/s"
    return f"{events_per_second:,.0f} events/s"


def duration(seconds: float | None) -> str:
    """A span of time, the same in the bar and the summary, and as Flower writes a slice's ETA
    (``worker.progress``) from a minute up: ``0.4 s``, ``12 s``, ``3 min 05 s``, ``2 h 07 min``;
    ``-`` when unknown."""
    if seconds is None or not math.isfinite(seconds):
        return "-"
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.0f} s" if seconds == int(seconds) else f"{seconds:.1f} s"
    whole = round(seconds)
    if whole < 3600:
        return f"{whole // 60} min {whole % 60:02d} s"
    minutes = whole // 60
    return f"{minutes // 60:,} h {minutes % 60:02d} min"


def eta(seconds: float | None) -> str:
    """An estimate of the time left, in whole seconds rounded up as Flower shows it: ``ETA 3
    s``; empty when there is none."""
    if seconds is None or not math.isfinite(seconds):
        return ""
    return f"ETA {duration(math.ceil(seconds))}"


def timestamp(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value else "-"


def terminal_width() -> int:
    """The terminal's columns: COLUMNS if set, else the terminal's, else DEFAULT_WIDTH."""
    return shutil.get_terminal_size((DEFAULT_WIDTH, 24)).columns


def json_default(value: Any) -> Any:
    """What ``json.dumps`` cannot write itself: datetimes in ISO 8601, UUIDs and numerics as
    strings (a ``numeric`` keeps its exact digits)."""
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, UUID | Decimal):
        return str(value)
    if isinstance(value, set | frozenset):
        return list(value)
    return str(value)


def to_json(value: Any) -> str:
    """``--json`` output: one document that ``json.loads`` reads back."""
    return json.dumps(value, default=json_default, indent=2, ensure_ascii=False)


@dataclass(frozen=True)
class Column:
    header: str
    #: 0: always shown; otherwise the column with the highest ``drop`` is left out first when
    #: the table is wider than the terminal
    drop: int = 0
    #: numbers: aligned right
    right: bool = False


@dataclass(frozen=True)
class Table:
    lines: list[str]
    #: the headers of the columns left out to fit the width
    dropped: list[str]


def table(columns: Sequence[Column], rows: Sequence[Sequence[str]], width: int) -> Table:
    """``rows`` (one string per column) laid out in ``width`` terminal cells: a header line and
    one line per row, columns apart by GAP. Columns that may be dropped are, highest ``drop``
    first, until the rest fits; a value is never cut, so if the columns that stay are still
    wider than ``width`` the lines are too (the terminal wraps them, the text is whole)."""
    widths = [
        max([cell_len(c.header), *(cell_len(r[i]) for r in rows)]) for i, c in enumerate(columns)
    ]
    shown = list(range(len(columns)))

    def total() -> int:
        return sum(widths[i] for i in shown) + len(GAP) * (len(shown) - 1)

    droppable = sorted((i for i, c in enumerate(columns) if c.drop), key=lambda i: -columns[i].drop)
    for i in droppable:
        if total() <= width:
            break
        shown.remove(i)

    def line(cells: Sequence[str]) -> str:
        parts = []
        for i in shown:
            pad = " " * (widths[i] - cell_len(cells[i]))
            parts.append(pad + cells[i] if columns[i].right else cells[i] + pad)
        return GAP.join(parts).rstrip()

    lines = [line([c.header for c in columns]), *(line(r) for r in rows)]
    dropped = [c.header for i, c in enumerate(columns) if i not in shown]
    return Table(lines, dropped)


def figures(job: dict[str, Any]) -> str:
    """The progress bar's text for a job view (``shared.views``): ``89,000/300,000 events ·
    91,955 events/s · 3.3 s · ETA 3 s`` (no ETA when there is none)."""
    parts = [
        f"{fraction(job['processed_count'], job['total_events'])} events",
        rate(job.get("events_per_second")),
        duration(job.get("elapsed_seconds")),
        eta(job.get("eta_seconds")),
    ]
    return DOT.join(p for p in parts if p)


#: what a shadow rebuild's phase means to its operator, and what comes next
SHADOW_PHASES = {
    Phase.REBUILDING: "rebuilding (the live tables are untouched)",
    Phase.CATCHING_UP: "catching up with the events committed since its snapshot",
    Phase.READY: "ready for cutover (replay diff, then replay cutover or replay discard)",
    Phase.CUT_OVER: "cut over (replay rollback to undo, replay discard to drop the old tables)",
    Phase.ROLLED_BACK: "rolled back (the previous tables are live again; replay discard drops it)",
    Phase.DISCARDED: "discarded",
    Phase.FAILED: "given up",
}


def summary(job: dict[str, Any]) -> list[str]:
    """A job in one line (its counts, run time, rate and, while it runs, its ETA), then one line
    for its poison events and one for its error, if it has them."""
    if job.get("started_at") is None:
        timing = "not started yet"
    else:
        ran = "ran" if Status(job["status"]).final else "running for"
        timing = f"{ran} {duration(job.get('elapsed_seconds'))}"
        if job.get("events_per_second") is not None:
            timing += f" at {rate(job['events_per_second'])}"
        if job.get("eta_seconds") is not None:
            timing += f", {eta(job['eta_seconds'])}"
    lines = [
        f"job {job['job_id']} {job['status']}:"
        f" {fraction(job['processed_count'], job['total_events'])} events"
        f" ({count(job['applied_count'])} applied,"
        f" {count(job['skipped_count'])} already processed); {timing}"
    ]
    if job.get("shadow_phase"):
        lines.append(
            f"shadow rebuild: {SHADOW_PHASES.get(job['shadow_phase'], job['shadow_phase'])}"
        )
    if job.get("poison_count"):
        lines.append(
            f"{count(job['poison_count'])} event(s) skipped or parked by on_error={job['on_error']}"
        )
    if job.get("error"):
        lines.append(f"error: {job['error'].splitlines()[0]}")
    return lines
