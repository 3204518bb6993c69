"""``replay demo``: the whole story on this machine, with real processes.

A fresh demo database is created, migrated and seeded; two ``celery worker`` processes start on a
demo queue; a full rebuild of ``order_summary`` runs in 8 slices with a progress bar; the read
model is checked against an independent fold of the events; the workers are stopped.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from examples.orders import seed
from examples.orders.verify import Verification, verify_order_summary
from local import embedded, servers
from local.workers import running_workers
from scheduler import scratch
from scheduler.cli.commands import Subcommands, add, scratch_arguments
from scheduler.cli.display import console, follow, print_summary
from scheduler.cli.formats import count, duration, rate
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
        f"2. seeded {count(seeded.events)} events ({count(seeded.aggregates)} orders) with COPY"
        f" in {duration(seeded.seconds)} ({rate(seeded.events_per_second)})",
        highlight=False,
    )
    job_id, job = _rebuild(demo, workers, slices)
    print_summary(job)
    with db.connect(demo) as conn:
        check = verify_order_summary(conn)
    _report(job, check, workers)
    console.print(
        "the demo database is kept; to see the job again, in any shell after the demo:",
        highlight=False,
    )
    console.print(f"  {hint(demo, job_id)}", highlight=False)
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


def _rebuild(demo: Settings, workers: int, slices: int) -> tuple[str, dict[str, Any]]:
    """Steps 3 and 4: the workers started, a full rebuild followed to its end, the workers
    stopped. Returns the job id and the job."""
    logs = embedded.home()
    logs.mkdir(parents=True, exist_ok=True)
    with running_workers(demo, workers, "demo", logs) as procs:
        console.print(
            f"3. started {workers} worker processes (pids {', '.join(str(p.pid) for p in procs)};"
            f" logs in {logs}/)"
        )
        coordinator = Coordinator(demo)
        job_id = coordinator.submit(
            "order_summary", replay_type=ReplayType.FULL, slices=slices, reset=True
        )
        console.print(f"4. full rebuild of order_summary in {slices} slices")
        job = follow(coordinator, job_id)
        coordinator.close()
    return job_id, job


def _report(job: dict[str, Any], check: Verification, workers: int) -> None:
    """Step 5 and the figures: the verification, the job's times and its one rate (the same as
    the bar's and the summary's: events over the run time, ``shared.views``)."""
    console.print(
        f"5. verification: {count(check.actual_rows)} order_summary rows vs"
        f" {count(check.expected_rows)} from an independent fold of the events;"
        f" {count(check.missing_or_different)} differ, {count(check.unexpected)} unexpected"
        f" -> {'OK' if check.ok else 'MISMATCH'}",
        highlight=False,
    )
    end = job["completed_at"]
    submit_to_end = (end - job["created_at"]).total_seconds() if end else None
    console.print(
        f"figures: {count(job['processed_count'])} events in {count(job['slice_count'])} slices"
        f" on {count(workers)} worker processes; submit to completed {duration(submit_to_end)}"
        f" (planning {count(job['planning_ms'] or 0)} ms); the job's rate"
        f" {rate(job['events_per_second'])} = its events over its run time of"
        f" {duration(job['elapsed_seconds'])} (first slice started to job completed)",
        highlight=False,
    )


def hint(demo: Settings, job_id: str) -> str:
    """The command that shows the demo's job again, as it works in a new shell after the demo:
    the servers the demo found are found again from its directory (embedded ones are started
    for the command and stopped after it), ``replay`` by its path (a new shell has no .venv on
    its PATH), the demo's database by ``--database``."""
    command = f"cd {shlex.quote(os.getcwd())} && "
    if embedded.HOME_ENV in os.environ:
        command += f"{embedded.HOME_ENV}={shlex.quote(str(embedded.home()))} "
    if servers.DATABASE_ENV in os.environ:
        # The demo's database server came from the environment: a new shell needs it too. A
        # password is not printed: the user puts theirs in place of the mask.
        command += f"{servers.DATABASE_ENV}={shlex.quote(redact(demo.database_url))} "
    database = shlex.quote(demo.database_name)
    return f"{command}{_replay_command()} status {job_id} --database {database}"


def _replay_command() -> str:
    """How to run ``replay`` from the current directory in a shell without this environment's
    PATH: the script beside this Python (the .venv's), else the one on PATH, else ``python -m``."""
    beside = Path(sys.executable).parent / "replay"
    found = str(beside) if os.access(beside, os.X_OK) else shutil.which("replay")
    if found is None:
        return f"{shlex.quote(sys.executable)} -m scheduler.cli"
    path = Path(found).absolute()
    if path.is_relative_to(Path.cwd()):
        return shlex.quote(str(path.relative_to(Path.cwd())))
    return shlex.quote(str(path))
