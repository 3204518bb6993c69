"""Rebuilding one entity from its events, with snapshots (load_aggregate, replay aggregate)."""

from __future__ import annotations

import os
import random
import re
import subprocess
import sys
from collections.abc import Iterator

import pytest

from examples.orders import seed
from examples.orders.reducer import OrderReducer
from local.workers import WorkerProcess
from shared import aggregates
from shared.aggregates import load_aggregate
from shared.db import Connection
from shared.errors import (
    InvalidRequest,
    MalformedEvent,
    NotFound,
    ReplayError,
)
from shared.settings import Settings
from tests.support import ROOT, WORKER_ENV, count

pytestmark = pytest.mark.integration


@pytest.fixture
def no_snapshots(conn: Connection) -> Iterator[None]:
    conn.execute("TRUNCATE snapshot")
    yield
    conn.execute("TRUNCATE snapshot")


def test_snapshot_and_tail_equal_a_full_fold_at_the_end_and_in_the_past(
    conn: Connection, no_snapshots: None
) -> None:
    rng = random.Random(6)
    ids = [r["aggregate_id"] for r in conn.execute(
        "SELECT DISTINCT aggregate_id FROM event WHERE aggregate_id LIKE 'order-%%'"
    )]  # fmt: skip
    for agg in rng.sample(ids, 200):
        first = load_aggregate(conn, agg)  # folds everything, writes the snapshots
        again = load_aggregate(conn, agg)  # from the latest snapshot
        full = load_aggregate(conn, agg, use_snapshots=False)
        assert again.state == first.state == full.state
        if full.sequence_num >= OrderReducer.snapshot_every:
            assert again.snapshot_at is not None
            assert again.events_read < OrderReducer.snapshot_every
        at = rng.randint(1, full.sequence_num)
        past = load_aggregate(conn, agg, at)
        assert past.state == load_aggregate(conn, agg, at, use_snapshots=False).state
        assert past.sequence_num == at


def test_a_long_aggregate_reads_at_most_one_snapshot_interval(
    conn: Connection, no_snapshots: None
) -> None:
    seed.seed(conn, 1, 10_000, seed=77)
    try:
        agg = seed.aggregate_id(77, 0)
        first = load_aggregate(conn, agg)
        assert first.events_read == 10_000
        again = load_aggregate(conn, agg)
        assert again.events_read <= 50 and again.state == first.state
        mid = load_aggregate(conn, agg, 7_777)
        assert mid.events_read <= 50
        assert mid.state == load_aggregate(conn, agg, 7_777, use_snapshots=False).state
    finally:
        conn.execute("DELETE FROM event WHERE aggregate_id LIKE 'order-77-%%'")


