"""The built-in handlers' fold and the registry, without services."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from examples.orders.handlers import _Delta
from shared.errors import ConfigurationError, InvalidRequest
from shared.handlers import IdempotentEventHandler, Registry, load_registry
from tests.folds import fold_order_summary


def ev(seq: int, kind: str, **payload: Any) -> dict[str, Any]:
    return {"aggregate_id": "o1", "aggregate_type": "Order", "event_type": kind,
            "sequence_num": seq, "payload": payload}  # fmt: skip


def test_delta_follows_the_design_definition() -> None:
    events = [
        ev(1, "OrderPlaced"),
        ev(2, "ItemAdded", sku="A", qty=3, price=0.1),  # 0.1 as a float: no binary drift
        ev(3, "ItemAdded", sku="B", qty=2, price=19.99),
        ev(4, "NoteAdded", note="x"),
        ev(5, "PaymentProcessed"),
    ]
    d = _Delta()
    for e in events:
        d.apply(e)  # type: ignore[arg-type]
    assert (d.item_count, d.total, d.status, d.version) == (5, Decimal("40.28"), "paid", 5)
    assert fold_order_summary(events)["o1"] == (5, Decimal("40.28"), "paid", 5)


def test_registry_has_the_builtins_and_names_unknown_consumers() -> None:
    registry = load_registry()
    assert {"order_summary", "order_notifications"} <= set(registry.names())
    assert registry.get("order_summary").requires_order
    assert not registry.get("order_notifications").requires_order
    with pytest.raises(InvalidRequest, match="order_summary"):
        registry.get("nope")


def test_registry_refuses_a_missing_module_and_duplicate_names() -> None:
    with pytest.raises(ConfigurationError, match="no_such_module"):
        load_registry(["no_such_module"])

    class A(IdempotentEventHandler):
        name = "dup"

    class B(IdempotentEventHandler):
        name = "dup"

    registry = Registry()
    registry.register(A())
    with pytest.raises(ConfigurationError):
        registry.register(B())
