"""Independent folds for the tests: written from DESIGN.md's definitions, in plain Python over
plainly selected rows, sharing no code with the handlers, the scope filters or the demo's SQL."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

STATUS = {"OrderPlaced": "placed", "PaymentProcessed": "paid", "OrderShipped": "shipped"}

Summary = dict[str, tuple[int, Decimal, str | None, int]]


MAX_INT4 = 2**31 - 1
LIMIT_TOTAL = Decimal(10) ** 12  # numeric(14,2) holds less


def fold_order_summary(events: list[dict[str, Any]]) -> Summary:
    """order_id -> (item_count, total, status, version) from ``events`` in any order."""
    return fold_order_summary_and_refusals(events)[0]


def fold_order_summary_and_refusals(events: list[dict[str, Any]]) -> tuple[Summary, set[Any]]:
    """The read model, and the event ids it cannot take: a malformed ItemAdded (``item``), or one
    that would carry its order's item_count past int4 or its total past numeric(14,2). Those
    change nothing, not even the version: a rebuild with ``on_error=park`` parks them."""
    state: dict[str, list[Any]] = {}
    refused: set[Any] = set()
    for e in sorted(events, key=lambda e: (e["aggregate_id"], e["sequence_num"])):
        if e["aggregate_type"] != "Order":
            continue
        row = state.setdefault(e["aggregate_id"], [0, Decimal("0.00"), None, 0])
        if e["event_type"] == "ItemAdded":
            line = item(e["payload"])
            if line is None or row[0] + line[0] > MAX_INT4 or row[1] + line[1] >= LIMIT_TOTAL:
                refused.add(e["event_id"])
                continue
            row[0] += line[0]
            row[1] += line[1]
        elif e["event_type"] in STATUS:
            row[2] = STATUS[e["event_type"]]
        row[3] = e["sequence_num"]
    summary = {k: (v[0], v[1].quantize(Decimal("0.01")), v[2], v[3]) for k, v in state.items()}
    return summary, refused


def item(payload: Any) -> tuple[int, Decimal] | None:
    """(qty, qty * price) of a well-formed ItemAdded payload as decoded from jsonb, else None:
    an object with a string sku, an integer qty from 1 to int4's maximum, a finite price (a
    number, or a string of a plain decimal) of whole cents from 0, and qty * price below 10^12
    (numeric(14,2)); restated from the written definition (examples/orders/events.py), not
    imported."""
    if type(payload) is not dict or type(payload.get("sku")) is not str:
        return None
    qty, price = payload.get("qty"), payload.get("price")
    if type(qty) is not int or not 0 < qty <= MAX_INT4:
        return None
    if type(price) is str:  # a plain decimal: ASCII digits, at most one dot between digits
        whole, _, fraction = price.partition(".")
        digits = whole + fraction
        if not (digits.isascii() and digits.isdigit() and whole and (fraction or "." not in price)):
            return None
        cents = Decimal(price) * 100
    elif type(price) not in (int, float) or price != price or abs(price) == float("inf"):
        return None
    else:
        cents = Decimal(repr(price)) * 100
    if cents < 0 or cents != cents.to_integral_value() or qty * cents >= LIMIT_TOTAL * 100:
        return None
    return qty, qty * cents / 100


def read_order_summary(conn: Any) -> Summary:
    rows = conn.execute(
        "SELECT order_id, item_count, total, status, version FROM order_summary"
    ).fetchall()
    return {
        r["order_id"]: (r["item_count"], Decimal(r["total"]), r["status"], r["version"])
        for r in rows
    }
