"""What a reader takes of the archive (``Wanted``), and the archive's constants: importable
without pyarrow, which only a process that reads or writes segments loads (a worker of a
store without an archive never does)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

#: the event table's columns, as a segment holds them (``segments.SCHEMA``'s order)
COLUMNS = (
    "event_id", "aggregate_id", "aggregate_type", "event_type", "payload", "metadata",
    "sequence_num", "occurred_at", "created_at", "txid",
)  # fmt: skip
#: events per segment file at most (a segment is built in memory: about 30 MB of Arrow)
SEGMENT_EVENTS = 200_000


@dataclass(frozen=True)
class Wanted:
    """What a reader takes of a segment: an aggregate range and a time range (None: open),
    event types (empty: all), and the columns."""

    first_aggregate: str | None = None
    last_aggregate: str | None = None
    aggregate_id: str | None = None
    from_time: datetime | None = None
    to_time: datetime | None = None
    event_types: tuple[str, ...] = ()
    columns: tuple[str, ...] = COLUMNS
    #: whether aggregate ids sort as bytes where they were sliced (``ids_sort_as_bytes``): a
    #: range of them is only applied here then; otherwise the reader's SQL applies it
    ids_sort_as_bytes: bool = True
