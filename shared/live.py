"""The live consumer: new events, as they commit, to every live handler with ``is_replay=False``.

Position: a snapshot per handler (``live_checkpoint``, see 0005_live.sql for why it cannot skip
an event). A step for a handler is one transaction: lock its checkpoint row (two consumers of one
handler take turns), read the events committed between its snapshot and now in per-aggregate
order, hand them over in batches through the same claim as replays (``processed_event`` decides,
so an event a concurrent catch-up replay also handles takes effect once), and store the new
snapshot. A crash anywhere rolls the whole step back; the restarted consumer does it again.
Per-aggregate order across steps holds because a writer appends sequence_num N+1 only after
seeing N committed, so N is visible in every snapshot that shows N+1.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from uuid import UUID

from shared import applying, db, idempotency, queries, sources
from shared.applying import BatchResult
from shared.context import Context
from shared.db import Connection
from shared.errors import DatabaseUnavailable
from shared.handlers import Event, IdempotentEventHandler
from shared.sources import postgres

log = logging.getLogger(__name__)

BATCH = 1000
IDLE_WAKE_SECONDS = 0.5  # poll this often even without a notification (a lost NOTIFY)
CHANNEL = "event_appended"
RETRY_SECONDS = 2.0  # a follower that lost PostgreSQL tries again this often
QUERIES = queries.load("live")


@dataclass(frozen=True)
class StepResult:
    handler: str
    events: int
    applied: int


def step(
    conn: Connection, handler: IdempotentEventHandler, *, is_replay: bool = False
) -> StepResult:
    """Handle everything committed since the handler's live position; move the position.
    ``is_replay``: a shadow rebuild's catch-up (shared.shadow), which must not repeat side
    effects."""
    applied = seen = 0
    with conn.transaction():
        row = conn.execute(QUERIES["lock_checkpoint"], {"handler": handler.name}).fetchone()
        now = conn.execute(QUERIES["current_snapshot"]).fetchone()
        assert now is not None
        if row is None:
            # A new live handler starts at the present: history is what replays are for.
            conn.execute(
                QUERIES["insert_checkpoint"], {"handler": handler.name, "snapshot": now["s"]}
            )
            return StepResult(handler.name, 0, 0)
        params = {"prev": row["s"], "now": now["s"]}
        # A server-side cursor: a long backlog streams in batches, never all in memory.
        with conn.cursor(name=f"live_{handler.name}", binary=True) as cur:
            cur.execute(postgres.NEW_EVENTS, params)
            while batch := cur.fetchmany(BATCH):
                events: list[Event] = batch  # type: ignore[assignment]
                result = applying.apply_live(conn, handler, events, is_replay=is_replay)
                seen += len(events)
                applied += len(result.applied)
        conn.execute(
            QUERIES["move_checkpoint"],
            {"snapshot": now["s"], "events": seen, "handler": handler.name},
        )
    return StepResult(handler.name, seen, applied)


def live_handlers(ctx: Context, names: list[str] | None = None) -> list[IdempotentEventHandler]:
    if names:
        return [ctx.registry.get(n) for n in names]
    return [h for h in ctx.registry if h.live]


def run(
    ctx: Context,
    handlers: list[IdempotentEventHandler],
    stop: threading.Event,
    *,
    on_step: Callable[[StepResult], None] | None = None,
    on_outage: Callable[[DatabaseUnavailable], None] | None = None,
    on_recovery: Callable[[float], None] | None = None,
) -> None:
    """Follow the store until ``stop`` is set: a step per handler on every NOTIFY (or every
    IDLE_WAKE_SECONDS). A failing handler is retried after a pause; its position does not move,
    so nothing is skipped (live poison events block their handler: fix, and it goes on).

    A PostgreSQL outage does not end it, as it does not end a worker's task (issue 12): it calls
    ``on_outage`` once, tries again every RETRY_SECONDS, and calls ``on_recovery`` (with the
    outage's length in seconds) once it follows again. Nothing is skipped or repeated: a step
    is one transaction, and the position is in the database."""
    backoff: dict[str, float] = {}
    down_since: float | None = None

    def connected() -> None:
        nonlocal down_since
        if down_since is not None and on_recovery is not None:
            on_recovery(time.monotonic() - down_since)
        down_since = None

    while not stop.is_set():
        try:
            _follow(ctx, handlers, stop, backoff, on_step, connected)
        except DatabaseUnavailable as exc:
            if down_since is None:
                down_since = time.monotonic()
                if on_outage is not None:
                    on_outage(exc)
            stop.wait(RETRY_SECONDS)


def _follow(
    ctx: Context,
    handlers: list[IdempotentEventHandler],
    stop: threading.Event,
    backoff: dict[str, float],
    on_step: Callable[[StepResult], None] | None,
    connected: Callable[[], None],
) -> None:
    """``run`` until ``stop`` is set or PostgreSQL goes away (``DatabaseUnavailable``)."""
    listener = db.connect(ctx.settings)
    try:
        listener.execute(db.sql.SQL("LISTEN {}").format(db.sql.Identifier(CHANNEL)))
        with ctx.pool.connection() as conn:
            connected()
            while not stop.is_set():
                for handler in handlers:
                    if backoff.get(handler.name, 0) > time.monotonic():
                        continue
                    try:
                        result = step(conn, handler)
                    except DatabaseUnavailable:
                        raise
                    except Exception:
                        log.exception("live step of %s failed; retrying in 5 s", handler.name)
                        backoff[handler.name] = time.monotonic() + 5
                        continue
                    if on_step is not None and result.events:
                        on_step(result)
                for _ in listener.notifies(timeout=IDLE_WAKE_SECONDS, stop_after=1):
                    pass
    finally:
        listener.close()


def process_live(ctx: Context, consumer: str, event_ids: Sequence[UUID | str]) -> BatchResult:
    """The live entry point: hand events (by id) to a handler with ``is_replay=False``, in
    per-aggregate order, exactly once each (already processed ones are skipped)."""
    handler = ctx.registry.get(consumer)
    store = sources.get(sources.DEFAULT)  # live processing follows the event table
    with ctx.pool.connection() as conn, conn.transaction():
        events = store.events(conn, event_ids)
        result = applying.apply_live(conn, handler, events)
        epoch = idempotency.current_epoch(conn, handler.name)
    ctx.cache.mark(handler.name, epoch, [e["event_id"] for e in result.applied])
    return result
