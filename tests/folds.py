"""Independent folds for the tests: written from DESIGN.md's definitions, in plain Python over
plainly selected rows, sharing no code with the handlers, the scope filters or the demo's SQL."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

STATUS = {"OrderPlaced": "placed", "PaymentProcessed": "paid", "OrderShipped": "shipped"}

Summary = dict[str, tuple[int, Decimal, str | None, int]]


def fold_order_summary(events: list[dict[str, Any]]) -> Summary:
    """order_id -> (item_count, total, status, version) from ``events`` in any order."""
    state: dict[str, list[Any]] = {}
    for e in sorted(events, key=lambda e: (e["aggregate_id"], e["sequence_num"])):
        if e["aggregate_type"] != "Order":
            continue
        row = state.setdefault(e["aggregate_id"], [0, Decimal("0.00"), None, 0])
        if e["event_type"] == "ItemAdded":
            qty = int(e["payload"]["qty"])
            row[0] += qty
            row[1] += qty * Decimal(str(e["payload"]["price"]))
        elif e["event_type"] in STATUS:
            row[2] = STATUS[e["event_type"]]
        row[3] = e["sequence_num"]
    return {k: (v[0], v[1].quantize(Decimal("0.01")), v[2], v[3]) for k, v in state.items()}


def read_order_summary(conn: Any) -> Summary:
    rows = conn.execute(
        "SELECT order_id, item_count, total, status, version FROM order_summary"
    ).fetchall()
    return {
        r["order_id"]: (r["item_count"], Decimal(r["total"]), r["status"], r["version"])
        for r in rows
    }
