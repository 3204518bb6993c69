"""A shadow rebuild as an operator runs it on a read model in use (issue 16's acceptance): 200,000
events, 37 corrupted rows, writers appending and a live consumer applying for the whole test,
a reader counting rows in a loop; diff, then cutover under the writers."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from examples.orders import seed
from scheduler.coordinator import Coordinator
from shared import context, db, live, store
from shared.db import Connection
from shared.settings import Settings
from tests.folds import fold_order_summary, read_order_summary
from tests.integration.conftest import TOTAL_SEEDED, events_where

pytestmark = pytest.mark.integration

HANDLER = "order_summary"
SEED = 99  # orders order-99-*: the extra events, removed after the test
ORDERS = (200_000 - TOTAL_SEEDED) // 100


@pytest.fixture
def big(conn: Connection) -> Iterator[None]:
    seed.seed(conn, ORDERS, 100, seed=SEED)
    yield
    conn.execute(
        "DELETE FROM event WHERE aggregate_id LIKE 'order-99-%' OR aggregate_id LIKE 'w-%'"
    )


class Busy:
    """Writers, a live consumer and a reader, each a thread on its own connection."""

    def __init__(self, settings: Settings, ctx: context.Context) -> None:
        self.settings, self.ctx = settings, ctx
        self.stop = threading.Event()
        self.writing = threading.Event()
        self.writing.set()
        self.min_rows: int | None = None
        self.appended = 0
        self.errors: list[BaseException] = []
        self.threads = [
            threading.Thread(target=self._guard(f)) for f in (self.write, self.apply, self.read)
        ]

    def _guard(self, f: Any) -> Any:
        def run() -> None:
            try:
                f()
            except BaseException as exc:
                self.errors.append(exc)

        return run

    def write(self) -> None:
        rng = random.Random(5)
        with db.connect(self.settings) as conn:
            n = 0
            while not self.stop.is_set():
                if not self.writing.wait(0.05):
                    continue
                n += 1
                order = (
                    f"w-{n // 10:05d}"
                    if n % 3 == 0
                    else seed.aggregate_id(SEED, rng.randrange(ORDERS))
                )
                version = store.stream_version(conn, order)
                events = [store.NewEvent("ItemAdded", {"sku": "w", "qty": 1, "price": "3.00"})]
                if version == 0:
                    events.insert(0, store.NewEvent("OrderPlaced", {"customer": "w"}))
                store.append(conn, order, "Order", events, expected_version=version)
                self.appended += len(events)
                time.sleep(0.01)

    def apply(self) -> None:
        handler = self.ctx.registry.get(HANDLER)
        with db.connect(self.settings) as conn:
            while not self.stop.is_set():
                if not live.step(conn, handler).events:
                    time.sleep(0.02)

    def read(self) -> None:
        with db.connect(self.settings) as conn:
            while not self.stop.is_set():
                rows = conn.execute("SELECT count(*) AS n FROM order_summary").fetchone()["n"]
                self.min_rows = rows if self.min_rows is None else min(self.min_rows, rows)
                time.sleep(0.005)

    def settle(self) -> None:
        """Writers paused, and the live consumer caught up with them."""
        self.writing.clear()
        time.sleep(0.2)
        handler = self.ctx.registry.get(HANDLER)
        with db.connect(self.settings) as conn:
            while live.step(conn, handler).events:
                pass


def test_a_read_model_in_use_is_repaired_beside_itself_and_cut_over(
    coordinator: Coordinator, conn: Connection, ctx: context.Context, settings: Settings,
    big: None,
) -> None:  # fmt: skip
    built = coordinator.wait(coordinator.submit(HANDLER, slices=8), timeout=300)
    assert built["status"] == "completed" and built["applied_count"] == 200_000
    bad = conn.execute(
        "UPDATE order_summary SET total = total + 1"
        " WHERE order_id IN (SELECT order_id FROM order_summary ORDER BY random() LIMIT 37)"
        " RETURNING order_id"
    ).fetchall()
    corrupted = {r["order_id"] for r in bad}
    rows_before = len(read_order_summary(conn))

    busy = Busy(settings, ctx)
    live.step(conn, ctx.registry.get(HANDLER))  # the live consumer starts at the present
    for t in busy.threads:
        t.start()
    try:
        job_id = coordinator.submit(HANDLER, reset=True, shadow=True, slices=8)
        job = coordinator.wait(job_id, timeout=300)
        assert job["shadow_phase"] == "ready", job.get("error")

        busy.settle()
        (table,) = coordinator.diff(job_id)["tables"]
        assert table["only_live"] == table["only_shadow"] == 0
        assert table["changed"] == 37 and table["changed_columns"] == {"total": 37}
        changed = {e["key"]["order_id"] for e in table["examples"]["changed"]}
        assert changed <= corrupted

        busy.writing.set()
        time.sleep(0.5)
        assert coordinator.cutover(job_id)["shadow_phase"] == "cut_over"
        time.sleep(0.5)
        busy.settle()
    finally:
        busy.stop.set()
        for t in busy.threads:
            t.join(30)
    assert not busy.errors, busy.errors
    assert busy.appended > 0
    # every event, those appended during the test included, applied once
    assert read_order_summary(conn) == fold_order_summary(events_where(conn))
    assert busy.min_rows is not None and busy.min_rows >= rows_before
