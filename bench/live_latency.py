"""``replay bench-live``: append-to-handled latency of the live consumer, idle, during an
unthrottled replay, and during a throttled one, side by side in one run.

    replay bench-live [--rate 20000 --seconds 10]
    .venv/bin/python bench/live_latency.py [the same arguments]

A probe appends one OrderShipped to a fresh order and waits (polling every 2 ms) until the live
consumer's order_notifications has written its outbox row: the latency a user sees. The replays
are catch-ups of order_summary that claim a marker for every event (the replay that loads the
database most), on two worker processes.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from examples.orders import seed
from local.workers import running_workers
from scheduler import scratch
from scheduler.coordinator import Coordinator
from shared import db, store
from shared.jobs import Status
from shared.settings import Settings

SUFFIX = "_livebench"
PAUSE_SECONDS = 0.02
POLL_SECONDS = 0.002
PROBE_TIMEOUT_SECONDS = 30
WORKERS = 2
IS_NOTIFIED = "SELECT 1 FROM email_outbox WHERE event_id = %s"
FORGET_ORDER_SUMMARY = (
    "TRUNCATE order_summary",
    "DELETE FROM processed_event WHERE handler_name = 'order_summary'",
)


def probe(conn: db.Connection) -> float:
    """Seconds from an append's commit to its notification in the outbox."""
    event_id = uuid.uuid4()
    shipped = [store.NewEvent("OrderShipped", event_id=event_id)]
    store.append(conn, f"probe-{event_id}", "Order", shipped, expected_version=0)
    committed = time.perf_counter()
    while not conn.execute(IS_NOTIFIED, (event_id,)).fetchone():
        if time.perf_counter() - committed > PROBE_TIMEOUT_SECONDS:
            raise RuntimeError(
                f"the live consumer did not handle a probe within {PROBE_TIMEOUT_SECONDS} s"
            )
        time.sleep(POLL_SECONDS)
    return time.perf_counter() - committed


def probes_while(
    conn: db.Connection, keep_going: Callable[[], bool], limit_seconds: float
) -> list[float]:
    latencies: list[float] = []
    until = time.monotonic() + limit_seconds
    while time.monotonic() < until and keep_going():
        latencies.append(probe(conn))
        time.sleep(PAUSE_SECONDS)
    return latencies


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def run(settings: Settings, aggregates: int, per: int, rate: float, seconds: float,
        output: Path, console: Console, force: bool = False) -> dict[str, Any]:  # fmt: skip
    """Probe the live consumer idle, then during each replay; print the table and write the
    report (JSON, to ``output``), which is returned."""
    name = f"{settings.database_name}{SUFFIX}"
    bench = replace(settings.with_database(name), queue=f"{settings.queue}{SUFFIX}")
    scratch.recreate(settings, name, SUFFIX, force=force)
    with db.connect(bench) as conn:
        seed.seed(conn, aggregates, per, seed=7)
    logs = Path(".replay")
    logs.mkdir(exist_ok=True)
    phases: dict[str, list[float]] = {}
    with _live_consumer(bench, logs), db.connect(bench) as conn:
        while not conn.execute("SELECT 1 FROM live_checkpoint").fetchone():
            time.sleep(0.05)
        phases["idle"] = probes_while(conn, lambda: True, seconds)
        with running_workers(bench, WORKERS, "livebench", logs):
            coordinator = Coordinator(bench)
            replays = [
                ("during an unthrottled replay", None),
                (f"during a replay throttled to {rate:,.0f}/s", rate),
            ]
            for phase, limit in replays:
                phases[phase] = _during_replay(conn, coordinator, limit, seconds)
            coordinator.close()
    report = {"events": aggregates * per, "rate": rate, "phases": _table(phases, console),
              "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}  # fmt: skip
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=2) + "\n")
    console.print(f"written to {output}")
    return report


@contextmanager
def _live_consumer(bench: Settings, logs: Path) -> Iterator[None]:
    """``replay live --handler order_notifications`` running, in a process of its own."""
    consumer = subprocess.Popen(
        [sys.executable, "-m", "scheduler.cli", "live", "--handler", "order_notifications"],
        env={**os.environ, **bench.as_env()},
        stdout=open(logs / "livebench-consumer.log", "ab"), stderr=subprocess.STDOUT,  # noqa: SIM115
    )  # fmt: skip
    try:
        yield
    finally:
        consumer.terminate()
        consumer.wait(10)


def _during_replay(
    conn: db.Connection, coordinator: Coordinator, limit: float | None, seconds: float
) -> list[float]:
    """Probes while a catch-up of order_summary (throttled to ``limit``) runs; it is cancelled
    if it outlives them."""
    for statement in FORGET_ORDER_SUMMARY:
        conn.execute(statement)
    job_id = coordinator.submit("order_summary", max_events_per_second=limit)
    while coordinator.get(job_id)["processed_count"] == 0:
        time.sleep(0.05)

    def replaying() -> bool:
        return coordinator.get(job_id)["status"] in (Status.PENDING, Status.RUNNING)

    latencies = probes_while(conn, replaying, seconds)
    if replaying():
        coordinator.cancel(job_id)
    return latencies


def _table(phases: dict[str, list[float]], console: Console) -> list[dict[str, Any]]:
    table = Table("live latency, append to handled", "probes", "p50 ms", "p99 ms", "max ms")
    rows = []
    for phase, values in phases.items():
        row = {
            "phase": phase,
            "probes": len(values),
            "p50_ms": round(1000 * statistics.median(values), 1),
            "p99_ms": round(1000 * percentile(values, 99), 1),
            "max_ms": round(1000 * max(values), 1),
        }
        rows.append(row)
        table.add_row(phase, str(row["probes"]), f"{row['p50_ms']:g}", f"{row['p99_ms']:g}",
                      f"{row['max_ms']:g}")  # fmt: skip
    console.print(table)
    return rows


if __name__ == "__main__":
    from scheduler.cli import main

    sys.exit(main(["bench-live", *sys.argv[1:]]))
