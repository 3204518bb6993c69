"""``replay demo``: the whole story on this machine, with real processes.

A fresh demo database is created, migrated and seeded; two ``celery worker`` processes start on a
demo queue; a full rebuild of ``order_summary`` runs in 8 slices with a progress bar; the read
model is checked against an independent fold of the events; the workers are stopped.
"""

from __future__ import annotations

import time
from dataclasses import replace

from rich.console import Console

from scheduler import scratch
from scheduler.cli import follow, print_summary
from scheduler.coordinator import Coordinator
from scheduler.workers import running_workers
from shared import db, embedded, seed
from shared.errors import DemoVerificationFailed, InvalidRequest
from shared.settings import Settings, redact
from shared.verify import verify_order_summary

#: the demo drops and recreates only a database whose name ends so (or with --force)
SUFFIX = "_demo"


def run(
    settings: Settings,
    *,
    aggregates: int,
    events_per_aggregate: int,
    workers: int,
    slices: int,
    database: str | None,
    console: Console,
    force: bool = False,
) -> int:
    seed.validate(aggregates, events_per_aggregate)
    if not 1 <= workers <= 32:
        raise InvalidRequest(f"--workers must be from 1 to 32, got {workers}")
    name = database or f"{settings.database_name}{SUFFIX}"
    demo = replace(settings.with_database(name), queue=f"{settings.queue}_demo")

    console.rule("event-replay demo")
    console.print(f"PostgreSQL {redact(demo.database_url)} · broker {redact(demo.broker_url)}")
    demo = replace(scratch.recreate(settings, name, SUFFIX, force=force), queue=demo.queue)
    console.print(f"1. migrated a fresh database {name!r}")

    with db.connect(demo) as conn:
        seeded = seed.seed(conn, aggregates, events_per_aggregate)
    console.print(
        f"2. seeded {seeded.events:,} events ({seeded.aggregates:,} orders) with COPY in"
        f" {seeded.seconds:.1f} s ({seeded.events_per_second:,.0f} events/s)"
    )

    logs = embedded.home()
    logs.mkdir(parents=True, exist_ok=True)
    with running_workers(demo, workers, "demo", logs) as procs:
        console.print(
            f"3. started {workers} worker processes (pids {', '.join(str(p.pid) for p in procs)};"
            f" logs in {logs}/)"
        )

        coordinator = Coordinator(demo)
        began = time.perf_counter()
        job_id = coordinator.submit("order_summary", replay_type="full", slices=slices, reset=True)
        console.print(f"4. full rebuild of order_summary in {slices} slices")
        job = follow(coordinator, job_id)
        wall = time.perf_counter() - began
        coordinator.close()
    print_summary(job)

    with db.connect(demo) as conn:
        check = verify_order_summary(conn)
    console.print(
        f"5. verification: {check.actual_rows:,} order_summary rows vs {check.expected_rows:,}"
        f" from an independent fold of the events; {check.missing_or_different} differ,"
        f" {check.unexpected} unexpected -> {'OK' if check.ok else 'MISMATCH'}"
    )
    rate = job["processed_count"] / wall if wall else 0.0
    console.print(
        f"figures: {job['processed_count']:,} events, {workers} workers, {job['slice_count']}"
        f" slices, planning {job['planning_ms']} ms, submit-to-completed {wall:.2f} s,"
        f" {rate:,.0f} events/s"
    )
    console.print(
        f"the demo database is kept: REPLAY_DATABASE_URL={redact(demo.database_url)}"
        f" replay status {job_id}"
    )
    if job["status"] != "completed":
        raise DemoVerificationFailed(f"the job ended {job['status']}: {job.get('error')}")
    if not check.ok:
        raise DemoVerificationFailed("the read model differs from the fold of the events")
    return 0
