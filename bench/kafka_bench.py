"""``replay bench-kafka``: the design's own Kafka replay loop against this project's, on the same
broker and topic, in one run (issue 14). Also ``.venv/bin/python bench/kafka_bench.py [args]``.

The topic: 4 partitions of JSON Order events keyed by order id, in three bursts with pauses
between them (tansu stamps messages with its append time: a time can only split bursts): one
OrderPlaced per key, the sample, the rest. Both sides start at the second burst (``from_time``).

* baseline, the design's loop: kafka-python, a new group, auto-commit off, the partitions assigned
  and sought to ``offsets_for_times(from_time)``; per message, the project's decoding, the seed
  design's ``process_event`` (``replay bench``'s baseline), and ``commit()`` of its offset. One
  run, over the sample burst: its rate is events/s over the sample.
* this project: a Kafka job of ``order_summary`` from ``from_time``, two worker processes (two
  workers of concurrency 1), submit to completed, each run on a fresh state.
* agreement: one more job, untimed, over the sample burst alone must leave ``order_summary``
  equal, row for row, to what the baseline wrote.
"""

from __future__ import annotations

import importlib.util
import json
import os
import statistics
import sys
import time
import uuid
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import redis
from rich.console import Console
from rich.table import Table

from bench import replay_bench
from bench.kafka_topic import PARTITIONS, Topic, broker, topic_of_bursts
from local import embedded
from local.workers import running_workers
from scheduler import scratch
from scheduler.coordinator import Coordinator
from shared import db, idempotency
from shared.errors import ConfigurationError
from shared.handlers import load_registry
from shared.jobs import Status
from shared.scope import Scope
from shared.settings import Settings
from shared.sources import kafka as kafka_source
from shared.sources import kafka_client, kafka_decoding

#: the bench drops and recreates only a database whose name ends so (or with --force)
SUFFIX = "_kafkabench"
WORKERS = 2
HANDLER = "order_summary"
#: how long a job may run before the bench gives up, in seconds
JOB_TIMEOUT_SECONDS = 1800
#: how long the baseline may wait for messages that do not come, in seconds
POLL_TIMEOUT_SECONDS = 30

# Both read models row for row: order_summary (the project) and the scratch copy the baseline
# writes (replay_bench.CREATE_SCRATCH_SUMMARY), in both directions.
COMPARE_READ_MODELS = """
SELECT (SELECT count(*) FROM order_summary) AS project_rows,
       (SELECT count(*) FROM bench_order_summary) AS baseline_rows,
       (SELECT count(*) FROM (TABLE order_summary EXCEPT TABLE bench_order_summary) d)
           AS only_project,
       (SELECT count(*) FROM (TABLE bench_order_summary EXCEPT TABLE order_summary) d)
           AS only_baseline
"""


@dataclass
class KafkaBenchConfig:
    events: int = 100_000
    keys: int = 1_000
    baseline_sample: int = 20_000
    runs: int = 3
    database: str | None = None
    output: Path = Path("bench/results/kafka.json")
    #: drop --database even if it is not a scratch database of ours (see scheduler.scratch)
    force: bool = False


def run(settings: Settings, config: KafkaBenchConfig, console: Console) -> dict[str, Any]:
    """Produce the topic, measure both sides and check that they agree; print the table and
    write the report (the JSON of ``config.output``), which is returned."""
    name = config.database or f"{settings.database_name}{SUFFIX}"
    scratch.check_droppable(settings, name, SUFFIX, force=config.force)
    bench = replace(settings.with_database(name), queue=f"{settings.queue}{SUFFIX}")
    kafka_client.kafka_module()  # the project's client (event-replay[kafka]), else one line
    if importlib.util.find_spec("kafka") is None:  # kafka-python, the design's client
        raise ConfigurationError(
            "replay bench-kafka's baseline is the design's kafka-python loop: pip install"
            " kafka-python (it comes with event-replay[dev])"
        )
    logs = embedded.home()
    logs.mkdir(parents=True, exist_ok=True)
    with broker(logs, console) as (bootstrap, used):
        scratch.recreate(settings, name, SUFFIX, force=config.force)
        with topic_of_bursts(bootstrap, config, console) as topic:
            base = baseline(bench, bootstrap, topic)
            project = project_runs(bench, topic, config.runs, logs)
            agreement = agree(bench, topic, logs)
    rows = _table(base, project, topic, console)
    report = {
        "events": topic.events,
        "keys": config.keys,
        "partitions": PARTITIONS,
        "baseline_sample": topic.sample,
        "broker": used,
        "project_workers": f"{WORKERS} worker processes (concurrency 1 each)",
        "cpus": os.cpu_count(),
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "ratio": rows[1]["x_baseline"],
        "results": rows,
        "agreement": agreement,
    }
    config.output.parent.mkdir(parents=True, exist_ok=True)
    config.output.write_text(json.dumps(report, indent=2) + "\n")
    console.print(f"written to {config.output}")
    if not agreement["ok"]:
        raise RuntimeError(f"the two sides' read models differ on the sample: {agreement}")
    console.print(f"both sides agree on the sample's {topic.sample:,} messages, row for row")
    return report


