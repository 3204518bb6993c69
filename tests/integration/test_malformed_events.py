"""One policy for malformed events (issue 11): order_summary's set-based SQL fold refuses what its
Python path refuses, so a full rebuild parks the same events and builds the same read model
whatever the batch size, equal to the tests' own fold (tests/folds.py).

The module has its own database (a small seeded store plus malformed events written with plain
SQL, as a careless writer would) and its own worker, started once per batch size: the batch
size is a worker setting.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import UUID

import psycopg
import pytest

from examples.orders.events import item_added
from examples.orders.handlers import REBUILD_ORDER_SUMMARY
from local.workers import WorkerProcess, wait_until_ready
from scheduler.coordinator import Coordinator
from shared import db
from shared.errors import MalformedEvent
from shared.settings import Settings
from tests.folds import Summary, fold_order_summary_and_refusals, read_order_summary
from tests.support import WORKER_ENV, create_database, events_where, make_settings

pytestmark = pytest.mark.integration

REDIS_DBS = (3, 3, 3)  # broker, result backend and cache share a DB number no other suite uses
BATCH_SIZES = (2, 7, 1000)
GOOD = '{"sku": "G", "qty": 2, "price": 0.10}'

# ItemAdded payloads (jsonb text) that every reader refuses.
MALFORMED = {
    "missing-price": '{"sku": "A", "qty": 1}',
    "missing-qty": '{"sku": "A", "price": 1.5}',
    "missing-sku": '{"qty": 1, "price": 1.5}',
    "sku-number": '{"sku": 7, "qty": 1, "price": 1.5}',
    "string-payload": '"ItemAdded"',
    "array-payload": '[{"sku": "A", "qty": 1, "price": 1.5}]',
    "null-payload": "null",
    "number-payload": "3",
    "qty-string": '{"sku": "A", "qty": "2", "price": 1.5}',
    "qty-fraction": '{"sku": "A", "qty": 2.5, "price": 1.5}',
    "qty-2.0": '{"sku": "A", "qty": 2.0, "price": 1.5}',
    "qty-bool": '{"sku": "A", "qty": true, "price": 1.5}',
    "qty-null": '{"sku": "A", "qty": null, "price": 1.5}',
    "qty-zero": '{"sku": "A", "qty": 0, "price": 1.5}',
    "qty-negative": '{"sku": "A", "qty": -3, "price": 1.5}',
    "qty-beyond-int4": '{"sku": "A", "qty": 2147483648, "price": 1.5}',
    "qty-beyond-int64": '{"sku": "A", "qty": 100000000000000000001, "price": 1.5}',
    "price-NaN-string": '{"sku": "A", "qty": 1, "price": "NaN"}',
    "price-Infinity-string": '{"sku": "A", "qty": 1, "price": "Infinity"}',
    "price-1e400-string": '{"sku": "A", "qty": 1, "price": "1e400"}',
    "price-abc": '{"sku": "A", "qty": 1, "price": "abc"}',
    "price-string-sub-cent": '{"sku": "A", "qty": 1, "price": "19.999"}',
    "price-string-signed": '{"sku": "A", "qty": 1, "price": "-1.50"}',
    "price-string-exponent": '{"sku": "A", "qty": 1, "price": "1.5e1"}',
    "price-string-spaces": '{"sku": "A", "qty": 1, "price": " 1.50"}',
    "price-string-bare-dot": '{"sku": "A", "qty": 1, "price": "1."}',
    "price-string-arabic-digits": '{"sku": "A", "qty": 1, "price": "\u0661\u0662"}',
    "price-1e400": '{"sku": "A", "qty": 1, "price": 1e400}',
    "price-bool": '{"sku": "A", "qty": 1, "price": false}',
    "price-null": '{"sku": "A", "qty": 1, "price": null}',
    "price-object": '{"sku": "A", "qty": 1, "price": {"amount": 1}}',
    "price-negative": '{"sku": "A", "qty": 1, "price": -1.5}',
    "price-sub-cent": '{"sku": "A", "qty": 1, "price": 0.001}',
    "price-over-numeric-14-2": '{"sku": "A", "qty": 1, "price": 1000000000000}',
    "line-over-numeric-14-2": '{"sku": "A", "qty": 2, "price": 600000000000}',
}
# Well-formed, at the edges of the definition: every reader takes them.
EDGES = {
    "price-trailing-zeros": '{"sku": "A", "qty": 1, "price": 19.990}',
    "price-integer": '{"sku": "A", "qty": 1, "price": 20}',
    "price-exponent": '{"sku": "A", "qty": 1, "price": 1.5e1}',
    "price-zero": '{"sku": "A", "qty": 1, "price": 0}',
    "qty-exponent": '{"sku": "A", "qty": 5e0, "price": 1.5}',
    "qty-fills-int4": '{"sku": "A", "qty": 2147483643, "price": 0}',  # 4 more in its order
    "sku-empty": '{"sku": "", "qty": 1, "price": 1.5}',
    "total-fills-numeric": '{"sku": "A", "qty": 1, "price": 999999999999.59}',  # 0.40 more
    "price-decimal-string": '{"sku": "A", "qty": 3, "price": "19.99"}',
    "price-decimal-string-integer": '{"sku": "A", "qty": 1, "price": "20"}',
    # An integer past 4,300 digits in a field nobody reads: orjson and int() refuse it, the
    # workers' decoder reads it as inf, and the event is as good as any.
    "huge-integer-elsewhere": '{"sku": "A", "qty": 1, "price": 1.5, "note": 1' + "0" * 5000 + "}",
}
# Decoded as a double by the Python path, which takes them (19.99 and 0.0); the SQL fold, which
# reads the exact number, refuses them and hands their batch to the Python path (documented in
# examples/orders/events.py): the one place where the two differ, with the same outcome.
DOUBLE_ROUNDED = {
    "price-21-digits": '{"sku": "A", "qty": 1, "price": 19.990000000000000001}',
    "price-underflow": '{"sku": "A", "qty": 1, "price": 1e-400}',
}


@dataclass(frozen=True)
class Store:
    settings: Settings
    malformed: dict[str, UUID]  # label -> event id
    overflow: UUID  # the well-formed ItemAdded that carries its order's total past numeric(14,2)


@dataclass(frozen=True)
class Outcome:
    job: dict[str, Any]
    summary: Summary
    parked: dict[UUID, str]  # event id -> error
    fold_fallbacks: int  # batches the SQL fold handed to the Python path


def _insert(conn: db.Connection, rows: list[tuple[str, str, str, str]]) -> list[UUID]:
    """Events (aggregate_id, aggregate_type, event_type, payload) with plain SQL, numbered in
    order per aggregate."""
    ids = []
    seqs: dict[str, int] = {}
    for agg, agg_type, kind, payload in rows:
        seqs[agg] = seqs.get(agg, 0) + 1
        row = conn.execute(
            "INSERT INTO event (aggregate_id, aggregate_type, event_type, payload, sequence_num)"
            " VALUES (%s, %s, %s, %s::jsonb, %s) RETURNING event_id",
            (agg, agg_type, kind, payload, seqs[agg]),
        ).fetchone()
        assert row is not None
        ids.append(row["event_id"])
    return ids


def _malformed_store(conn: db.Connection) -> tuple[dict[str, UUID], UUID]:
    rows: list[tuple[str, str, str, str]] = []
    where: dict[str, int] = {}
    # One order per case: OrderPlaced, a good item, the case, a good item, PaymentProcessed.
    for n, (label, payload) in enumerate({**MALFORMED, **EDGES, **DOUBLE_ROUNDED}.items()):
        agg = f"bad-{n:02d}-{label}"
        rows += [(agg, "Order", "OrderPlaced", "{}"), (agg, "Order", "ItemAdded", GOOD)]
        where[label] = len(rows)
        rows += [(agg, "Order", "ItemAdded", payload), (agg, "Order", "ItemAdded", GOOD),
                 (agg, "Order", "PaymentProcessed", "{}")]  # fmt: skip
    # Malformed events back to back (batches holding several), the last one ending its order.
    cluster = [(f"cluster-{label}", payload) for label, payload in MALFORMED.items()]
    rows.append(("bad-zz-cluster", "Order", "OrderPlaced", '"any payload"'))
    for label, payload in cluster[:6]:
        where[label] = len(rows)
        rows.append(("bad-zz-cluster", "Order", "ItemAdded", payload))
    rows.append(("bad-zz-cluster", "Order", "ItemAdded", GOOD))
    for label, payload in cluster[6:12]:
        where[label] = len(rows)
        rows.append(("bad-zz-cluster", "Order", "ItemAdded", payload))
    # Payloads no reader uses: other event types, another aggregate type.
    rows += [("bad-zz-other", "Order", "NoteAdded", "[1, 2]"),
             ("bad-zz-other", "Order", "OrderShipped", '"shipped"'),
             ("bad-zz-other", "Order", "ShippingAddressChanged", '{"qty": "x", "price": "NaN"}'),
             ("cart-1", "Cart", "ItemAdded", '{"qty": "x"}')]  # fmt: skip
    # Two well-formed items whose sum numeric(14,2) cannot hold: the second is refused by
    # PostgreSQL on either path; the item after it fits again.
    big = '{"sku": "B", "qty": 1, "price": 600000000000}'
    rows += [("bad-zz-overflow", "Order", "ItemAdded", big)]
    where["overflow"] = len(rows)
    rows += [("bad-zz-overflow", "Order", "ItemAdded", big),
             ("bad-zz-overflow", "Order", "ItemAdded", GOOD)]  # fmt: skip
    ids = _insert(conn, rows)
    malformed = {k: ids[i] for k, i in where.items() if k in MALFORMED or k.startswith("cluster")}
    return malformed, ids[where["overflow"]]


@pytest.fixture(scope="module")
def store() -> Iterator[Store]:
    settings = make_settings("malformed", REDIS_DBS)
    create_database(settings, [(5, 12, 15)])
    try:
        with db.connect(settings) as conn:
            malformed, overflow = _malformed_store(conn)
        yield Store(settings, malformed, overflow)
    finally:
        db.drop_database(settings, settings.database_name)


def rebuild(settings: Settings, logs: Path) -> Outcome:
    """A full rebuild of order_summary (on_error=park) on one worker started with
    ``settings.batch_size``; what it built, parked, and how often the fold fell back."""
    log = logs / f"batch-{settings.batch_size}.log"
    worker = WorkerProcess(
        settings, f"malformed{settings.batch_size}", queues=(settings.queue,), log_path=log,
        extra_env=WORKER_ENV,
    ).start()  # fmt: skip
    try:
        wait_until_ready(settings, [worker.name], workers=[worker])
        coordinator = Coordinator(settings)
        try:
            job_id = coordinator.submit("order_summary", reset=True, on_error="park", slices=3)
            job = coordinator.wait(job_id, timeout=120)
        finally:
            coordinator.close()
    finally:
        worker.stop()
    with db.connect(settings) as conn:
        parked = {
            r["event_id"]: r["error"]
            for r in conn.execute(
                "SELECT event_id, error FROM parked_event WHERE job_id = %s", (job_id,)
            )
        }
        summary = read_order_summary(conn)
    fallbacks = log.read_text().count("SQL fold of slice")
    return Outcome(job, summary, parked, fallbacks)


@pytest.fixture(scope="module")
def outcomes(store: Store, tmp_path_factory: pytest.TempPathFactory) -> dict[int, Outcome]:
    logs = tmp_path_factory.mktemp("malformed-workers")
    return {n: rebuild(replace(store.settings, batch_size=n), logs) for n in BATCH_SIZES}


def test_every_batch_size_parks_the_same_events_and_builds_the_same_read_model(
    store: Store, outcomes: dict[int, Outcome]
) -> None:
    with db.connect(store.settings) as conn:
        expected, refused = fold_order_summary_and_refusals(events_where(conn))
    # The tests' fold refuses exactly the events written as malformed, and the overflow.
    assert refused == {*store.malformed.values(), store.overflow}
    for n, outcome in outcomes.items():
        assert outcome.job["status"] == "completed", (n, outcome.job)
        assert outcome.job["poison_count"] == len(refused), n
        assert set(outcome.parked) == refused, n
        assert outcome.summary == expected, n
    assert expected["bad-zz-overflow"][1] == Decimal("600000000000.20")
    assert expected["bad-zz-cluster"][3] == 8  # the last events were refused: not the version


def test_the_fold_hands_over_only_batches_that_hold_a_refused_event(
    store: Store, outcomes: dict[int, Outcome]
) -> None:
    # At 2 events a batch, ~250 batches, of which only those holding one of the events the fold
    # refuses may go through the Python path: good data stays on the fast path.
    refused_by_the_fold = len(store.malformed) + 1 + len(DOUBLE_ROUNDED)
    fallbacks = outcomes[2].fold_fallbacks
    assert refused_by_the_fold / 2 <= fallbacks <= refused_by_the_fold
    assert outcomes[1000].fold_fallbacks >= 1  # it did refuse


def test_a_parked_malformed_event_says_which_event_and_field(
    store: Store, outcomes: dict[int, Outcome]
) -> None:
    parked = outcomes[7].parked
    for label, field in (("missing-price", "price"), ("qty-bool", "qty"),
                         ("string-payload", "payload"), ("price-NaN-string", "price"),
                         ("missing-sku", "sku"), ("price-1e400", "price"),
                         ("price-string-signed", "price")):  # fmt: skip
        event_id = store.malformed[label]
        error = parked[event_id]
        assert error.startswith(f"MalformedEvent: malformed ItemAdded event {event_id} ("), error
        assert f": {field} " in error and "\n" not in error, error
    assert parked[store.overflow].startswith("NumericValueOutOfRange"), parked[store.overflow]


def _fold_verdict(conn: db.Connection, payload: str) -> tuple[int, Decimal] | None:
    """What the SQL fold makes of one ItemAdded: (item_count, total), or None if it raises."""
    try:
        with conn.transaction(force_rollback=True):
            conn.execute(
                "WITH batch AS (SELECT gen_random_uuid() AS event_id, 'probe' AS aggregate_id,"
                " 'Order' AS aggregate_type, 'ItemAdded' AS event_type,"
                " %s::jsonb AS payload, 1::bigint AS sequence_num),"
                f" folded AS ({REBUILD_ORDER_SUMMARY}) SELECT 1",
                (payload,),
            )
            row = conn.execute(
                "SELECT item_count, total FROM order_summary WHERE order_id = 'probe'"
            ).fetchone()
            assert row is not None
            return row["item_count"], row["total"]
    except psycopg.errors.DataError:
        return None


def _python_verdict(conn: db.Connection, payload: str) -> tuple[int, Decimal] | None:
    """What the Python path makes of it, the payload decoded as the worker decodes it."""
    row = conn.execute("SELECT %s::jsonb AS payload", (payload,)).fetchone()
    assert row is not None
    event: Any = {"event_id": None, "aggregate_id": "probe", "event_type": "ItemAdded",
                  "sequence_num": 1, "payload": row["payload"]}  # fmt: skip
    try:
        item = item_added(event)
    except MalformedEvent:
        return None
    return item.qty, item.amount


@pytest.mark.parametrize(
    ("payload", "expected"),
    [pytest.param(p, "refused", id=k) for k, p in MALFORMED.items()]
    + [pytest.param(p, "taken", id=k) for k, p in EDGES.items()]
    + [pytest.param(p, "python-only", id=k) for k, p in DOUBLE_ROUNDED.items()],
)
def test_the_fold_and_the_python_path_judge_each_payload_alike(
    store: Store, payload: str, expected: str
) -> None:
    with db.connect(store.settings) as conn:
        conn.execute("DELETE FROM order_summary WHERE order_id = 'probe'")
        fold, python = _fold_verdict(conn, payload), _python_verdict(conn, payload)
    if expected == "refused":
        assert fold is None and python is None, (fold, python)
    elif expected == "taken":
        assert fold is not None and fold == python, (fold, python)
    else:
        assert fold is None and python is not None, (fold, python)


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_cannot_even_be_stored(store: Store, literal: str) -> None:
    with (
        db.connect(store.settings) as conn,
        pytest.raises(psycopg.errors.InvalidTextRepresentation),
    ):
        conn.execute("SELECT %s::jsonb", (f'{{"sku": "A", "qty": 1, "price": {literal}}}',))


def test_a_number_beyond_a_double_is_parked_like_any_malformed_event(
    store: Store, outcomes: dict[int, Outcome], tmp_path: Path
) -> None:
    with db.connect(store.settings) as conn:
        (event_id,) = _insert(conn, [("bad-zz-1e400", "Order", "ItemAdded",
                                      '{"sku": "A", "qty": 1, "price": 1e400}')])  # fmt: skip
        try:
            outcome = rebuild(replace(store.settings, batch_size=1000), tmp_path)
        finally:
            conn.execute("DELETE FROM event WHERE aggregate_id = 'bad-zz-1e400'")
    assert outcome.job["status"] == "completed", outcome.job
    assert event_id in outcome.parked
