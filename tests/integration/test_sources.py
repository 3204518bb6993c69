"""The source seam, tested by a second source: events from a list of dicts in a table of their own
(``tests/sources.py``), replayed through the real worker processes like the event table's.

The runner and the coordinator are the product's, unchanged: the job only names its source.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from scheduler.coordinator import Coordinator
from shared.db import Connection
from shared.errors import InvalidRequest
from tests import sources as list_source
from tests.folds import fold_order_summary

pytestmark = pytest.mark.integration

ORDERS = 120
T0 = datetime(2026, 5, 1, tzinfo=UTC)


def order_events(first: int, orders: int) -> list[dict[str, Any]]:
    """Orders ``first``..``first + orders - 1``, 6 to 30 events each, interleaved across orders as
    a log would hold them (each order's events in sequence_num order)."""
    per_order: list[list[dict[str, Any]]] = []
    for n in range(first, first + orders):
        agg = f"list-order-{n:04d}"
        kinds = ["OrderPlaced"] + ["ItemAdded"] * (4 + n % 24) + ["PaymentProcessed"]
        if n % 3:
            kinds.append("OrderShipped")
        per_order.append(
            [
                {
                    "event_id": uuid.uuid4(),
                    "aggregate_id": agg,
                    "aggregate_type": "Order",
                    "event_type": kind,
                    "payload": (
                        {"sku": f"sku-{seq}", "qty": 1 + seq % 4, "price": 1.25 * (n % 7 + 1)}
                        if kind == "ItemAdded"
                        else {"customer": f"c-{n}"}
                    ),
                    "sequence_num": seq,
                    "occurred_at": T0 + timedelta(minutes=n, seconds=seq),
                }
                for seq, kind in enumerate(kinds, start=1)
            ]
        )
    # Round robin: the list is in arrival order, not grouped by aggregate.
    longest = max(len(events) for events in per_order)
    return [events[i] for i in range(longest) for events in per_order if i < len(events)]


@pytest.fixture
def event_list(conn: Connection, clean: None) -> Iterator[list[dict[str, Any]]]:
    """The list source's table, holding ORDERS orders; dropped afterwards."""
    conn.execute(f"DROP TABLE IF EXISTS {list_source.TABLE}")
    events = order_events(0, ORDERS)
    list_source.write(conn, events)
    yield events
    conn.execute(f"DROP TABLE IF EXISTS {list_source.TABLE}")


def read_model(conn: Connection) -> dict[str, tuple[Any, ...]]:
    rows = conn.execute(
        "SELECT order_id, item_count, total, status, version FROM order_summary"
        " WHERE order_id LIKE 'list-order-%'"
    ).fetchall()
    return {r["order_id"]: (r["item_count"], r["total"], r["status"], r["version"]) for r in rows}


def test_a_job_reads_the_list_source_through_real_workers(
    coordinator: Coordinator, conn: Connection, event_list: list[dict[str, Any]]
) -> None:
    job_id = coordinator.submit("order_summary", reset=True, slices=4, source=list_source.NAME)
    job = coordinator.wait(job_id, timeout=120)
    assert job["status"] == "completed", job["error"]
    assert job["source"] == list_source.NAME
    assert job["processed_count"] == job["total_events"] == len(event_list)
    assert job["applied_count"] == len(event_list)
    assert len(job["slices"]) == 4
    for s in job["slices"]:  # exact counts per slice, and the source's own checkpoints
        assert s["processed_count"] == s["total_events"] > 0
        assert set(s["checkpoint"]) == {"position"}
        assert s["position"] == f"after position {s['checkpoint']['position']}"
    assert read_model(conn) == fold_order_summary(event_list)
    # Nothing was read from the event table: its orders are not in the read model.
    assert conn.execute("SELECT count(*) AS n FROM order_summary").fetchone()["n"] == ORDERS

    # A catch-up over a longer list: the scope frozen at planning, the events processed before
    # skipped by their markers (this source has no rebuild coverage), the new ones applied once.
    more = order_events(ORDERS, 30)
    list_source.write(conn, more)
    again = coordinator.wait(
        coordinator.submit("order_summary", slices=3, source=list_source.NAME), timeout=120
    )
    assert again["status"] == "completed", again["error"]
    assert again["processed_count"] == again["total_events"] == len(event_list) + len(more)
    assert (again["applied_count"], again["skipped_count"]) == (len(more), len(event_list))
    assert read_model(conn) == fold_order_summary(event_list + more)


def test_per_aggregate_order_holds_in_list_order(
    coordinator: Coordinator, conn: Connection, event_list: list[dict[str, Any]]
) -> None:
    # strict_order fails on any event that is not the next of its aggregate.
    job = coordinator.wait(
        coordinator.submit("strict_order", slices=5, source=list_source.NAME), timeout=120
    )
    assert job["status"] == "completed", job["error"]
    assert job["processed_count"] == job["total_events"] == len(event_list)
    rows = conn.execute("SELECT aggregate_id, last_seq, events FROM strict_order_state").fetchall()
    last = {}
    for e in event_list:
        last[e["aggregate_id"]] = e["sequence_num"]
    assert {r["aggregate_id"]: (r["last_seq"], r["events"]) for r in rows} == {
        a: (n, n) for a, n in last.items()
    }


def test_a_cancelled_list_job_resumes_from_its_checkpoints(
    coordinator: Coordinator, conn: Connection, event_list: list[dict[str, Any]]
) -> None:
    job_id = coordinator.submit(
        "slow_summary", reset=True, slices=2, source=list_source.NAME, max_events_per_second=400
    )
    deadline = time.monotonic() + 60
    while coordinator.get(job_id)["processed_count"] == 0:
        assert time.monotonic() < deadline, "the job did not start"
        time.sleep(0.05)
    cancelled = coordinator.cancel(job_id)
    assert cancelled["status"] == "cancelled"
    done_before = cancelled["processed_count"]
    assert 0 < done_before < len(event_list)
    checkpoints = [s["checkpoint"] for s in cancelled["slices"] if s["checkpoint"]]
    assert checkpoints and all(set(c) == {"position"} for c in checkpoints)

    resumed = coordinator.resume(job_id)
    assert resumed["status"] == "running"
    coordinator.throttle(job_id, None)  # the rest at full speed
    job = coordinator.wait(job_id, timeout=120)
    assert job["status"] == "completed", job["error"]
    assert job["processed_count"] == job["total_events"] == len(event_list)
    # Each event applied once: what the cancelled attempt applied was not applied again.
    assert job["applied_count"] == len(event_list)
    assert read_model(conn) == fold_order_summary(event_list)


def test_the_list_source_refuses_what_it_cannot_do(
    coordinator: Coordinator, conn: Connection, event_list: list[dict[str, Any]]
) -> None:
    with pytest.raises(InvalidRequest, match="source 'event_list' cannot slice by time"):
        coordinator.submit("slow_noop", slice_by="time", source=list_source.NAME)
    with pytest.raises(InvalidRequest, match="cannot reset one aggregate"):
        coordinator.submit(
            "order_summary", replay_type="aggregate", aggregate_id="list-order-0001", reset=True,
            source=list_source.NAME,
        )  # fmt: skip
    with pytest.raises(InvalidRequest, match=r"'Nope' \(known: ItemAdded, OrderPlaced"):
        coordinator.submit(
            "order_summary", replay_type="event_type", event_types=["Nope"],
            source=list_source.NAME,
        )  # fmt: skip
    with pytest.raises(InvalidRequest, match=r"unknown source 'nope' \(registered: event_list,"):
        coordinator.submit("order_summary", source="nope")
    assert conn.execute("SELECT count(*) AS n FROM replay_job").fetchone()["n"] == 0
