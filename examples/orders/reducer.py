"""The Order reducer of ``load_aggregate``: an order's status, lines, total, paid and shipped,
folded from its events (and kept in snapshots)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from examples.orders import events as order_events
from shared.aggregates import Reducer, reducer
from shared.handlers import Event


@reducer
class OrderReducer(Reducer):
    """An Order: status, lines (sku -> qty, price), total, paid, shipped."""

    aggregate_type = "Order"
    version = 1

    def initial(self) -> dict[str, Any]:
        return {"status": None, "lines": {}, "total": "0.00", "paid": False, "shipped": False}

    def readable(self, state: Any) -> bool:
        """Also the values the fold reads back: a total of finite decimal text, lines a mapping
        of {qty: int, price: text} (a snapshot edited by hand must not end a load in a
        ValueError: it is ignored, and the events folded from the start)."""
        if not super().readable(state) or not isinstance(state["lines"], dict):
            return False
        try:
            if not Decimal(state["total"]).is_finite():
                return False
        except (TypeError, ValueError, ArithmeticError):  # InvalidOperation: ArithmeticError
            return False
        return all(
            isinstance(line, dict) and type(line.get("qty")) is int
            for line in state["lines"].values()
        )

    def apply(self, state: dict[str, Any], event: Event) -> dict[str, Any]:
        kind = event["event_type"]
        if kind == "OrderPlaced":
            state["status"] = "placed"
        elif kind == "ItemAdded":
            # The one definition of a well-formed ItemAdded, order_summary's too: a malformed
            # one raises MalformedEvent (its id and sequence_num) before the state changes.
            item = order_events.item_added(event)
            line = state["lines"].setdefault(item.sku, {"qty": 0, "price": str(item.price)})
            line["qty"] += item.qty
            line["price"] = str(item.price)
            state["total"] = str(Decimal(state["total"]) + item.amount)
        elif kind == "PaymentProcessed":
            state["status"], state["paid"] = "paid", True
        elif kind == "OrderShipped":
            state["status"], state["shipped"] = "shipped", True
        return state