# --- the design's loop ---------------------------------------------------------------------------
def _as_message(record: Any) -> Any:
    """A kafka-python ``ConsumerRecord`` as the confluent-kafka ``Message`` that
    ``kafka_decoding.decode`` reads (methods instead of attributes)."""
    stamp = record.timestamp
    kind = kafka_decoding.NO_TIMESTAMP
    if stamp is not None and stamp >= 0:  # kafka-python's types are confluent-kafka's minus one
        kind = (record.timestamp_type or 0) + 1
    return SimpleNamespace(
        topic=lambda: record.topic, partition=lambda: record.partition,
        offset=lambda: record.offset, timestamp=lambda: (kind, stamp or 0),
        key=lambda: record.key, value=lambda: record.value, headers=lambda: record.headers,
    )  # fmt: skip


def baseline(bench: Settings, bootstrap: str, topic: Topic) -> replay_bench.Measure:
    """The design's loop over the sample burst, into replay_bench's scratch copy of
    order_summary: one ``process_event`` and one ``commit()`` per message."""
    from kafka import KafkaConsumer

    # Where to stop: the sample's end offsets as the project plans them (the design's loop
    # would stop at the first message stamped at or after sample_end: the same messages).
    scope = Scope(from_time=topic.from_time, to_time=topic.sample_end, topic=topic.name)
    ends = {p: end for p, _, end in kafka_source.offset_ranges(scope)}
    m = replay_bench.Measure("baseline: the design's loop", topic.sample)
    cache = redis.Redis.from_url(bench.redis_url)
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap, group_id=f"bench-design-{uuid.uuid4().hex[:8]}",
        enable_auto_commit=False, auto_offset_reset="earliest",
    )  # fmt: skip
    try:
        with db.connect(bench) as conn:
            conn.execute(replay_bench.CREATE_SCRATCH_SUMMARY)
            started = time.perf_counter()
            done = _design_loop(consumer, conn, cache, topic, ends)
            m.seconds.append(time.perf_counter() - started)
    finally:
        consumer.close()
        # tidy: the baseline's cached markers would stay a day
        stale = list(cache.scan_iter(f"processed:{replay_bench.BASELINE_HANDLER}:*", count=10_000))
        if stale:
            cache.delete(*stale)
        cache.close()
    if done != topic.sample:
        raise RuntimeError(f"the design's loop processed {done:,} messages, not {topic.sample:,}")
    return m


def _design_loop(
    consumer: Any, conn: db.Connection, cache: redis.Redis, topic: Topic, ends: dict[int, int]
) -> int:
    """Assign every partition, seek each to ``offsets_for_times(from_time)``, then per message:
    decode, ``process_event``, ``commit()`` its offset; until every partition reaches its end
    offset. Returns the number of messages processed."""
    from kafka import TopicPartition
    from kafka.structs import OffsetAndMetadata

    from_millis = kafka_client.to_millis(topic.from_time)
    partitions = [TopicPartition(topic.name, p) for p in sorted(ends)]
    consumer.assign(partitions)
    starts = consumer.offsets_for_times({tp: from_millis for tp in partitions})
    for tp in partitions:
        found = starts[tp]
        consumer.seek(tp, found.offset if found is not None else ends[tp.partition])
    pending = {tp for tp in partitions if consumer.position(tp) < ends[tp.partition]}
    done = 0
    while pending:
        polled = consumer.poll(timeout_ms=POLL_TIMEOUT_SECONDS * 1000)
        if not polled:
            raise RuntimeError(f"the design's loop got no message in {POLL_TIMEOUT_SECONDS} s")
        for tp, records in polled.items():
            for record in records:
                end = ends[tp.partition]
                if tp not in pending or record.offset >= end:
                    pending.discard(tp)
                    break
                if record.timestamp < from_millis:  # a broker that seeks short of from_time
                    continue
                event, error = kafka_decoding.decode(_as_message(record))
                if error is not None:
                    raise error
                # the seed design's process_event, the one `replay bench` measures
                replay_bench.baseline_event(conn, cache, event)  # type: ignore[arg-type]
                consumer.commit({tp: OffsetAndMetadata(record.offset + 1, "", -1)})
                done += 1
                if record.offset + 1 >= end:
                    pending.discard(tp)
    return done


# --- this project --------------------------------------------------------------------------------
def project_runs(bench: Settings, topic: Topic, runs: int, logs: Path) -> replay_bench.Measure:
    """``runs`` Kafka jobs of order_summary from ``from_time``; each message applied once."""
    m = replay_bench.Measure(f"Kafka job, {WORKERS} worker processes", topic.events)
    for run in range(runs):
        job = _job(bench, topic, None, f"kbench{run}n", logs, m)
        counts = job["total_events"], job["processed_count"], job["applied_count"]
        if counts != (topic.events,) * 3:
            raise RuntimeError(f"run {run + 1}: total, processed, applied = {counts}")
        m.planning_ms.append(int(job["planning_ms"]))
    return m


