"""``replay bench``: this project against the seed design's algorithm and against the hardware,
measured side by side in one run, on the same data.

    replay bench [--aggregates 10000 --events-per-aggregate 100]
    .venv/bin/python bench/replay_bench.py [the same arguments]

* baseline: the seed design's consumer, one event at a time: Redis EXISTS, a SELECT on
  processed_event, a transaction that applies the order_summary change and inserts the marker,
  then Redis SETEX; over a sample of events.
* ceiling: the events streamed out of PostgreSQL in (aggregate_id, sequence_num) order with
  ``COPY ... TO STDOUT`` and discarded: the most the database can hand over.
* this project: a full rebuild (reset) of order_summary through real worker processes (1 and
  2 processes), the first catch-up of a handler that never processed anything (every event
  claimed: its aggregate's watermark moved), and an incremental catch-up of 5 % new events
  appended across random existing orders (its rate: new events per second); time from submit
  to completed, by the jobs' own timestamps. The incremental measure appends its events to
  the bench database.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import redis
from rich.console import Console
from rich.table import Table

from examples.orders import seed
from examples.orders.verify import verify_order_summary
from local import embedded
from local.workers import running_workers
from scheduler import scratch
from scheduler.coordinator import Coordinator
from shared import db
from shared.jobs import Status
from shared.settings import Settings

#: the bench drops and recreates only a database whose name ends so (or with --force)
SUFFIX = "_bench"

BASELINE_HANDLER = "bench_baseline"
MEASURES = ("baseline", "ceiling", "rebuild1", "rebuild2", "rebuild2py", "catchup", "incremental")
STATUS = {"OrderPlaced": "placed", "PaymentProcessed": "paid", "OrderShipped": "shipped"}
CACHE_SECONDS = 86400  # the seed design's marker TTL in Redis

# --- the SQL of the measures (the seed design's, for the baseline) -------------------------------
CREATE_SCRATCH_SUMMARY = (
    "CREATE TABLE IF NOT EXISTS bench_order_summary (LIKE order_summary INCLUDING ALL)"
)
SAMPLE_EVENTS = (
    "SELECT event_id, aggregate_id, event_type, payload, sequence_num FROM event"
    " ORDER BY aggregate_id, sequence_num LIMIT %s"
)
IS_PROCESSED = "SELECT 1 FROM processed_event WHERE handler_name = %s AND event_id = %s"
UPSERT_SCRATCH_SUMMARY = (
    "INSERT INTO bench_order_summary AS s VALUES (%s, %s, %s, %s, %s)"
    " ON CONFLICT (order_id) DO UPDATE SET item_count = s.item_count +"
    " EXCLUDED.item_count, total = s.total + EXCLUDED.total,"
    " status = coalesce(EXCLUDED.status, s.status), version = EXCLUDED.version"
)
INSERT_MARKER = "INSERT INTO processed_event (handler_name, event_id) VALUES (%s, %s)"
COPY_ALL_EVENTS = (
    "COPY (SELECT event_id, aggregate_id, aggregate_type, event_type, payload,"
    " metadata, sequence_num, occurred_at FROM event"
    " ORDER BY aggregate_id, sequence_num) TO STDOUT"
)
COUNT_EVENTS = "SELECT count(*) AS n FROM event"
# As for a consumer that never ran: no state, no markers or progress (the bench database holds
# no other handler's), no rebuild coverage (every event needs a claim).
FORGET_ORDER_SUMMARY = (
    "TRUNCATE order_summary, processed_event, handler_progress",
    "UPDATE handler_state SET rebuild_snapshot = NULL, rebuild_job_id = NULL, caught_up = NULL"
    " WHERE handler_name = 'order_summary'",
)
# New events across random existing orders (ItemAdded, each after its order's last event): what
# an incremental catch-up has to apply.
APPEND_ACROSS_AGGREGATES = """
WITH aggregates AS (
    SELECT aggregate_id, max(sequence_num) AS head, row_number() OVER (ORDER BY aggregate_id) AS i
      FROM event GROUP BY aggregate_id
), picks AS (
    SELECT 1 + floor(random() * (SELECT count(*) FROM aggregates))::bigint AS i
      FROM generate_series(1, %(events)s)
), numbered AS (
    SELECT a.aggregate_id, a.head + row_number() OVER (PARTITION BY a.aggregate_id) AS seq
      FROM picks JOIN aggregates a USING (i)
)
INSERT INTO event (aggregate_id, aggregate_type, event_type, payload, metadata, sequence_num,
                   occurred_at)
