"""What a replay job covers, whatever its source.

A ``Scope`` is the filter of a job (one aggregate, a time range, some event types, combined);
``SliceBounds`` is one slice's part of it. How a source selects them is the source's business
(``shared.sources``); the event columns below are the ``Event`` mapping every source hands over.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from shared.db import sql

#: The keys of the ``Event`` mapping (shared.handlers), which are the event table's columns: a
#: source's SELECT names them (the event table's: ``select_events`` in events.sql).
EVENT_COLUMNS = sql.SQL(
    "event_id, aggregate_id, aggregate_type, event_type, payload, metadata, sequence_num,"
    " occurred_at"
)


@dataclass(frozen=True)
class Scope:
    """The events a job selects: every filter given must hold (they combine)."""

    aggregate_id: str | None = None
    from_time: datetime | None = None
    to_time: datetime | None = None
    event_types: tuple[str, ...] = ()
    #: the topic a job of a source that reads topics replays (``Source.reads_topics``)
    topic: str | None = None
    #: such a job's consumer group, which its progress is committed to (None: the source's
    #: default, ``replay-<job id>`` for Kafka)
    group: str | None = None
    #: the decoder that makes its messages events (None: the source's default)
    decoder: str | None = None

    @property
    def gapless(self) -> bool:
        """Whether it takes every event of its aggregates: its batches continue watermarks."""
        return self.from_time is None and self.to_time is None and not self.event_types

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "aggregate_id": self.aggregate_id,
            "from_time": self.from_time.isoformat() if self.from_time else None,
            "to_time": self.to_time.isoformat() if self.to_time else None,
            "event_types": list(self.event_types),
        }
        # only those that are set: the filters of other jobs read as before
        for name in ("topic", "group", "decoder"):
            if getattr(self, name) is not None:
                data[name] = getattr(self, name)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Scope:
        return cls(
            aggregate_id=data.get("aggregate_id"),
            from_time=datetime.fromisoformat(data["from_time"]) if data.get("from_time") else None,
            to_time=datetime.fromisoformat(data["to_time"]) if data.get("to_time") else None,
            event_types=tuple(data.get("event_types") or ()),
            topic=data.get("topic"),
            group=data.get("group"),
            decoder=data.get("decoder"),
        )


@dataclass(frozen=True)
class SliceBounds:
    """One slice: a range of aggregate ids (inclusive) or of occurred_at ([from, to))."""

    first_aggregate: str | None = None
    last_aggregate: str | None = None
    from_time: datetime | None = None
    to_time: datetime | None = None

    @property
    def by_time(self) -> bool:
        return self.first_aggregate is None and self.last_aggregate is None

    def describe(self) -> str:
        """E.g. ``aggregates ord-1 … ord-9`` or ``2026-01-01 00:00 … 2026-01-02 00:00 UTC``."""
        if not self.by_time:
            return f"aggregates {self.first_aggregate} … {self.last_aggregate}"
        start, end = (f"{t.astimezone(UTC):%Y-%m-%d %H:%M:%S}" if t else None
                      for t in (self.from_time, self.to_time))  # fmt: skip
        if start and end:
            return f"{start} … {end} UTC"
        if start or end:
            return f"from {start} UTC" if start else f"before {end} UTC"
        return "every event"
