"""The written definition of a well-formed ItemAdded (examples.orders.events), without services:
what every reader accepts, what it refuses, and how the refusal reads."""

from __future__ import annotations

import math
from decimal import Decimal
from typing import Any
from uuid import UUID

import pytest

from examples.orders.events import Item, item_added
from examples.orders.handlers import _Delta
from examples.orders.reducer import OrderReducer
from shared.errors import MalformedEvent
from tests.folds import item

EVENT_ID = UUID("00000000-0000-0000-0000-00000000abcd")


def ev(payload: Any, seq: int = 7) -> Any:
    return {"event_id": EVENT_ID, "aggregate_id": "o1", "aggregate_type": "Order",
            "event_type": "ItemAdded", "sequence_num": seq, "payload": payload}  # fmt: skip


def p(**fields: Any) -> dict[str, Any]:
    return {"sku": "A", "qty": 1, "price": 1.5, **fields}


ACCEPTED = [
    pytest.param(p(qty=3, price=0.1), Item("A", 3, Decimal("0.1")), id="float-price"),
    pytest.param(p(price=20), Item("A", 1, Decimal("20")), id="int-price"),
    pytest.param(p(price=0), Item("A", 1, Decimal("0")), id="free"),
    pytest.param(p(price=0.0), Item("A", 1, Decimal("0.0")), id="free-float"),
    pytest.param(p(qty=2**31 - 1, price=0.01), Item("A", 2**31 - 1, Decimal("0.01")), id="max-qty"),
    pytest.param(
        p(price=999_999_999_999.99), Item("A", 1, Decimal("999999999999.99")), id="largest-line"
    ),
    pytest.param(p(sku=""), Item("", 1, Decimal("1.5")), id="empty-sku"),
    pytest.param(p(qty=3, price="19.99"), Item("A", 3, Decimal("19.99")), id="string-price"),
    pytest.param(p(price="20"), Item("A", 1, Decimal("20")), id="string-integer-price"),
    pytest.param({**p(), "note": [1, {"x": None}]}, Item("A", 1, Decimal("1.5")), id="extra"),
]

# (payload, the field the message must name)
REFUSED = [
    pytest.param("ItemAdded", "payload", id="string-payload"),
    pytest.param([p()], "payload", id="array-payload"),
    pytest.param(None, "payload", id="null-payload"),
    pytest.param({"qty": 1, "price": 1.5}, "sku", id="missing-sku"),
    pytest.param(p(sku=7), "sku", id="sku-number"),
    pytest.param({"sku": "A", "price": 1.5}, "qty", id="missing-qty"),
    pytest.param(p(qty="2"), "qty", id="qty-string"),
    pytest.param(p(qty=2.5), "qty", id="qty-fraction"),
    pytest.param(p(qty=2.0), "qty", id="qty-2.0"),
    pytest.param(p(qty=True), "qty", id="qty-bool"),
    pytest.param(p(qty=None), "qty", id="qty-null"),
    pytest.param(p(qty=0), "qty", id="qty-zero"),
    pytest.param(p(qty=-3), "qty", id="qty-negative"),
    pytest.param(p(qty=2**31), "qty", id="qty-beyond-int4"),
    pytest.param(p(qty=1e20), "qty", id="qty-huge-as-double"),
    pytest.param({"sku": "A", "qty": 1}, "price", id="missing-price"),
    pytest.param(p(price="NaN"), "price", id="price-NaN-string"),
    pytest.param(p(price="Infinity"), "price", id="price-Infinity-string"),
    pytest.param(p(price="1e400"), "price", id="price-1e400-string"),
    pytest.param(p(price="abc"), "price", id="price-abc"),
    pytest.param(p(price="19.999"), "price", id="price-string-sub-cent"),
    pytest.param(p(price="-1.50"), "price", id="price-string-signed"),
    pytest.param(p(price="1.5e1"), "price", id="price-string-exponent"),
    pytest.param(p(price=" 1.50"), "price", id="price-string-space"),
    pytest.param(p(price="1."), "price", id="price-string-bare-dot"),
    pytest.param(p(price="\u0661\u0662"), "price", id="price-string-arabic-digits"),
    pytest.param(p(price=10**400), "price", id="price-1e400-as-stored"),
    pytest.param(p(price=math.nan), "price", id="price-nan"),
    pytest.param(p(price=math.inf), "price", id="price-infinity"),
    pytest.param(p(price=-math.inf), "price", id="price-minus-infinity"),
    pytest.param(p(price=True), "price", id="price-bool"),
    pytest.param(p(price=None), "price", id="price-null"),
    pytest.param(p(price={"amount": 1}), "price", id="price-object"),
    pytest.param(p(price=Decimal("1.50")), "price", id="price-not-json"),
    pytest.param(p(price=-1.5), "price", id="price-negative"),
    pytest.param(p(price=0.001), "price", id="price-sub-cent"),
    pytest.param(p(price=10**12), "price", id="price-over-numeric-14-2"),
    pytest.param(p(qty=2, price=600_000_000_000), "price", id="line-over-numeric-14-2"),
    pytest.param(p(price=1e300), "price", id="price-1e300"),
]


