"""Applying a batch of events to a handler, exactly once each: the one step that replay slices,
live processing and retries of parked events share. It runs inside the caller's transaction, so
the processed markers commit with the handler's writes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from uuid import UUID

from shared import idempotency
from shared.db import Connection
from shared.handlers import Event, IdempotentEventHandler

#: the shared side of the lock that a cutover takes (``pause_live`` in shadow.sql)
PAUSE_SHARED = (
    "SELECT pg_advisory_xact_lock_shared(hashtextextended('replay-live:' || %(consumer)s, 0))"
)


@dataclass(frozen=True)
class BatchResult:
    applied: list[Event]
    skipped: int
    #: events the database (not the cache) said were processed before: worth caching
    already_processed: list[UUID]


def apply_batch(
    conn: Connection,
    handler: IdempotentEventHandler,
    events: Sequence[Event],
    *,
    is_replay: bool,
    known_processed: set[UUID] = frozenset(),  # type: ignore[assignment]
    in_order: bool = False,
) -> BatchResult:
    """Claim ``events`` for ``handler`` and hand it those not processed before, in order.
    ``in_order``: events of the event table, whose progress is kept per aggregate
    (``idempotency.claim_in_order``). Must run inside the caller's transaction."""
    candidates = [e for e in events if e["event_id"] not in known_processed]
    if in_order:
        claimed = idempotency.claim_in_order(conn, handler.name, events, known_processed)
    else:
        claimed = idempotency.claim(conn, handler.name, [e["event_id"] for e in candidates])
    already = [e["event_id"] for e in candidates if e["event_id"] not in claimed]
    fresh = []
    for e in candidates:
        # Handed over once, even if the batch carries the id twice: a source may repeat an
        # event (a Kafka producer that retries appends the message again, with its event_id).
        if e["event_id"] in claimed:
            claimed.discard(e["event_id"])
            fresh.append(e)
    if fresh:
        handler.handle_batch(conn, fresh, is_replay=is_replay)
    return BatchResult(applied=fresh, skipped=len(events) - len(fresh), already_processed=already)


def apply_live(
    conn: Connection,
    handler: IdempotentEventHandler,
    events: Sequence[Event],
    *,
    is_replay: bool = False,
) -> BatchResult:
    """``apply_batch`` with ``is_replay=False``, for live processing: events of the handler's
    last full rebuild are that rebuild's business (processed by it, or to be, if it has not
    completed yet), so they count as processed."""
    # held off while a shadow of this handler is swapped in or out (shared.shadow_ops)
    conn.execute(PAUSE_SHARED, {"consumer": handler.name})
    owned = idempotency.covered(conn, handler.name, [e["event_id"] for e in events])
    return apply_batch(
        conn, handler, events, is_replay=is_replay, known_processed=owned, in_order=True
    )
