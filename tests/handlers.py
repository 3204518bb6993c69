"""Handlers used only by the tests (loaded through REPLAY_HANDLER_MODULES=tests.handlers)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from examples.orders.handlers import OrderSummary
from shared.db import Connection
from shared.handlers import Event, IdempotentEventHandler, handler
from shared.sources.kafka_decoding import Message, decoder


class OutOfOrder(Exception):
    pass


@handler
class StrictOrder(IdempotentEventHandler):
    """Fails on any event that is not the next sequence_num of its aggregate."""

    name = "strict_order"
    requires_order = True
    live = False

    def setup(self, conn: Connection) -> None:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS strict_order_state"
            " (aggregate_id text PRIMARY KEY, last_seq bigint NOT NULL, events bigint NOT NULL)"
        )

    def handle(self, conn: Connection, event: Event, *, is_replay: bool) -> None:
        row = conn.execute(
            "SELECT last_seq FROM strict_order_state WHERE aggregate_id = %s",
            (event["aggregate_id"],),
        ).fetchone()
        last = row["last_seq"] if row else 0
        if event["sequence_num"] != last + 1:
            raise OutOfOrder(
                f"{event['aggregate_id']}: got sequence_num {event['sequence_num']} after {last}"
            )
        conn.execute(
            "INSERT INTO strict_order_state (aggregate_id, last_seq, events) VALUES (%s, %s, 1)"
            " ON CONFLICT (aggregate_id) DO UPDATE SET last_seq = EXCLUDED.last_seq,"
            " events = strict_order_state.events + 1",
            (event["aggregate_id"], event["sequence_num"]),
        )

    def reset(self, conn: Connection, aggregate_id: str | None) -> None:
        conn.execute("TRUNCATE strict_order_state")


@handler
class SlowNoop(IdempotentEventHandler):
    """Does nothing, slowly: long enough per batch to watch a slice's progress."""

    name = "slow_noop"
    requires_order = False
    live = False
    SECONDS_PER_BATCH = 0.25

    def handle_batch(self, conn: Connection, events: Sequence[Event], *, is_replay: bool) -> None:
        time.sleep(self.SECONDS_PER_BATCH)

    def reset(self, conn: Connection, aggregate_id: str | None) -> None:
        return None


class Poisoned(Exception):
    pass


@handler
class PoisonableSummary(OrderSummary):
    """order_summary's semantics, into the same table, but failing on the events listed in
    ``poison_rule`` (a "bug" that the tests fix by deleting the rule)."""

    name = "poisonable_summary"
    live = False
    rebuild_sql = None  # always through handle_batch, where the poison is

    def setup(self, conn: Connection) -> None:
        super().setup(conn)
        conn.execute("CREATE TABLE IF NOT EXISTS poison_rule (event_id uuid PRIMARY KEY)")

    def handle_batch(self, conn: Connection, events: Sequence[Event], *, is_replay: bool) -> None:
        poisoned = conn.execute(
            "SELECT event_id FROM poison_rule WHERE event_id = ANY(%s)",
            ([e["event_id"] for e in events],),
        ).fetchone()
        if poisoned:
            raise Poisoned(f"cannot apply event {poisoned['event_id']}")
        super().handle_batch(conn, events, is_replay=is_replay)


@handler
class SlowSummary(PoisonableSummary):
    """The same, 50 ms per batch: slow enough to kill, cancel or flush things mid-job."""

    name = "slow_summary"
    SECONDS_PER_BATCH = 0.05

    def setup(self, conn: Connection) -> None:
        super().setup(conn)
        # Counts every event this handler is handed, rolled-back batches included: a sequence
        # does not roll back (how many events a crash made it re-read).
        conn.execute("CREATE SEQUENCE IF NOT EXISTS slow_summary_handed")

    def handle_batch(self, conn: Connection, events: Sequence[Event], *, is_replay: bool) -> None:
        conn.execute(
            "SELECT nextval('slow_summary_handed') FROM generate_series(1, %s)", (len(events),)
        )
        time.sleep(self.SECONDS_PER_BATCH)
        super().handle_batch(conn, events, is_replay=is_replay)


@handler
class LiveAudit(IdempotentEventHandler):
    """Records every event it is handed (a second time is a primary-key violation) and fails on
    any event that is not the next sequence_num of its aggregate."""

    name = "live_audit"
    live = False  # only when named: the live tests start it explicitly

    def setup(self, conn: Connection) -> None:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS live_audit (event_id uuid PRIMARY KEY,"
            " aggregate_id text NOT NULL, sequence_num bigint NOT NULL, is_replay boolean NOT NULL,"
            " UNIQUE (aggregate_id, sequence_num))"
        )

    def handle_batch(self, conn: Connection, events: Sequence[Event], *, is_replay: bool) -> None:
        for e in events:
            last = conn.execute(
                "SELECT coalesce(max(sequence_num), 0) AS s FROM live_audit"
                " WHERE aggregate_id = %s",
                (e["aggregate_id"],),
            ).fetchone()["s"]
            if e["sequence_num"] != last + 1:
                raise OutOfOrder(f"{e['aggregate_id']}: {e['sequence_num']} after {last}")
            conn.execute(
                "INSERT INTO live_audit VALUES (%s, %s, %s, %s)",
                (e["event_id"], e["aggregate_id"], e["sequence_num"], is_replay),
            )

    def reset(self, conn: Connection, aggregate_id: str | None) -> None:
        conn.execute("TRUNCATE live_audit")


import tests.sources  # noqa: E402, F401 -- registers the test source "event_list"


@decoder("order_lines")
def order_lines(message: Message) -> dict[str, Any]:
    """Kafka messages whose value is a line of text, not JSON: ``OrderPlaced``, ``ItemAdded
    <sku> <qty> <price>``, ``OrderShipped``, ``PaymentProcessed`` (a plugged decoder)."""
    kind, *rest = (message.value or b"").decode().split()
    if kind == "ItemAdded":
        sku, qty, price = rest
        payload: dict[str, Any] = {"sku": sku, "qty": int(qty), "price": price}
    elif kind in ("OrderPlaced", "OrderShipped", "PaymentProcessed") and not rest:
        payload = {}
    else:
        raise ValueError(f"not an order line: {kind!r}")
    return {"event_type": kind, "aggregate_type": "Order", "payload": payload}
