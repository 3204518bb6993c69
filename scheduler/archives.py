"""Keeping years of history (issue 17) from Python: ``archive_events``, ``unarchive_events``,
``archived_segments``; the ``replay archive``, ``unarchive`` and ``archives`` verbs call them.
The settings are the module-level calls' (``scheduler.configure``, else the environment)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from local import embedded
from shared import db, queries
from shared.archive.wanted import SEGMENT_EVENTS
from shared.errors import InvalidRequest
from shared.requests import parse_timestamp
from shared.settings import Settings

QUERIES = queries.load("archive")


def default_url(settings: Settings) -> str:
    """Where segments go unless told: ``REPLAY_ARCHIVE_URL``, else ``<REPLAY_HOME>/archive``."""
    return settings.archive_url or f"file://{embedded.home() / 'archive'}"


def archive_events(
    before: Any,
    to: str | None = None,
    *,
    segment_events: int = SEGMENT_EVENTS,
    progress: Callable[[str], None] | None = None,
    settings: Settings | None = None,
) -> dict[str, Any]:
    """Move the events that occurred before ``before`` (an aware datetime or ISO-8601 text)
    into segments at ``to`` (a filesystem URL; ``default_url``); returns what moved:
    ``{url, segments, events, bytes, orphans_removed, seconds, segment_ids}``."""
    from shared.archive import mover  # pyarrow: loaded by the archive's verbs only

    settings = settings or _settings()
    cutoff = parse_timestamp(before, "before")
    assert cutoff is not None
    with db.connect(settings) as conn:
        report = mover.archive(conn, to or default_url(settings), cutoff,
                               segment_events=segment_events, progress=progress)  # fmt: skip
    return asdict(report)


def unarchive_events(
    from_time: Any = None,
    to_time: Any = None,
    *,
    progress: Callable[[str], None] | None = None,
    settings: Settings | None = None,
) -> dict[str, Any]:
    """Bring back into the event table the segments holding events in ``[from_time,
    to_time)`` (both optional: all of them); returns what moved, as ``archive_events``."""
    from shared.archive import mover

    settings = settings or _settings()
    start = parse_timestamp(from_time, "from_time")
    end = parse_timestamp(to_time, "to_time")
    if start is not None and end is not None and start >= end:
        raise InvalidRequest(
            f"from_time {start.isoformat()} must be before to_time {end.isoformat()}"
        )
    with db.connect(settings) as conn:
        report = mover.unarchive(conn, start, end, progress=progress)
    return asdict(report)


def archived_segments(settings: Settings | None = None) -> list[dict[str, Any]]:
    """Every segment of the catalogue, oldest first."""
    with db.connect(settings or _settings()) as conn:
        return [dict(r) for r in conn.execute(QUERIES["list_segments"]).fetchall()]


def _settings() -> Settings:
    from scheduler.coordinator import default_coordinator

    return default_coordinator().settings
