"""What a well-formed Order event is: one definition for every reader of the events.

The readers are ``order_summary``'s Python path (``handlers._Delta``), its set-based SQL fold
for full rebuilds (``handlers.REBUILD_ORDER_SUMMARY``) and the Order reducer of
``load_aggregate`` (``reducer.OrderReducer``). They must refuse the same events: when the SQL
fold took an event the Python path refuses, the read model depended on how events fell into
batches (issue 11: at ``REPLAY_BATCH_SIZE=2`` a rebuild parked 4 of 6 bad events).

**A well-formed ItemAdded.** Its payload is a JSON object with

* ``sku``: a JSON string (the reducer keys an order's lines by it);
* ``qty``: a JSON integer from 1 to 2,147,483,647 (int4, ``order_summary.item_count``'s
  type). Not a bool, not a string (``"2"``), not a fraction (``2.5``, nor ``2.0``, which JSON
  keeps as a fraction). Zero and negatives are refused: the event adds items, a correction would
  be an event of its own; and with nothing negative, an order's running count and total only
  grow, so a count or total too large for its column is met at the same event whatever the
  batch boundaries (see below);
* ``price``: a JSON number, or a string holding a plain decimal (``"19.99"``: digits and a
  fraction, no sign, exponent, ``NaN`` or ``Infinity``; money is often written so to keep it out
  of doubles), from 0 up, a whole number of cents (``19.99``, ``19.990``, ``20``; not
  ``0.001``), with ``qty * price`` below 10^12: what ``order_summary.total``, a
  ``numeric(14,2)``, can hold (DESIGN.md). Whole cents make every sum exact, so totals do not
  depend on where a batch was rounded to the column's two decimals.

JSON has no NaN or infinity, and jsonb refuses them. A number beyond a double (``1e400``) is
stored by jsonb as an integer of 401 digits; orjson, the workers' decoder, cannot read it, and
``db._loads`` falls back to ``json``, which reads it as an int (or, past 4,300 digits, as
infinity): either way a price too large, refused by both paths. A JSON number price is judged as
the Python path reads it: decoded into a double, whose shortest decimal form is the exact literal
for every number of at most 15 significant digits, so for every well-formed price. The SQL fold
judges the exact jsonb number: it refuses the few literals of more than 15 significant digits
that the Python path, reading them as a double, could accept (``19.990000000000000001`` is read
as 19.99): the batch then goes through the Python path, which decides, so the read model is the
same at every batch size. That is the one place where the fold refuses more; it never accepts
what the Python path refuses. A string price is exact on both paths.

Other event types of an Order carry no field that any reader uses: any payload will do.

An order's total or count that outgrows its column over several well-formed events is not a
malformed event: PostgreSQL refuses the write (``numeric field overflow``, ``integer out of
range``), in the fold as in the Python path, and the runner isolates the event that crossed the
limit, as it does any failing event.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from shared.errors import MalformedEvent
from shared.handlers import Event
from shared.store import shorten

MAX_QTY = 2**31 - 1  # int4: order_summary.item_count
MAX_AMOUNT = Decimal(10) ** 12  # numeric(14,2) holds less than this
CENT = Decimal("0.01")
#: a price given as a string: digits, and a fraction after a dot (no sign, exponent, NaN,
#: spaces); ASCII digits only, like the SQL fold's POSIX class
PRICE_TEXT = re.compile(r"[0-9]+(\.[0-9]+)?")


@dataclass(frozen=True)
class Item:
    """The line an ItemAdded adds: ``qty`` items at ``price`` each (an exact amount in cents)."""

    sku: str
    qty: int
    price: Decimal

    @property
    def amount(self) -> Decimal:
        return self.qty * self.price


def item_added(event: Event) -> Item:
    """The item of a well-formed ItemAdded (the module's definition), or ``MalformedEvent``: one
    line naming the event (id, aggregate, sequence_num) and the field."""
    payload: Any = event["payload"]
    if not isinstance(payload, dict):
        raise malformed(event, "payload", "is not a JSON object", payload)
    sku = payload.get("sku")
    if not isinstance(sku, str):
        raise malformed(event, "sku", "is not a JSON string", sku, payload)
    qty = payload.get("qty")
    if isinstance(qty, bool) or not isinstance(qty, int) or not 1 <= qty <= MAX_QTY:
        raise malformed(event, "qty", f"is not a JSON integer from 1 to {MAX_QTY:,}", qty, payload)
    price = _price(event, payload)
    if qty * price >= MAX_AMOUNT:
        raise malformed(
            event, "price", f"times qty {qty} is {qty * price:,}, more than numeric(14,2) holds",
            payload["price"],
        )  # fmt: skip
    return Item(sku, qty, price)


def _price(event: Event, payload: dict[str, Any]) -> Decimal:
    price = payload.get("price")
    if isinstance(price, str):
        # Money is often written as a string, to keep it out of doubles: a plain decimal only.
        if not PRICE_TEXT.fullmatch(price):
            raise malformed(event, "price", "is a string but not a plain decimal", price)
        exact = Decimal(price)
    elif isinstance(price, bool) or not isinstance(price, int | float):
        raise malformed(event, "price", "is not a JSON number or decimal string", price, payload)
    elif isinstance(price, float) and not math.isfinite(price):
        raise malformed(event, "price", "is not a finite number", price)
    else:
        # An int is exact (and may be too large for a double: 1e400 is stored as an integer);
        # a double's str() is the decimal literal that was stored (its shortest form), where
        # Decimal(f) would not be.
        exact = Decimal(price) if isinstance(price, int) else Decimal(str(price))
    if exact < 0:
        raise malformed(event, "price", "is negative", price)
    if exact >= MAX_AMOUNT:
        raise malformed(event, "price", "is more than numeric(14,2) holds", price)
    if exact != exact.quantize(CENT):
        raise malformed(event, "price", "is not a whole number of cents", price)
    return exact


_MISSING = object()


def malformed(
    event: Event, field: str, problem: str, value: Any, payload: Any = _MISSING
) -> MalformedEvent:
    """The error for ``event``'s ``field``: one line, values cut short (``store.shorten``)."""
    got = "missing" if payload is not _MISSING and field not in payload else shorten(value)
    return MalformedEvent(
        f"malformed {event.get('event_type')} event {event.get('event_id')}"
        f" ({shorten(event.get('aggregate_id'))} #{event.get('sequence_num')}):"
        f" {field} {problem}, got {got}"
    )


# --- the same definition in SQL, for set-based folds ---------------------------------------------
# BATCH_ITEMS_SQL: the Order events of the relation ``batch`` (aggregate_id, event_type,
# sequence_num, event_id, payload) with two columns more: ``qty`` (int) and ``amount`` (qty *
# price, numeric), NULL for an event that is not an ItemAdded, checked for one that is. A
# malformed ItemAdded raises an error, so that the fold fails and the runner hands the batch to
# the Python path, which finds the event and applies the job's on_error policy.
#
# The error is a cast of an explanatory text to int ("invalid input syntax for type integer:
# "malformed ItemAdded <id>: price""), not a plpgsql function that raises: the fold then needs no
# schema object, so it cannot fail for want of one on a database whose handlers were not set up
# again (it would fall back to Python on every batch: correct, at half the speed); and the error
# is only a signal, the message users see is the Python path's. The event_id in the text keeps
# the cast from being a constant that the planner could evaluate, and raise, up front.
#
# What refuses what: a cast of a jsonb value to numeric refuses any JSON type but a number
# (bool, null, object, array, a string qty: "cannot cast jsonb string to type numeric"; a string
# price is read only if it is a plain decimal, else it is NULL); a missing
# field (or a payload that is no object) gives NULL, which no comparison accepts: the ELSE; the
# cast to int refuses a qty above int4; and an amount of 10^12 or more cannot be written to
# order_summary.total, a numeric(14,2) ("numeric field overflow"): amounts are never negative, so
# the order's sum in the batch is at least the event's amount. Checking these two bounds again
# would cost time on every event for nothing.
#
# The inner query reads each field once; OFFSET 0 keeps PostgreSQL from pulling it up into the
# outer one, which would repeat every lookup and cast where the column is used. Measured over
# 200,000 seeded events: the unchecked fold's expressions 110 ms, these 140 ms (250 ms pulled up).
BATCH_ITEMS_SQL = r"""
SELECT aggregate_id, event_type, sequence_num,
       CASE WHEN event_type <> 'ItemAdded' THEN NULL
            WHEN jsonb_typeof(sku) = 'string' AND scale(qty) = 0 AND qty >= 1 THEN qty::int
            ELSE ('malformed ItemAdded ' || event_id || ': sku or qty')::int
       END AS qty,
       CASE WHEN event_type <> 'ItemAdded' THEN NULL
            WHEN price >= 0 AND (scale(price) <= 2 OR trunc(price, 2) = price) THEN qty * price
            ELSE ('malformed ItemAdded ' || event_id || ': price')::int
       END AS amount
  FROM (SELECT aggregate_id, event_type, sequence_num, event_id,
               CASE WHEN event_type = 'ItemAdded' THEN payload -> 'sku' END AS sku,
               CASE WHEN event_type = 'ItemAdded' THEN (payload -> 'qty')::numeric END AS qty,
               CASE WHEN event_type <> 'ItemAdded' THEN NULL
                    WHEN jsonb_typeof(payload -> 'price') <> 'string'
                         THEN (payload -> 'price')::numeric
                    WHEN payload ->> 'price' ~ '^[0-9]+(\.[0-9]+)?$'
                         THEN (payload ->> 'price')::numeric
               END AS price
          FROM batch
         WHERE aggregate_type = 'Order'
        OFFSET 0) AS fields
"""
