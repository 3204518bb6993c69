"""Synthetic ``Order`` aggregates for demos, tests and benchmarks, bulk-loaded with COPY.

The output depends only on the arguments: the same ``seed`` gives the same event ids, payloads
and timestamps, so runs can be compared and failures reproduced.
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from shared import store
from shared.db import Connection
from shared.errors import InvalidRequest
from shared.store import shorten

DEFAULT_START = datetime(2026, 1, 1, tzinfo=UTC)
DEFAULT_MONTHS = 6
MAX_EVENTS = 500_000_000
# Orders start within a century of DEFAULT_START, and their events follow at most an hour apart,
# so the last event stays far from datetime's year 9999 (past it, the generator would fail
# halfway with OverflowError: issue 11).
MAX_MONTHS = 1200
MAX_EVENTS_PER_AGGREGATE = 10_000_000  # at most ~1,160 years of one order's events
# Keeps aggregate ids ("order-{seed}-{index}") well within their 100 characters.
MAX_SEED = 2**63 - 1
_METADATA = '{"source": "seed"}'
# Event types between OrderPlaced and the payment/shipping tail, with their weights.
_MIDDLE = (("ItemAdded", 80), ("ShippingAddressChanged", 10), ("NoteAdded", 10))
_MIDDLE_TYPES = [t for t, _ in _MIDDLE]
_MIDDLE_WEIGHTS = [w for _, w in _MIDDLE]
SHIPPED_FRACTION = 0.85


@dataclass(frozen=True)
class SeedResult:
    aggregates: int
    events: int
    seconds: float

    @property
    def events_per_second(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0


def aggregate_id(seed: int, index: int) -> str:
    return f"order-{seed}-{index:07d}"


def generate(
    aggregates: int,
    events_per_aggregate: int,
    *,
    seed: int = 1,
    start: datetime = DEFAULT_START,
    months: int = DEFAULT_MONTHS,
) -> Iterator[str]:
    """COPY text lines for ``aggregates`` orders of ``events_per_aggregate`` events each.

    Each order starts with OrderPlaced; most end with PaymentProcessed then OrderShipped; in
    between come mostly ItemAdded {sku, qty, price}, some ShippingAddressChanged and NoteAdded.
    Orders start at random moments over ``months`` months; their events follow minutes to hours
    apart.
    """
    rng = random.Random(seed)
    span_seconds = months * 30 * 86400
    m = events_per_aggregate
    for index in range(aggregates):
        agg = aggregate_id(seed, index)
        at = start + timedelta(seconds=rng.random() * span_seconds)
        shipped = m >= 3 and rng.random() < SHIPPED_FRACTION
        for seq in range(1, m + 1):
            if seq == 1:
                kind, payload = "OrderPlaced", f'{{"customer": "customer-{rng.randrange(50_000)}"}}'
            elif shipped and seq == m:
                kind, payload = (
                    "OrderShipped",
                    f'{{"carrier": "{rng.choice(("ups", "dhl", "fedex"))}"}}',
                )
            elif shipped and seq == m - 1:
                kind, payload = "PaymentProcessed", '{"method": "card"}'
            else:
                kind = rng.choices(_MIDDLE_TYPES, _MIDDLE_WEIGHTS)[0]
                if kind == "ItemAdded":
                    price = rng.randrange(100, 20_000) / 100  # two decimals, 1.00 to 199.99
                    payload = (
                        f'{{"sku": "SKU-{rng.randrange(1, 1000):04d}", '
                        f'"qty": {rng.randrange(1, 6)}, "price": {price}}}'
                    )
                elif kind == "ShippingAddressChanged":
                    payload = f'{{"city": "city-{rng.randrange(500)}"}}'
                else:
                    payload = f'{{"note": "note {rng.randrange(10_000)}"}}'
            event_id = uuid.UUID(int=rng.getrandbits(128), version=4)
            yield store.format_copy_line(event_id, agg, "Order", kind, payload, _METADATA, seq, at)
            at += timedelta(seconds=60 + rng.random() * 3600)


def validate(
    aggregates: int, events_per_aggregate: int, months: int = DEFAULT_MONTHS, seed: int = 1
) -> None:
    """Raise ``InvalidRequest`` unless every argument is an integer in its range: the generator
    would otherwise fail halfway (a date past year 9999, an aggregate id too long for its
    column) with a Python or driver error instead of one line."""
    _check("--aggregates", aggregates, 1, MAX_EVENTS)
    _check("--events-per-aggregate", events_per_aggregate, 1, MAX_EVENTS_PER_AGGREGATE)
    if aggregates * events_per_aggregate > MAX_EVENTS:
        raise InvalidRequest(f"at most {MAX_EVENTS:,} events per seed run")
    _check("--months", months, 1, MAX_MONTHS)
    _check("--seed", seed, -MAX_SEED, MAX_SEED)


def _check(name: str, value: int, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidRequest(
            f"{name} must be an integer from {low:,} to {high:,}, got {shorten(value)}"
        )


def seed(
    conn: Connection,
    aggregates: int,
    events_per_aggregate: int,
    *,
    seed: int = 1,
    start: datetime = DEFAULT_START,
    months: int = DEFAULT_MONTHS,
) -> SeedResult:
    """Write the synthetic orders in one COPY (all or nothing)."""
    validate(aggregates, events_per_aggregate, months, seed)
    began = time.perf_counter()
    n = store.copy_rows(
        conn, generate(aggregates, events_per_aggregate, seed=seed, start=start, months=months)
    )
    conn.execute("ANALYZE event")
    return SeedResult(aggregates, n, time.perf_counter() - began)