def agree(bench: Settings, topic: Topic, logs: Path) -> dict[str, Any]:
    """The project's read model of the sample burst alone (one more job, untimed, unless the
    runs' scope was the sample) against the baseline's, row for row."""
    if topic.sample_end is not None:
        job = _job(bench, topic, topic.sample_end, "kbenchcheck", logs, None)
        if job["processed_count"] != topic.sample:
            raise RuntimeError(
                f"the sample's job processed {job['processed_count']:,} messages, not"
                f" {topic.sample:,}: the broker's timestamps do not split the bursts"
            )
    with db.connect(bench) as conn:
        row = conn.execute(COMPARE_READ_MODELS).fetchone()
    assert row is not None
    found = {"events": topic.sample, **{k: int(v) for k, v in row.items()}}
    ok = found["only_project"] == found["only_baseline"] == 0 < found["project_rows"]
    return {**found, "ok": ok}


def _job(
    bench: Settings, topic: Topic, to_time: datetime | None, name: str, logs: Path,
    m: replay_bench.Measure | None,
) -> dict[str, Any]:  # fmt: skip
    """A Kafka job of order_summary from ``from_time`` on a fresh state, on worker processes
    started for it; its wall time (submit to completed) and peak RSS into ``m``."""
    with running_workers(bench, WORKERS, name, logs) as procs:
        # as for a consumer that never ran: no state, no markers (cached ones: a new epoch)
        with db.connect(bench) as conn, conn.transaction():
            load_registry().get(HANDLER).reset(conn, None)
            idempotency.clear_markers(conn, HANDLER, None)
        coordinator = Coordinator(bench)
        try:
            started = time.perf_counter()
            job_id = coordinator.submit(
                HANDLER, source=kafka_source.NAME, topic=topic.name, replay_type="time_range",
                from_time=topic.from_time, to_time=to_time,
            )  # fmt: skip
            job = coordinator.wait(job_id, timeout=JOB_TIMEOUT_SECONDS)
            seconds = time.perf_counter() - started
        finally:
            coordinator.close()
        if m is not None:
            m.seconds.append(seconds)
            m.peak_rss_mb.append(replay_bench.peak_rss_mb([p.pid for p in procs]))
    if job["status"] != Status.COMPLETED:
        raise RuntimeError(f"the Kafka job ended {job['status']}: {job['error']}")
    return job


# --- the report ----------------------------------------------------------------------------------
#: the table's columns: the keys of a report's row, and their headers
COLUMNS = {"name": "measure", "events": "events", "runs": "runs", "median_seconds": "median s",
           "events_per_second": "events/s", "x_baseline": "x baseline",
           "peak_rss_mb": "peak RSS MB", "planning_ms": "planning ms"}  # fmt: skip


def _table(
    base: replay_bench.Measure, project: replay_bench.Measure, topic: Topic, console: Console
) -> list[dict[str, Any]]:
    """Print both sides and their ratio; returns them as the report's rows."""
    rows = [_row(m, base.events_per_second) for m in (base, project)]
    rows[0]["note"] = (
        f"over a sample of {base.events:,} messages (the second burst), one run: one"
        " process_event and one commit() per message"
    )
    table = Table(*COLUMNS.values(), title=f"replay bench-kafka, {topic.events:,} events")
    for row in rows:
        cells = (row[k] for k in COLUMNS)
        table.add_row(*("" if c is None else f"{c:,}" if type(c) is int else str(c) for c in cells))
    console.print(table)
    runs = ", ".join(f"{r:,}" for r in rows[1]["per_run_events_per_second"])
    console.print(
        f"the Kafka job's runs: {runs} events/s; the baseline's rate is over a sample of"
        f" {base.events:,} messages; this project is {rows[1]['x_baseline']:g}x faster (medians)"
    )
    return rows


def _row(m: replay_bench.Measure, baseline_rate: float) -> dict[str, Any]:
    return {
        "name": m.name,
        "events": m.events,
        "runs": len(m.seconds),
        "median_seconds": round(m.median_seconds, 3),
        "events_per_second": round(m.events_per_second),
        "per_run_events_per_second": [round(m.events / s) for s in m.seconds],
        "x_baseline": round(m.events_per_second / baseline_rate, 1),
        "peak_rss_mb": round(max(m.peak_rss_mb), 1) if m.peak_rss_mb else None,
        "planning_ms": int(statistics.median(m.planning_ms)) if m.planning_ms else None,
    }


if __name__ == "__main__":
    from scheduler.cli import main

    sys.exit(main(["bench-kafka", *sys.argv[1:]]))
