"""The event store: appending with optimistic concurrency, and bulk loading with COPY."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from uuid import UUID, uuid4

from psycopg.types.json import Jsonb

from shared import db
from shared.db import Connection
from shared.errors import ConcurrencyConflict, DuplicateAggregates, InvalidRequest


@dataclass(frozen=True)
class NewEvent:
    """An event to append; its sequence_num is given by its place in the append."""

    event_type: str
    payload: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)
    occurred_at: datetime | None = None
    event_id: UUID | None = None


def stream_version(conn: Connection, aggregate_id: str) -> int:
    """The last sequence_num of an aggregate (0 when it has no events)."""
    row = conn.execute(
        "SELECT coalesce(max(sequence_num), 0) AS v FROM event WHERE aggregate_id = %s",
        (aggregate_id,),
    ).fetchone()
    return int(row["v"]) if row else 0


def append(
    conn: Connection,
    aggregate_id: str,
    aggregate_type: str,
    events: Sequence[NewEvent],
    *,
    expected_version: int,
) -> list[UUID]:
    """Append ``events`` to an aggregate whose last sequence_num must be ``expected_version``.

    The events get sequence numbers ``expected_version + 1 ...`` and commit together (in the
    caller's transaction if one is open). If another writer appended first, or the expectation is
    wrong, raises ``ConcurrencyConflict`` and writes nothing: never a silent overwrite or a gap.
    """
    if not events:
        return []
    if expected_version < 0:
        raise InvalidRequest(f"expected_version must be >= 0, got {expected_version}")
    ids = [e.event_id or uuid4() for e in events]
    now = datetime.now(UTC)
    rows = [
        (
            i,
            aggregate_id,
            aggregate_type,
            e.event_type,
            Jsonb(e.payload),
            Jsonb(e.metadata),
            expected_version + n,
            e.occurred_at or now,
        )
        for n, (i, e) in enumerate(zip(ids, events, strict=True), start=1)
    ]
    try:
        with conn.transaction(), conn.cursor() as cur:
            actual = stream_version(conn, aggregate_id)
            if actual != expected_version:
                raise ConcurrencyConflict(
                    f"aggregate {aggregate_id!r} is at version {actual}, "
                    f"expected {expected_version}"
                )
            cur.executemany(
                "INSERT INTO event (event_id, aggregate_id, aggregate_type, event_type, payload,"
                " metadata, sequence_num, occurred_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                rows,
            )
    except db.UniqueViolation as exc:
        # A concurrent writer committed the same sequence_num between our read and our insert.
        raise ConcurrencyConflict(
            f"aggregate {aggregate_id!r} was appended to concurrently "
            f"(expected version {expected_version})"
        ) from exc
    return ids


COPY_EVENTS = (
    "COPY event (event_id, aggregate_id, aggregate_type, event_type, payload, metadata,"
    " sequence_num, occurred_at) FROM STDIN"
)


def _escape(text: str) -> str:
    """Escape a value for COPY's text format."""
    return text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def copy_rows(conn: Connection, lines: Iterable[str], chunk_lines: int = 5000) -> int:
    """Bulk-load pre-formatted COPY text lines (see ``format_copy_line``) in one transaction.
    A duplicate (aggregate_id, sequence_num) aborts the whole load with ``DuplicateAggregates``."""
    count = 0
    try:
        with conn.transaction(), conn.cursor() as cur, cur.copy(COPY_EVENTS) as copy:
            buf: list[str] = []
            for line in lines:
                buf.append(line)
                if len(buf) >= chunk_lines:
                    copy.write("".join(buf))
                    count += len(buf)
                    buf.clear()
            if buf:
                copy.write("".join(buf))
                count += len(buf)
    except db.UniqueViolation as exc:
        raise DuplicateAggregates(
            f"the store already holds some of these events ({db.first_line(exc)});"
            " nothing was written"
        ) from exc
    return count


def format_copy_line(
    event_id: UUID,
    aggregate_id: str,
    aggregate_type: str,
    event_type: str,
    payload_json: str,
    metadata_json: str,
    sequence_num: int,
    occurred_at: datetime,
) -> str:
    return (
        "\t".join(
            (
                str(event_id),
                _escape(aggregate_id),
                _escape(aggregate_type),
                _escape(event_type),
                _escape(payload_json),
                _escape(metadata_json),
                str(sequence_num),
                occurred_at.isoformat(),
            )
        )
        + "\n"
    )