SELECT aggregate_id, 'Order', 'ItemAdded',
       jsonb_build_object('sku', 'SKU-0001', 'qty', 1 + seq %% 5, 'price', 9.99),
       '{"source": "bench"}', seq, now()
  FROM numbered
"""
CANCEL_ACTIVE_JOBS = "UPDATE replay_job SET status = %s WHERE status = ANY(%s)"


@dataclass
class Measure:
    name: str
    events: int
    seconds: list[float] = field(default_factory=list)
    peak_rss_mb: list[float] = field(default_factory=list)
    planning_ms: list[int] = field(default_factory=list)

    @property
    def median_seconds(self) -> float:
        return statistics.median(self.seconds)

    @property
    def events_per_second(self) -> float:
        return self.events / self.median_seconds if self.seconds else 0.0


# --- the seed design's algorithm -----------------------------------------------------------------
def baseline(settings: Settings, sample: int) -> Measure:
    """One event at a time, as the seed design did it, into a scratch copy of order_summary."""
    cache = redis.Redis.from_url(settings.redis_url)
    m = Measure("baseline (one event at a time)", sample)
    with db.connect(settings) as conn:
        conn.execute(CREATE_SCRATCH_SUMMARY)
        conn.execute("TRUNCATE bench_order_summary")
        conn.execute("DELETE FROM processed_event WHERE handler_name = %s", (BASELINE_HANDLER,))
        events = conn.execute(SAMPLE_EVENTS, (sample,)).fetchall()
        for key in cache.scan_iter(f"processed:{BASELINE_HANDLER}:*", count=10_000):
            cache.delete(key)
        started = time.perf_counter()
        for e in events:
            baseline_event(conn, cache, e)
        m.seconds.append(time.perf_counter() - started)
    cache.close()
    return m


def baseline_event(conn: db.Connection, cache: redis.Redis, e: dict[str, Any]) -> None:
    key = f"processed:{BASELINE_HANDLER}:{e['event_id']}"
    if cache.exists(key):
        return
    if conn.execute(IS_PROCESSED, (BASELINE_HANDLER, e["event_id"])).fetchone():
        return
    with conn.transaction():
        qty, amount = 0, Decimal(0)
        if e["event_type"] == "ItemAdded":
            qty = int(e["payload"]["qty"])
            amount = qty * Decimal(str(e["payload"]["price"]))
        status = STATUS.get(e["event_type"])
        conn.execute(
            UPSERT_SCRATCH_SUMMARY, (e["aggregate_id"], qty, amount, status, e["sequence_num"])
        )
        conn.execute(INSERT_MARKER, (BASELINE_HANDLER, e["event_id"]))
    cache.setex(key, CACHE_SECONDS, 1)


# --- what the database can hand over -------------------------------------------------------------
def ceiling(settings: Settings, total: int, runs: int) -> Measure:
    m = Measure("ceiling (COPY TO STDOUT, discarded)", total)
    for _ in range(runs):
        with db.connect(settings) as conn, conn.cursor() as cur:
            started = time.perf_counter()
            with cur.copy(COPY_ALL_EVENTS) as copy:
                for _chunk in copy:
                    pass
            m.seconds.append(time.perf_counter() - started)
    return m


# --- this project --------------------------------------------------------------------------------
def peak_rss_mb(pids: list[int]) -> float:
    """The largest VmHWM (peak resident set) among ``pids`` and their children, in MB."""
    peak = 0
    for pid in pids:
        for p in [pid, *_children(pid)]:
            try:
                for line in Path(f"/proc/{p}/status").read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        peak = max(peak, int(line.split()[1]))
            except OSError:
                continue
    return peak / 1024


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def job_seconds(job: dict[str, Any]) -> float:
    """A job's time from submit (its row, written as planning starts) to completed, by the
    database's clock: the coordinator's polling (every 0.5 s) is not part of it."""
    created, completed = (
        v if isinstance(v := job[k], datetime) else datetime.fromisoformat(v)
        for k in ("created_at", "completed_at")
    )
    return (completed - created).total_seconds()


def project_run(
    settings: Settings, name: str, workers: int, runs: int, *, reset: bool, logs: Path
) -> Measure:
    with db.connect(settings) as conn:
        total = int(conn.execute(COUNT_EVENTS).fetchone()["n"])  # type: ignore[index]
    m = Measure(name, total)
    for run in range(runs):
        with running_workers(settings, workers, f"bench{workers}x{run}n", logs) as procs:
            if not reset:  # catch-up: every event must be claimed, none is
                with db.connect(settings) as conn:
                    for statement in FORGET_ORDER_SUMMARY:
                        conn.execute(statement)
                redis.Redis.from_url(settings.redis_url).flushdb()
            coordinator = Coordinator(settings)
            job = coordinator.wait(coordinator.submit("order_summary", reset=reset))
            m.seconds.append(job_seconds(job))
            coordinator.close()
            if job["status"] != Status.COMPLETED:
                raise RuntimeError(f"{name}: job ended {job['status']}: {job['error']}")
            m.planning_ms.append(int(job["planning_ms"]))
            m.peak_rss_mb.append(peak_rss_mb([p.pid for p in procs]))
        with db.connect(settings) as conn:
            check = verify_order_summary(conn)
        if not check.ok:
            raise RuntimeError(f"{name}: the read model differs from the fold of the events")
    return m


def incremental_run(
    settings: Settings, name: str, workers: int, runs: int, appended: int, logs: Path
) -> Measure:
    """After every event was processed: ``appended`` new events across random existing
    orders, then a catch-up; its rate is the new events' (what it has to apply) per second."""
    m = Measure(name, appended)
    for run in range(runs):
        with running_workers(settings, workers, f"bench{workers}x{run}i", logs) as procs:
            coordinator = Coordinator(settings)
            # up to date first (nothing to do after the catch-up measure), untimed
            coordinator.wait(coordinator.submit("order_summary"))
            with db.connect(settings) as conn:
                conn.execute(APPEND_ACROSS_AGGREGATES, {"events": appended})
            job = coordinator.wait(coordinator.submit("order_summary"))
            m.seconds.append(job_seconds(job))
            coordinator.close()
            if job["status"] != Status.COMPLETED or job["applied_count"] != appended:
                raise RuntimeError(f"{name}: {job['status']}, {job['applied_count']} applied")
            m.planning_ms.append(int(job["planning_ms"]))
            m.peak_rss_mb.append(peak_rss_mb([p.pid for p in procs]))
        with db.connect(settings) as conn:
            if not verify_order_summary(conn).ok:
                raise RuntimeError(f"{name}: the read model differs from the fold of the events")
    return m


