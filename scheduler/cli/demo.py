"""``replay demo``: the whole story on this machine, with real processes.

A fresh demo database is created, migrated and seeded; two ``celery worker`` processes start on a
demo queue; a full rebuild of ``order_summary`` runs in 8 slices with a progress bar; the read
model is checked against an independent fold of the events; the workers are stopped.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from typing import Any

from examples.orders import seed
from examples.orders.verify import Verification, verify_order_summary
from local import embedded
from local.workers import running_workers
from scheduler import scratch
from scheduler.cli.commands import Subcommands, add, scratch_arguments
from scheduler.cli.display import console, follow, print_summary
from scheduler.coordinator import Coordinator
from shared import db
from shared.errors import InvalidRequest, ReplayError
from shared.jobs import ReplayType, Status
from shared.settings import Settings, redact
from shared.slicing import MAX_SLICES

#: the demo drops and recreates only a database whose name ends so (or with --force)
SUFFIX = "_demo"
MAX_WORKERS = 32


def add_commands(sub: Subcommands) -> None:
    s = add(sub, cmd_demo, "run the whole story end to end on this machine", migrates=True)
    s.add_argument("--aggregates", type=int, default=2000)
    s.add_argument("--events-per-aggregate", type=int, default=100)
    s.add_argument("--workers", type=int, default=2)
    s.add_argument("--slices", type=int, default=8)
    scratch_arguments(s, "demo")


def cmd_demo(settings: Settings, args: argparse.Namespace) -> int:
    # Before the demo recreates its database and starts workers: a bad --slices would only
    # be refused by the submit, after all that.
    if not 1 <= args.slices <= MAX_SLICES:
        raise InvalidRequest(f"--slices must be from 1 to {MAX_SLICES}, got {args.slices}")
    return run(
        settings,
        aggregates=args.aggregates,
        events_per_aggregate=args.events_per_aggregate,
        workers=args.workers,
        slices=args.slices,
        database=args.database,
        force=args.force,
    )


def run(
    settings: Settings,
    *,
    aggregates: int,
    events_per_aggregate: int,
    workers: int,
    slices: int,
    database: str | None,
    force: bool = False,
) -> int:
    """The demo, step by step; raises ``ReplayError`` unless the job completed and
    its read model equals the fold of the events."""
    seed.validate(aggregates, events_per_aggregate)
    if not 1 <= workers <= MAX_WORKERS:
        raise InvalidRequest(f"--workers must be from 1 to {MAX_WORKERS}, got {workers}")
    demo = _prepare(settings, database or f"{settings.database_name}{SUFFIX}", force)
    with db.connect(demo) as conn:
        seeded = seed.seed(conn, aggregates, events_per_aggregate)
    console.print(
        f"2. seeded {seeded.events:,} events ({seeded.aggregates:,} orders) with COPY in"
        f" {seeded.seconds:.1f} s ({seeded.events_per_second:,.0f} events/s)"
    )
    job_id, job, wall = _rebuild(demo, workers, slices)
    print_summary(job)
    with db.connect(demo) as conn:
        check = verify_order_summary(conn)
    _report(demo, job_id, job, check, workers, wall)
    if job["status"] != Status.COMPLETED:
        raise ReplayError(f"the job ended {job['status']}: {job.get('error')}")
    if not check.ok:
        raise ReplayError("the read model differs from the fold of the events")
    return 0


def _prepare(settings: Settings, name: str, force: bool) -> Settings:
    """Step 1: the demo database made afresh, and settings on it and on a queue of its own."""
    queue = f"{settings.queue}_demo"
    planned = replace(settings.with_database(name), queue=queue)
    console.rule("event-replay demo")
    console.print(
        f"PostgreSQL {redact(planned.database_url)} · broker {redact(planned.broker_url)}"
    )
    demo = replace(scratch.recreate(settings, name, SUFFIX, force=force), queue=queue)
    console.print(f"1. migrated a fresh database {name!r}")
    return demo


def _rebuild(demo: Settings, workers: int, slices: int) -> tuple[str, dict[str, Any], float]:
    """Steps 3 and 4: the workers started, a full rebuild followed to its end, the workers
    stopped. Returns the job id, the job and the seconds from submit to its end."""
    logs = embedded.home()
    logs.mkdir(parents=True, exist_ok=True)
    with running_workers(demo, workers, "demo", logs) as procs:
        console.print(
            f"3. started {workers} worker processes (pids {', '.join(str(p.pid) for p in procs)};"
            f" logs in {logs}/)"
        )
        coordinator = Coordinator(demo)
        began = time.perf_counter()
        job_id = coordinator.submit(
            "order_summary", replay_type=ReplayType.FULL, slices=slices, reset=True
        )
        console.print(f"4. full rebuild of order_summary in {slices} slices")
        job = follow(coordinator, job_id)
        wall = time.perf_counter() - began
        coordinator.close()
    return job_id, job, wall


def _report(
    demo: Settings, job_id: str, job: dict[str, Any], check: Verification, workers: int,
    wall: float,
) -> None:  # fmt: skip
    """Step 5 and the figures: the verification, the speed, and where the database is kept."""
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