@pytest.mark.parametrize(("payload", "expected"), ACCEPTED)
def test_well_formed_items_are_read_exactly(payload: Any, expected: Item) -> None:
    got = item_added(ev(payload))
    assert got == expected
    assert item(payload) == (got.qty, got.amount)  # the tests' fold agrees


@pytest.mark.parametrize(("payload", "field"), REFUSED)
def test_malformed_items_are_refused_in_one_line_naming_event_and_field(
    payload: Any, field: str
) -> None:
    with pytest.raises(MalformedEvent) as caught:
        item_added(ev(payload))
    message = str(caught.value)
    assert "\n" not in message
    assert str(EVENT_ID) in message and "#7" in message
    assert f": {field} " in message
    assert item(payload) is None  # the tests' fold agrees


def test_a_missing_field_says_missing_and_a_long_value_is_cut_short() -> None:
    missing = r"price is not a JSON number or decimal string, got missing$"
    with pytest.raises(MalformedEvent, match=missing):
        item_added(ev({"sku": "A", "qty": 1}))
    with pytest.raises(MalformedEvent) as caught:
        item_added(ev(p(price="x" * 100_000)))
    assert len(str(caught.value)) < 300


def test_the_python_path_and_the_reducer_refuse_before_changing_anything() -> None:
    delta = _Delta()
    delta.apply(ev(p(qty=2, price=1.25), seq=1))
    with pytest.raises(MalformedEvent):
        delta.apply(ev(p(price="NaN"), seq=2))
    assert (delta.item_count, delta.total, delta.version) == (2, Decimal("2.50"), 1)

    reducer = OrderReducer()
    state = reducer.apply(reducer.initial(), ev(p(qty=2, price=1.25), seq=1))
    with pytest.raises(MalformedEvent, match="#2"):
        reducer.apply(state, ev({"sku": "A", "qty": 1}, seq=2))
    assert state["total"] == "2.50" and state["lines"] == {"A": {"qty": 2, "price": "1.25"}}


def test_other_event_types_need_no_payload_fields() -> None:
    delta = _Delta()
    for seq, kind in enumerate(("OrderPlaced", "NoteAdded", "OrderShipped"), start=1):
        delta.apply({**ev("not an object", seq), "event_type": kind})
    assert (delta.item_count, delta.status, delta.version) == (0, "shipped", 3)


def test_a_snapshot_whose_values_the_fold_cannot_read_is_not_used() -> None:
    reducer = OrderReducer()
    assert reducer.readable(reducer.initial())
    for bad in ({"total": "NaN"}, {"total": "abc"}, {"total": [1]}, {"lines": []},
                {"lines": {"A": {"qty": "2", "price": "1"}}}):  # fmt: skip
        assert not reducer.readable({**reducer.initial(), **bad}), bad
