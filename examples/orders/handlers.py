"""The Order example's handlers, registered like a user's would be. Their tables and semantics
are a contract (DESIGN.md): acceptance checks compare them with folds of their own.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

from examples.orders import events as order_events
from shared.db import Connection
from shared.handlers import Event, IdempotentEventHandler, handler

ORDER = "Order"
STATUS_BY_EVENT = {"OrderPlaced": "placed", "PaymentProcessed": "paid", "OrderShipped": "shipped"}

# GREATEST: an event applied late (a parked event retried after a fix) must not move the
# version back; in order, the batch's last sequence_num is always the greatest.
UPSERT_ORDER_SUMMARY = """
INSERT INTO order_summary AS s (order_id, item_count, total, status, version)
VALUES (%s, %s, %s, %s, %s)
ON CONFLICT (order_id) DO UPDATE SET
    item_count = s.item_count + EXCLUDED.item_count,
    total      = s.total + EXCLUDED.total,
    status     = COALESCE(EXCLUDED.status, s.status),
    version    = GREATEST(s.version, EXCLUDED.version)
"""


@dataclass
class _Delta:
    """What a run of events does to one order_summary row."""

    item_count: int = 0
    total: Decimal = Decimal("0.00")
    status: str | None = None
    version: int = 0

    def apply(self, event: Event) -> None:
        """Add ``event``, or raise ``MalformedEvent`` (examples.orders.events); change nothing
        then."""
        kind = event["event_type"]
        if kind == "ItemAdded":
            item = order_events.item_added(event)
            self.item_count += item.qty
            self.total += item.amount
        else:
            self.status = STATUS_BY_EVENT.get(kind, self.status)
        self.version = event["sequence_num"]


# The same fold as _Delta, set-based, for full rebuilds: per order of the batch, the items and
# totals added, the status of the last status event, the last sequence_num. An ItemAdded that
# _Delta refuses makes it fail (order_events.BATCH_ITEMS_SQL): the runner then
# takes the batch through handle_batch, which finds the event and applies the job's on_error.
REBUILD_ORDER_SUMMARY = f"""
INSERT INTO order_summary AS s (order_id, item_count, total, status, version)
SELECT aggregate_id,
       coalesce(sum(qty), 0),
       coalesce(sum(amount), 0),
       (array_agg(CASE event_type WHEN 'OrderPlaced' THEN 'placed'
                                  WHEN 'PaymentProcessed' THEN 'paid'
                                  WHEN 'OrderShipped' THEN 'shipped' END
                  ORDER BY sequence_num DESC)
            FILTER (WHERE event_type IN ('OrderPlaced', 'PaymentProcessed', 'OrderShipped')))[1],
       max(sequence_num)
  FROM ({order_events.BATCH_ITEMS_SQL}) AS items
 GROUP BY aggregate_id
ON CONFLICT (order_id) DO UPDATE SET
    item_count = s.item_count + EXCLUDED.item_count,
    total      = s.total + EXCLUDED.total,
    status     = COALESCE(EXCLUDED.status, s.status),
    version    = GREATEST(s.version, EXCLUDED.version)
"""


@handler
class OrderSummary(IdempotentEventHandler):
    """Read model of an order: item count, total, status and the last sequence_num applied."""

    name = "order_summary"
    requires_order = True
    rebuild_sql = REBUILD_ORDER_SUMMARY
    tables = ("order_summary",)

    def setup(self, conn: Connection) -> None:
        conn.execute(
            """
            CREATE TABLE IF NOT EXISTS order_summary (
                order_id   text PRIMARY KEY,
                item_count int           NOT NULL DEFAULT 0,
                total      numeric(14,2) NOT NULL DEFAULT 0,
                status     text,
                version    bigint        NOT NULL DEFAULT 0
            )
            """
        )

    def handle(self, conn: Connection, event: Event, *, is_replay: bool) -> None:
        self.handle_batch(conn, [event], is_replay=is_replay)

    def handle_batch(self, conn: Connection, events: Sequence[Event], *, is_replay: bool) -> None:
        # Fold the batch per order in memory, then write one upsert per order touched: events of
        # one order arrive in sequence_num order, so the last status and version win.
        deltas: dict[str, _Delta] = {}
        for event in events:
            if event["aggregate_type"] != ORDER:
                continue
            deltas.setdefault(event["aggregate_id"], _Delta()).apply(event)
        if not deltas:
            return
        with conn.cursor() as cur:
            cur.executemany(
                UPSERT_ORDER_SUMMARY,
                [(oid, d.item_count, d.total, d.status, d.version) for oid, d in deltas.items()],
            )

    def reset(self, conn: Connection, aggregate_id: str | None) -> None:
        if aggregate_id is None:
            conn.execute("TRUNCATE order_summary")
        else:
            conn.execute("DELETE FROM order_summary WHERE order_id = %s", (aggregate_id,))


@handler
class OrderNotifications(IdempotentEventHandler):
    """Sends a shipping email (one row in email_outbox) per OrderShipped, never during replay."""

    name = "order_notifications"
    requires_order = False

    def setup(self, conn: Connection) -> None:
        conn.execute(
            """
            CREATE TABLE IF NOT EXISTS email_outbox (
                event_id   uuid PRIMARY KEY,
                order_id   text        NOT NULL,
                created_at timestamptz NOT NULL DEFAULT now()
            )
            """
        )

    def handle(self, conn: Connection, event: Event, *, is_replay: bool) -> None:
        self.handle_batch(conn, [event], is_replay=is_replay)

    def handle_batch(self, conn: Connection, events: Sequence[Event], *, is_replay: bool) -> None:
        if is_replay:
            return  # an email already sent must not be sent again by a replay
        rows = [
            (e["event_id"], e["aggregate_id"]) for e in events if e["event_type"] == "OrderShipped"
        ]
        if rows:
            with conn.cursor() as cur:
                cur.executemany(
                    "INSERT INTO email_outbox (event_id, order_id) VALUES (%s, %s)"
                    " ON CONFLICT (event_id) DO NOTHING",
                    rows,
                )

    def reset(self, conn: Connection, aggregate_id: str | None) -> None:
        # The outbox records side effects that happened in the world; a rebuild must not undo
        # (or redo) them, so there is no state to clear.
        return None