@dataclass
class BenchConfig:
    aggregates: int = 10_000
    events_per_aggregate: int = 100
    baseline_sample: int = 20_000
    runs: int = 3
    database: str | None = None
    output: Path = Path("bench/results/latest.json")
    keep_data: bool = False
    measures: tuple[str, ...] = MEASURES
    #: drop --database even if it is not a scratch database of ours (see scheduler.scratch)
    force: bool = False


def run(settings: Settings, config: BenchConfig, console: Console) -> dict[str, Any]:
    """Measure what ``config`` asks for on a scratch database; print the table and write the
    report (the JSON of ``config.output``), which is returned."""
    name = config.database or f"{settings.database_name}{SUFFIX}"
    scratch.check_droppable(settings, name, SUFFIX, force=config.force)
    bench = replace(settings.with_database(name), queue=f"{settings.queue}_bench")
    total = config.aggregates * config.events_per_aggregate
    _prepare(settings, bench, config, console)
    # The ratios need the baseline and the ceiling: they are always measured.
    results = [
        baseline(bench, min(config.baseline_sample, total)),
        ceiling(bench, total, config.runs),
    ]
    results += [measure() for measure in _planned(bench, config)]
    rows = _table(results, total, console)
    report = {
        "events": total,
        "cpus": os.cpu_count(),
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "results": rows,
    }
    config.output.parent.mkdir(parents=True, exist_ok=True)
    config.output.write_text(json.dumps(report, indent=2) + "\n")
    console.print(f"written to {config.output}")
    return report


