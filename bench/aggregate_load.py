"""``replay bench-aggregate``: the time to load one aggregate, 100 and 10,000 events long.

Two tables, medians:

* on a held connection (``shared.aggregates.load_aggregate``), folded from the first event and
  from the latest snapshot: what the fold and the snapshots cost;
* per call from the latest snapshot, side by side and interleaved (one call of each way in
  turn, so that a busy machine slows them alike): the held connection, the public call
  ``scheduler.load_aggregate`` (the module-level API, its pool included: what a user's code
  pays), their ratio, and a new connection per call (what the public call cost before it
  pooled, issue 13). Each figure is the median of ``ROUNDS`` rounds' medians.

The measured orders sit in a store of ``STORE_ORDERS`` other orders: with two aggregates only,
PostgreSQL's estimates (thousands of events per aggregate) would keep it planning the load's
statement afresh at every call, which a real store does not.

    replay bench-aggregate [--runs 50]
    .venv/bin/python bench/aggregate_load.py [the same arguments]
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

import scheduler
from examples.orders import seed
from scheduler import scratch
from shared import aggregates, db
from shared.settings import Settings

SUFFIX = "_aggbench"
ROUNDS = 5
STORE_ORDERS = 1000  # of 100 events, around the measured two
#: calls of a new connection each, per round: at ~5 ms a call, a few suffice for a median
CONNECT_CALLS = 20
ANALYZE = "ANALYZE event, snapshot"  # the statistics the planner reads, once the store is seeded


def timed_loads(conn: db.Connection, agg: str, runs: int, use_snapshots: bool) -> tuple[float, int]:
    """Median milliseconds of ``runs`` loads, and the events the last one read."""
    aggregates.load_aggregate(conn, agg, use_snapshots=use_snapshots)  # warm, and snapshot
    times = []
    loaded = None
    for _ in range(runs):
        started = time.perf_counter()
        loaded = aggregates.load_aggregate(conn, agg, use_snapshots=use_snapshots)
        times.append(time.perf_counter() - started)
    assert loaded is not None
    return 1000 * statistics.median(times), loaded.events_read


def per_call(bench: Settings, conn: db.Connection, agg: str, runs: int) -> dict[str, float]:
    """Milliseconds per load from the latest snapshot, three ways side by side, each the median
    of ``ROUNDS`` rounds' medians; ``ratio``: the public call over the held connection, the
    median of the rounds' ratios (each round measures both on the same machine load)."""

    def new_connection() -> None:
        with db.connect(bench) as own:
            aggregates.load_aggregate(own, agg)

    ways: dict[str, Callable[[], Any]] = {
        "held_ms": lambda: aggregates.load_aggregate(conn, agg),
        "public_ms": lambda: scheduler.load_aggregate(agg),
        "new_connection_ms": new_connection,
    }
    rounds: dict[str, list[float]] = {name: [] for name in ways}
    ratios = []
    for _ in range(ROUNDS):
        times: dict[str, list[float]] = {name: [] for name in ways}
        for n in range(runs):
            for name, call in ways.items():
                if name == "new_connection_ms" and n >= CONNECT_CALLS:
                    continue
                started = time.perf_counter()
                call()
                times[name].append(time.perf_counter() - started)
        for name in ways:
            rounds[name].append(1000 * statistics.median(times[name]))
        ratios.append(rounds["public_ms"][-1] / rounds["held_ms"][-1])
    result = {name: round(statistics.median(values), 3) for name, values in rounds.items()}
    return {**result, "ratio": round(statistics.median(ratios), 2)}


def run(
    settings: Settings, runs: int, output: Path, console: Console, force: bool = False
) -> dict[str, Any]:
    """Load each aggregate ``runs`` times each way on a scratch database (dropped after); print
    the tables and write the report (JSON, to ``output``), which is returned."""
    name = f"{settings.database_name}{SUFFIX}"
    bench = scratch.recreate(settings, name, SUFFIX, force=force)
    measured = ((seed.aggregate_id(1, 0), 100), (seed.aggregate_id(2, 0), 10_000))
    rows, calls = [], []
    folds = Table("aggregate size", "loaded from", "median ms", "events read",
                  title="On a held connection")  # fmt: skip
    side = Table("aggregate size", "held connection", "public call", "ratio", "connect per call",
                 title="Per call from the latest snapshot, ms: public call = scheduler."
                       f"load_aggregate (pool included); medians of {ROUNDS} rounds")  # fmt: skip
    scheduler.configure(bench)  # the module-level calls, on the scratch database
    try:
        with db.connect(bench) as conn:
            seed.seed(conn, STORE_ORDERS, 100, seed=3)
            seed.seed(conn, 1, 100, seed=1)
            seed.seed(conn, 1, 10_000, seed=2)
            conn.execute(ANALYZE)
            for agg, size in measured:
                for use in (False, True):
                    ms, read = timed_loads(conn, agg, runs, use)
                    origin = "latest snapshot" if use else "first event"
                    rows.append({"events": size, "from": origin, "median_ms": round(ms, 3),
                                 "events_read": read})  # fmt: skip
                    folds.add_row(f"{size:,} events", origin, f"{ms:.2f}", str(read))
            for agg, size in measured:
                figures = per_call(bench, conn, agg, runs)
                calls.append({"events": size, **figures})
                side.add_row(
                    f"{size:,} events", f"{figures['held_ms']:.2f}", f"{figures['public_ms']:.2f}",
                    f"{figures['ratio']:.2f}", f"{figures['new_connection_ms']:.2f}",
                )  # fmt: skip
    finally:
        scheduler.configure(None)  # closes the scratch database's pool before the drop
    db.drop_database(settings, name)
    console.print(folds)
    console.print(side)
    report = {"runs": runs, "rounds": ROUNDS, "store_orders": STORE_ORDERS, "results": rows,
              "per_call_from_snapshot": calls,
              "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}  # fmt: skip
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=2) + "\n")
    console.print(f"written to {output}")
    return report


if __name__ == "__main__":
    from scheduler.cli import main

    sys.exit(main(["bench-aggregate", *sys.argv[1:]]))
