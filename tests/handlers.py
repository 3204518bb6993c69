"""Handlers used only by the tests (loaded through REPLAY_HANDLER_MODULES=tests.handlers)."""

from __future__ import annotations

import time
from collections.abc import Sequence

from shared.db import Connection
from shared.handlers import Event, IdempotentEventHandler, handler


class OutOfOrder(Exception):
    pass


@handler
class StrictOrder(IdempotentEventHandler):
    """Fails on any event that is not the next sequence_num of its aggregate."""

    name = "strict_order"
    requires_order = True

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
    SECONDS_PER_BATCH = 0.25

    def handle_batch(self, conn: Connection, events: Sequence[Event], *, is_replay: bool) -> None:
        time.sleep(self.SECONDS_PER_BATCH)

    def reset(self, conn: Connection, aggregate_id: str | None) -> None:
        return None