def _prepare(settings: Settings, bench: Settings, config: BenchConfig, console: Console) -> None:
    """The bench database seeded afresh, or with --keep-data the one of a previous run if it
    holds the events asked for (its jobs left running by an interrupted run cancelled)."""
    total = config.aggregates * config.events_per_aggregate
    if _event_count(bench) == total and config.keep_data:
        with db.connect(bench) as conn:  # a job left by an interrupted run would block ours
            conn.execute(CANCEL_ACTIVE_JOBS, (Status.CANCELLED, [Status.PENDING, Status.RUNNING]))
        return
    scratch.recreate(settings, bench.database_name, SUFFIX, force=config.force)
    with db.connect(bench) as conn:
        seeded = seed.seed(conn, config.aggregates, config.events_per_aggregate, seed=42)
        # As a table at rest is (autovacuum): visibility map and hint bits set, statistics
        # known, so that the first measure does not pay for them.
        conn.execute("VACUUM (ANALYZE) event")
    console.print(f"seeded {seeded.events:,} events in {seeded.seconds:.1f} s")


def _planned(bench: Settings, config: BenchConfig) -> list[Callable[[], Measure]]:
    """The project's measures that ``config.measures`` names, in MEASURES' order."""
    logs = embedded.home()
    logs.mkdir(parents=True, exist_ok=True)
    runs = config.runs
    python_path = replace(bench, sql_folds=False)
    planned: dict[str, Callable[[], Measure]] = {
        "rebuild1": lambda: project_run(
            bench, "full rebuild, 1 worker process", 1, runs, reset=True, logs=logs
        ),
        "rebuild2": lambda: project_run(
            bench, "full rebuild, 2 worker processes", 2, runs, reset=True, logs=logs
        ),
        "rebuild2py": lambda: project_run(
            python_path, "full rebuild, Python path, 2 processes", 2, runs, reset=True, logs=logs
        ),
        "catchup": lambda: project_run(
            bench, "first catch-up, 2 processes", 2, runs, reset=False, logs=logs
        ),
        # 5 % of the events, new: the 50,000 after 1,000,000
        "incremental": lambda: incremental_run(
            bench,
            "incremental catch-up (new events), 2 processes",
            2,
            runs,
            max(1, config.aggregates * config.events_per_aggregate // 20),
            logs,
        ),
    }
    return [measure for name, measure in planned.items() if name in config.measures]


def _table(results: list[Measure], total: int, console: Console) -> list[dict[str, Any]]:
    """Print the measures as a table (the first two are the baseline and the ceiling, which
    the others are compared with); returns them as the report's rows."""
    base, top = results[0].events_per_second, results[1].events_per_second
    table = Table(
        "measure", "events", "runs", "median s", "events/s", "x baseline", "% ceiling",
        "peak RSS MB", "planning ms", title=f"replay bench, {total:,} events",
    )  # fmt: skip
    rows = []
    for m in results:
        row = {
            "name": m.name,
            "events": m.events,
            "runs": len(m.seconds),
            "median_seconds": round(m.median_seconds, 3),
            "events_per_second": round(m.events_per_second),
            "x_baseline": round(m.events_per_second / base, 1),
            "pct_ceiling": round(100 * m.events_per_second / top, 1),
            "peak_rss_mb": round(max(m.peak_rss_mb), 1) if m.peak_rss_mb else None,
            "planning_ms": int(statistics.median(m.planning_ms)) if m.planning_ms else None,
        }
        rows.append(row)
        table.add_row(
            m.name, f"{m.events:,}", str(row["runs"]), f"{row['median_seconds']:.2f}",
            f"{row['events_per_second']:,}", f"{row['x_baseline']:g}", f"{row['pct_ceiling']:g}",
            "" if row["peak_rss_mb"] is None else f"{row['peak_rss_mb']:g}",
            "" if row["planning_ms"] is None else str(row["planning_ms"]),
        )  # fmt: skip
    console.print(table)
    return rows


def _event_count(settings: Settings) -> int:
    try:
        with db.connect(settings) as conn:
            row = conn.execute(COUNT_EVENTS).fetchone()
            return int(row["n"]) if row else 0
    except Exception:
        return -1


if __name__ == "__main__":
    from scheduler.cli import main

    sys.exit(main(["bench", *sys.argv[1:]]))
