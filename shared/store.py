"""The event store: appending with optimistic concurrency, and bulk loading with COPY."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from uuid import UUID, uuid4

from shared import db, queries
from shared.db import Connection
from shared.errors import ConcurrencyConflict, InvalidRequest

QUERIES = queries.load("store")

# The widths of the event table's text columns (0001_event_store.sql).
MAX_AGGREGATE_ID = 100
MAX_AGGREGATE_TYPE = 50
MAX_EVENT_TYPE = 100
MAX_SEQUENCE_NUM = 2**63 - 1  # bigint
# How much of a value a message quotes: an error stays one readable line (issue 11 found a
# 100 kB id echoed back whole).
QUOTE_CHARACTERS = 60


def shorten(value: Any, limit: int = QUOTE_CHARACTERS) -> str:
    """``repr(value)``, cut to about ``limit`` characters with its full length: how a message
    quotes a value the user gave, however long."""
    try:
        text = repr(value)
    except ValueError:  # an int of more than 4,300 digits has no repr (sys.int_info)
        text = f"<an {type(value).__name__} too large to print>"
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… ({len(text):,} characters)"


def check_text(value: Any, what: str, max_length: int) -> str:
    """``value`` if PostgreSQL can store it in a text column of ``max_length`` characters: a
    non-empty ``str`` without NUL (which text cannot hold) and without lone surrogates (which
    are not Unicode and cannot be encoded). Else ``InvalidRequest``, naming ``what``."""
    if not isinstance(value, str) or not value:
        raise InvalidRequest(f"{what} must be a non-empty string, got {shorten(value)}")
    if len(value) > max_length:
        raise InvalidRequest(f"{what} is longer than {max_length} characters: {shorten(value)}")
    if "\x00" in value:
        raise InvalidRequest(f"{what} contains a NUL character: {shorten(value)}")
    if not value.isascii():
        try:
            value.encode()
        except UnicodeEncodeError:
            raise InvalidRequest(
                f"{what} contains a lone surrogate (not valid Unicode): {shorten(value)}"
            ) from None
    return value


# One pass over a payload: the encoder refuses NaN and infinities (jsonb has no such numbers),
# non-JSON types and nesting deeper than Python's recursion limit; encoding to UTF-8 refuses
# lone surrogates; a search of the output finds NUL (jsonb cannot hold \u0000), but only on the
# rare payload whose text contains "\u0000" at all.
_ENCODER = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))
# "\u0000" is the escape of NUL only after an even number of other backslashes (zero included):
# after an odd number it is an escaped backslash followed by the text "u0000".
_NUL_ESCAPE = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")


def _as_is(data: bytes) -> bytes:
    return data


def encode_json(value: Any, what: str) -> db.Jsonb:
    """``value`` as a jsonb parameter, or ``InvalidRequest`` naming ``what`` if jsonb cannot
    hold it: NaN or infinity, NUL, a lone surrogate, a type JSON lacks, or nesting too deep."""
    try:
        text = _ENCODER.encode(value)
        data = text.encode()
    except ValueError as exc:  # NaN / infinity; UnicodeEncodeError (a lone surrogate) too
        reason = "a lone surrogate (not valid Unicode)" if isinstance(exc, UnicodeError) else exc
        raise InvalidRequest(f"{what} cannot be stored as JSON: {reason}") from None
    except TypeError as exc:
        raise InvalidRequest(f"{what} cannot be stored as JSON: {exc}") from None
    except RecursionError:
        raise InvalidRequest(f"{what} cannot be stored as JSON: nested too deep") from None
    if "\\u0000" in text and _NUL_ESCAPE.search(text):
        raise InvalidRequest(f"{what} cannot be stored as JSON: it contains a NUL character")
    return db.Jsonb(data, dumps=_as_is)


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
    row = conn.execute(QUERIES["stream_version"], {"aggregate_id": aggregate_id}).fetchone()
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
    Anything the event table cannot hold (NUL or a lone surrogate in a text, an id too long, a
    payload with NaN, infinity or nesting too deep) raises ``InvalidRequest`` before anything is
    sent to PostgreSQL, instead of a driver error.
    """
    if not events:
        return []
    check_text(aggregate_id, "aggregate_id", MAX_AGGREGATE_ID)
    check_text(aggregate_type, "aggregate_type", MAX_AGGREGATE_TYPE)
    if (
        isinstance(expected_version, bool)
        or not isinstance(expected_version, int)
        or not 0 <= expected_version <= MAX_SEQUENCE_NUM - len(events)
    ):
        raise InvalidRequest(
            f"expected_version must be an integer from 0 to {MAX_SEQUENCE_NUM - len(events)},"
            f" got {shorten(expected_version)}"
        )
    now = datetime.now(UTC)
    rows = [
        _row(aggregate_id, aggregate_type, e, expected_version + n, now, n)
        for n, e in enumerate(events, start=1)
    ]
    ids: list[UUID] = [row[0] for row in rows]
    with conn.transaction(), conn.cursor() as cur:
        actual = stream_version(conn, aggregate_id)
        if actual != expected_version:
            raise ConcurrencyConflict(
                f"aggregate {aggregate_id!r} is at version {actual}, expected {expected_version}"
            )
        try:
            cur.executemany(QUERIES["insert_event"], rows)
        except ConcurrencyConflict as exc:
            # A key of the event table (db.UNIQUE_CONSTRAINTS): most likely a concurrent writer
            # committed the same sequence_num between our read and our insert.
            raise ConcurrencyConflict(
                f"cannot append to aggregate {aggregate_id!r} at version {expected_version}: {exc}"
            ) from exc
    return ids


def _row(
    aggregate_id: str, aggregate_type: str, e: NewEvent, sequence_num: int, now: datetime, n: int
) -> tuple[Any, ...]:
    """The INSERT parameters of the ``n``-th event of an append, checked."""
    if not isinstance(e, NewEvent):
        raise InvalidRequest(f"event {n} must be a store.NewEvent, got {type(e).__name__}")
    event_type = check_text(e.event_type, f"event_type of event {n}", MAX_EVENT_TYPE)
    if e.event_id is not None and not isinstance(e.event_id, UUID):
        raise InvalidRequest(f"event_id of event {n} must be a UUID, got {shorten(e.event_id)}")
    if e.occurred_at is not None and not isinstance(e.occurred_at, datetime):
        raise InvalidRequest(
            f"occurred_at of event {n} must be a datetime, got {shorten(e.occurred_at)}"
        )
    return (
        e.event_id or uuid4(),
        aggregate_id,
        aggregate_type,
        event_type,
        encode_json(e.payload, f"the payload of event {n} ({event_type})"),
        encode_json(e.metadata, f"the metadata of event {n} ({event_type})"),
        sequence_num,
        e.occurred_at or now,
    )


def _escape(text: str) -> str:
    """Escape a value for COPY's text format."""
    return text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def copy_rows(conn: Connection, lines: Iterable[str], chunk_lines: int = 5000) -> int:
    """Bulk-load pre-formatted COPY text lines (see ``format_copy_line``) in one transaction.
    A duplicate (aggregate_id, sequence_num) aborts the whole load with ``ConcurrencyConflict``."""
    count = 0
    try:
        with conn.transaction(), conn.cursor() as cur, cur.copy(QUERIES["copy_events"]) as copy:
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
    except ConcurrencyConflict as exc:  # a key of the event table (db.UNIQUE_CONSTRAINTS)
        raise ConcurrencyConflict(
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