def test_other_reducer_versions_and_corrupted_snapshots_are_ignored_and_replaced(
    conn: Connection, no_snapshots: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    agg = seed.aggregate_id(8, 2)  # 200 events
    truth = load_aggregate(conn, agg, use_snapshots=False).state
    load_aggregate(conn, agg)
    conn.execute("UPDATE snapshot SET state = '\"garbage\"' WHERE aggregate_id = %s", (agg,))
    assert load_aggregate(conn, agg).state == truth  # corrupted: ignored, folded from the start
    assert count(conn, "SELECT count(*) FROM snapshot WHERE state = '\"garbage\"'") == 0

    monkeypatch.setattr(OrderReducer, "version", 2)
    reloaded = load_aggregate(conn, agg)
    assert reloaded.snapshot_at is None and reloaded.state == truth  # version 1: not trusted
    assert count(conn, "SELECT count(*) FROM snapshot WHERE reducer_version = 2") == 4


def test_unknown_ids_types_and_gaps_are_clear_errors(conn: Connection) -> None:
    with pytest.raises(NotFound, match="no events"):
        load_aggregate(conn, "no-such-order")
    conn.execute(
        "INSERT INTO event (aggregate_id, aggregate_type, event_type, sequence_num)"
        " VALUES ('cust-1', 'Customer', 'Registered', 1),"
        " ('gap-1', 'Order', 'OrderPlaced', 1), ('gap-1', 'Order', 'NoteAdded', 2),"
        " ('gap-1', 'Order', 'NoteAdded', 5)"
    )
    try:
        with pytest.raises(InvalidRequest, match="Customer"):
            load_aggregate(conn, "cust-1")
        with pytest.raises(ReplayError, match="3, 4"):
            load_aggregate(conn, "gap-1")
        assert load_aggregate(conn, "gap-1", 2).state["status"] == "placed"
    finally:
        conn.execute("DELETE FROM event WHERE aggregate_id IN ('cust-1', 'gap-1')")


LONG_ID = "order-" + "x" * 95  # 101 characters: more than the event table's varchar(100)


@pytest.mark.parametrize(
    ("aggregate_id", "at_sequence", "says"),
    [
        pytest.param("a\x00b", None, "NUL", id="id-nul"),
        pytest.param("a\ud800", None, "surrogate", id="id-surrogate"),
        pytest.param(42, None, "non-empty string", id="id-int"),
        pytest.param(None, None, "non-empty string", id="id-none"),
        pytest.param("", None, "non-empty string", id="id-empty"),
        pytest.param(LONG_ID, None, "longer than 100", id="id-101-characters"),
        pytest.param("x" * 100_000, None, "longer than 100", id="id-100kB"),
        pytest.param(seed.aggregate_id(7, 3), "5", "at_sequence", id="at-str"),
        pytest.param(seed.aggregate_id(7, 3), 2.5, "at_sequence", id="at-float"),
        pytest.param(seed.aggregate_id(7, 3), True, "at_sequence", id="at-bool"),
        pytest.param(seed.aggregate_id(7, 3), 0, "at_sequence", id="at-zero"),
        pytest.param(seed.aggregate_id(7, 3), -1, "at_sequence", id="at-negative"),
    ],
)
def test_arguments_the_store_cannot_look_up_are_invalid_requests(
    conn: Connection, aggregate_id: object, at_sequence: object, says: str
) -> None:
    with pytest.raises(InvalidRequest, match=says) as caught:
        load_aggregate(conn, aggregate_id, at_sequence)  # type: ignore[arg-type]
    message = str(caught.value)
    assert "\n" not in message and len(message) < 200, message


def test_a_malformed_event_is_named_by_id_and_sequence_num(
    conn: Connection, settings: Settings, no_snapshots: None
) -> None:
    rows = [
        ("bad-agg", "OrderPlaced", "{}", 1),
        ("bad-agg", "ItemAdded", '{"sku": "A", "qty": 2, "price": 1.25}', 2),
        ("bad-agg", "ItemAdded", '{"sku": "A", "qty": 1}', 3),  # no price
        ("bad-str", "ItemAdded", '"ItemAdded"', 1),
        ("bad-nan", "ItemAdded", '{"sku": "A", "qty": 1, "price": "NaN"}', 1),
    ]
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO event (aggregate_id, aggregate_type, event_type, payload, sequence_num)"
            " VALUES (%s, 'Order', %s, %s::jsonb, %s)",
            rows,
        )
    try:
        bad = conn.execute(
            "SELECT event_id FROM event WHERE aggregate_id = 'bad-agg' AND sequence_num = 3"
        ).fetchone()
        assert bad is not None
        with pytest.raises(
            MalformedEvent, match=re.escape(f"{bad['event_id']} ('bad-agg' #3): price")
        ):
            load_aggregate(conn, "bad-agg")
        assert load_aggregate(conn, "bad-agg", 2).state["total"] == "2.50"  # before it: fine
        with pytest.raises(MalformedEvent, match=re.escape("#1): payload is not a JSON object")):
            load_aggregate(conn, "bad-str")
        with pytest.raises(
            MalformedEvent, match="price is a string but not a plain decimal, got 'NaN'"
        ):
            load_aggregate(conn, "bad-nan")

        env = {**os.environ, **settings.as_env(), **WORKER_ENV}
        cli = subprocess.run(
            [sys.executable, "-m", "scheduler.cli", "aggregate", "bad-agg"],
            env=env, capture_output=True, text=True, timeout=60, cwd=ROOT,
        )  # fmt: skip
        assert cli.returncode == 2, cli.stdout + cli.stderr
        assert cli.stderr.strip().splitlines() == [
            f"replay: error: malformed ItemAdded event {bad['event_id']} ('bad-agg' #3):"
            " price is not a JSON number or decimal string, got missing"
        ]
    finally:
        conn.execute("DELETE FROM event WHERE aggregate_id IN ('bad-agg', 'bad-str', 'bad-nan')")


def test_replay_aggregate_on_the_command_line(settings: Settings) -> None:
    env = {**os.environ, **settings.as_env(), **WORKER_ENV}
    ok = subprocess.run(
        [sys.executable, "-m", "scheduler.cli", "aggregate", seed.aggregate_id(7, 3), "--at", "10"],
        env=env, capture_output=True, text=True, timeout=60, cwd=ROOT,
    )  # fmt: skip
    assert ok.returncode == 0 and '"status"' in ok.stdout and "as of #10" in ok.stderr
    missing = subprocess.run(
        [sys.executable, "-m", "scheduler.cli", "aggregate", "no-such-order"],
        env=env, capture_output=True, text=True, timeout=60, cwd=ROOT,
    )  # fmt: skip
    assert missing.returncode == 2
    assert missing.stderr.strip().splitlines() == [
        "replay: error: no events for aggregate 'no-such-order'"
    ]


def test_reducers_are_registered_by_type() -> None:
    assert isinstance(aggregates.reducer_for("Order"), OrderReducer)


def test_the_bulk_snapshot_pass_runs_as_a_replay_job(
    settings: Settings, workers: list[WorkerProcess], clean: None, conn: Connection
) -> None:
    env = {**os.environ, **settings.as_env(), **WORKER_ENV}
    done = subprocess.run(
        [sys.executable, "-m", "scheduler.cli", "snapshot", "--type", "Order", "--slices", "4",
         "--wait"],
        env=env, capture_output=True, text=True, timeout=120, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    long_one = seed.aggregate_id(8, 5)  # 200 events: snapshots at 50, 100, 150, 200
    assert count(conn, "SELECT count(*) FROM snapshot WHERE aggregate_id = %s", (long_one,)) == 4
    loaded = load_aggregate(conn, long_one)
    assert loaded.events_read == 0 and loaded.snapshot_at == 200
    assert loaded.state == load_aggregate(conn, long_one, use_snapshots=False).state

    unknown = subprocess.run(
        [sys.executable, "-m", "scheduler.cli", "snapshot", "--type", "Spaceship"],
        env=env, capture_output=True, text=True, timeout=60, cwd=ROOT,
    )  # fmt: skip
    assert unknown.returncode == 2 and "Spaceship" in unknown.stderr
