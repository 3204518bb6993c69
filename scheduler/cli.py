"""The ``replay`` command. Errors print one line on stderr and exit with code 2; ``--wait
--timeout`` that runs out exits with code 3 (the job keeps running); a job that ends failed or
cancelled under ``--wait`` exits with code 1."""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import signal
import sys
import threading
import time
from collections.abc import Sequence
from datetime import datetime
from typing import Any, NoReturn

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table
from rich.text import Text

from scheduler.coordinator import Coordinator
from scheduler.requests import REPLAY_TYPES, SLICE_BY, parse_limit, parse_rate, parse_timeout
from shared import db, embedded, schema, seed, servers
from shared.errors import InvalidRequest, InvalidSliceCount, JobTimeout, NoServers, ReplayError
from shared.handlers import load_registry
from shared.settings import Settings
from shared.slicing import MAX_SLICES
from shared.store import shorten

EXIT_USAGE = 2
#: `--wait --timeout N` gave up waiting; the job itself goes on (not a usage error).
EXIT_TIMEOUT = 3
#: an error this program did not foresee (a bug): one line; REPLAY_DEBUG=1 re-raises it
EXIT_BUG = 70
# An error message is one line and at most this long: a value the user gave is quoted shortened
# where the message is made, and this is the last guard for one that is not (issue 11).
MAX_MESSAGE_CHARACTERS = 1000
# Bounds of the benchmarks' arguments: beyond them a run would not end in a working day.
MAX_BENCH_RUNS = 100
MAX_AGGREGATE_BENCH_RUNS = 100_000
MAX_PROBE_SECONDS = 3600
# soft_wrap: a message is one line however narrow the terminal (scripts grep them).
# markup and emoji off: what the console prints is data (aggregate ids, error texts, handler
# names) and must come out literally; "[/x]" in an id raised rich's MarkupError (issue 11).
console = Console(soft_wrap=True, markup=False, emoji=False)


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line and exit code 2, like every other error."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="replay", description="Replay PostgreSQL events through idempotent handlers")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    sub.add_parser("migrate", help="create the database if missing and apply migrations")

    sub.add_parser(
        "up",
        help="start the embedded PostgreSQL and Redis (event-replay[embedded]) and keep them"
        " running; prints the variables to export",
    )
    sub.add_parser("down", help="stop the embedded servers started by `replay up` (data is kept)")

    s = sub.add_parser("seed", help="bulk-load synthetic Order aggregates")
    s.add_argument("--aggregates", type=int, required=True)
    s.add_argument("--events-per-aggregate", type=int, required=True)
    s.add_argument("--seed", type=int, default=1, help="same seed, same events (default 1)")
    s.add_argument("--months", type=int, default=seed.DEFAULT_MONTHS)

    s = sub.add_parser("submit", help="submit a replay job")
    s.add_argument("consumer", help="handler name, e.g. order_summary")
    s.add_argument("--type", dest="replay_type", default="full", help=" | ".join(REPLAY_TYPES))
    s.add_argument("--aggregate-id")
    s.add_argument("--from", dest="from_time", help="ISO-8601 with a time zone (inclusive)")
    s.add_argument("--to", dest="to_time", help="ISO-8601 with a time zone (exclusive)")
    s.add_argument("--event-type", dest="event_types", action="append", help="repeatable")
    s.add_argument("--slices", type=int)
    s.add_argument("--slice-by", default="aggregate", help=" | ".join(SLICE_BY))
    s.add_argument("--reset", action="store_true", help="rebuild: clear state and markers first")
    s.add_argument(
        "--on-error",
        default="fail",
        help="a handler error on one event: fail (stop there; resume after a fix) | skip | park",
    )
    s.add_argument(
        "--max-rate",
        type=float,
        help="events/s for the whole job (all workers), at least 1; 0: no limit",
    )
    s.add_argument(
        "--wait",
        action="store_true",
        help="show progress until the job ends; exit code 1 if it ends failed or cancelled",
    )
    s.add_argument(
        "--timeout",
        type=float,
        help=f"with --wait: stop waiting after this many seconds (0 or more) and exit with code"
        f" {EXIT_TIMEOUT}; the job keeps running",
    )

    s = sub.add_parser("status", help="show a job and its slices")
    s.add_argument("job_id")
    s.add_argument("--json", action="store_true")

    s = sub.add_parser("cancel", help="cancel a job (slices stop at their next batch)")
    s.add_argument("job_id")

    s = sub.add_parser("resume", help="re-dispatch a failed/cancelled job from its checkpoints")
    s.add_argument("job_id")
    s.add_argument("--wait", action="store_true")

    s = sub.add_parser("throttle", help="change a running job's speed limit")
    s.add_argument("job_id")
    s.add_argument("rate", help="events per second for the whole job, or 'off'")

    s = sub.add_parser("reconcile", help="one reconciler pass now (normally run by beat)")

    s = sub.add_parser("parked", help="list the events a job parked (on_error=park)")
    s.add_argument("job_id")

    s = sub.add_parser("retry-parked", help="run a job's parked events again (after a fix)")
    s.add_argument("job_id")

    s = sub.add_parser("live", help="follow new events and hand them to the live handlers")
    s.add_argument("--handler", dest="handlers", action="append", help="repeatable; default: all")

    s = sub.add_parser("aggregate", help="an aggregate's state from its events (and snapshots)")
    s.add_argument("aggregate_id")
    s.add_argument("--at", type=int, help="as of this sequence_num (time travel)")
    s.add_argument("--no-snapshot", action="store_true", help="fold every event from the first")

    s = sub.add_parser("snapshot", help="snapshot every aggregate of a type (a replay job)")
    s.add_argument("--type", dest="aggregate_type", required=True)
    s.add_argument("--slices", type=int)
    s.add_argument("--wait", action="store_true")

    s = sub.add_parser("jobs", help="list recent jobs")
    s.add_argument("--limit", type=int, default=20)

    s = sub.add_parser("handlers", help="list registered handlers")

    s = sub.add_parser("bench", help="measure against the seed algorithm and the hardware")
    s.add_argument("--aggregates", type=int, default=10_000)
    s.add_argument("--events-per-aggregate", type=int, default=100)
    s.add_argument("--baseline-sample", type=int, default=20_000)
    s.add_argument("--runs", type=int, default=3, help="runs per measure (medians are quoted)")
    _scratch_arguments(s, "bench")
    s.add_argument("--output", default="bench/results/latest.json")
    s.add_argument("--keep-data", action="store_true", help="reuse the bench database if seeded")
    s.add_argument(
        "--measures",
        default="rebuild1,rebuild2,rebuild2py,catchup",
        help="project runs (baseline and ceiling always run): rebuild1,rebuild2,rebuild2py,catchup",
    )

    s = sub.add_parser("bench-live", help="live latency: idle, during a replay, throttled")
    s.add_argument("--aggregates", type=int, default=10_000)
    s.add_argument("--events-per-aggregate", type=int, default=100)
    s.add_argument("--rate", type=float, default=20_000, help="the throttled replay's limit")
    s.add_argument("--seconds", type=float, default=10, help="probing time per phase")
    s.add_argument("--output", default="bench/results/live_latency.json")
    s.add_argument("--force", action="store_true", help="drop <db>_livebench whatever it is")

    s = sub.add_parser("bench-aggregate", help="aggregate load time, with and without snapshots")
    s.add_argument("--runs", type=int, default=50)
    s.add_argument("--output", default="bench/results/aggregate_load.json")
    s.add_argument("--force", action="store_true", help="drop <db>_aggbench whatever it is")

    s = sub.add_parser("demo", help="run the whole story end to end on this machine")
    s.add_argument("--aggregates", type=int, default=2000)
    s.add_argument("--events-per-aggregate", type=int, default=100)
    s.add_argument("--workers", type=int, default=2)
    s.add_argument("--slices", type=int, default=8)
    _scratch_arguments(s, "demo")
    return p


def _scratch_arguments(s: argparse.ArgumentParser, kind: str) -> None:
    """--database and --force of a verb that drops and remakes its database (scheduler.scratch)."""
    s.add_argument(
        "--database",
        default=None,
        help=f"{kind} database, dropped and made afresh (default: <db>_{kind}); only one whose"
        f" name ends in _{kind} and that replay created, unless --force",
    )
    s.add_argument("--force", action="store_true", help="drop --database whatever it is")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _exit_on_termination()
    _quiet_the_driver()
    try:
        if args.command in NO_SERVERS:
            return COMMANDS[args.command](Settings.from_env(), args)
        # Explicit environment, else the local servers, else the embedded ones (shared.servers);
        # an embedded server started for this command is stopped when it ends.
        with servers.resolved() as found:
            if found.line:
                print(found.line, file=sys.stderr)
            settings = Settings.from_env(found.env)
            if embedded.POSTGRES in found.embedded and args.command not in MIGRATE_THEMSELVES:
                # Our own database: keep it ready, so that a first command on a bare machine
                # (seed, submit, jobs) needs no `replay migrate`. Cheap when current, and
                # serialized by an advisory lock when two commands start at once.
                schema.migrate_all(settings)
            code = COMMANDS[args.command](settings, args)
        if found.stopped and found.stack is not None:
            print(
                f"stopped the embedded {embedded.names(found.stopped)} (no other command uses"
                f" them); the data stays in {found.stack.home}: `replay up` starts them again"
                " and keeps them running",
                file=sys.stderr,
            )
        return code
    except JobTimeout as exc:
        print(f"replay: {_message(exc)}", file=sys.stderr)
        return EXIT_TIMEOUT
    except ReplayError as exc:
        print(f"replay: error: {_message(exc)}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("replay: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        # A bug, or a driver error nobody foresaw: still one line, and never a secret (a
        # traceback prints the locals' URLs). REPLAY_DEBUG=1 shows the traceback.
        if os.environ.get("REPLAY_DEBUG"):
            raise
        print(
            f"replay: internal error: {type(exc).__name__}: {_message(exc)}"
            " (a bug; REPLAY_DEBUG=1 shows the traceback)",
            file=sys.stderr,
        )
        return EXIT_BUG


def _message(exc: BaseException) -> str:
    """The error's first line, passwords masked, cut to MAX_MESSAGE_CHARACTERS."""
    line = db.first_line(exc)
    if len(line) > MAX_MESSAGE_CHARACTERS:
        line = f"{line[:MAX_MESSAGE_CHARACTERS]}… ({len(line):,} characters)"
    return line


def _quiet_the_driver() -> None:
    """psycopg's pool logs each failed reconnect with libpq's message, over several lines; a
    command reports an outage itself, on one line (its error, or `replay live`'s warning).
    REPLAY_DEBUG=1 keeps the driver's logs."""
    if not os.environ.get("REPLAY_DEBUG"):
        logging.getLogger("psycopg").setLevel(logging.CRITICAL)


def _exit_on_termination() -> None:
    """SIGTERM and SIGHUP (``timeout``, ``docker stop``, a closed terminal) end the command like
    Ctrl-C does, through every ``finally``: workers the demo started are stopped, and embedded
    servers started for this command are released, not left running."""
    if threading.current_thread() is not threading.main_thread():
        return

    def _exit(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _exit)


def cmd_migrate(settings: Settings, args: argparse.Namespace) -> int:
    applied, handlers = schema.migrate_all(settings)
    console.print(
        f"migrated {settings.database_name}: "
        + (", ".join(applied) if applied else "already up to date")
        + f"; handlers ready: {', '.join(handlers)}"
    )
    return 0


def cmd_up(settings: Settings, args: argparse.Namespace) -> int:
    found = embedded.binaries()
    if found is None:
        raise NoServers(f"the embedded servers are not installed: {servers.WAYS_OUT}")
    stack = embedded.EmbeddedStack(embedded.home(), found).acquire(pin=True)
    env = stack.env()
    for server in embedded.SERVERS:
        state = "started" if server in stack.started else "already running, reused"
        if server in stack.moved:
            state += " on a new port (the last one is taken): export the new URLs everywhere"
        print(f"{embedded.names([server])}: {stack.describe(server)}, {state}", file=sys.stderr)
    applied, _ = schema.migrate_all(Settings.from_env({**os.environ, **env}))
    if applied:
        print(f"applied migrations {', '.join(applied)}", file=sys.stderr)
    print(
        'export these where workers, Flower and replay commands run (eval "$(replay up)" does'
        " it); `replay down` stops the servers, the data stays in"
        f" {embedded.home()}",
        file=sys.stderr,
    )
    for name, value in env.items():
        print(f"export {name}={shlex.quote(value)}")
    return 0


def cmd_down(settings: Settings, args: argparse.Namespace) -> int:
    found = embedded.binaries()
    where = embedded.home()
    if found is None or not where.exists():
        print(f"nothing to stop in {where}", file=sys.stderr)
        return 0
    stopped = embedded.EmbeddedStack(where, found).down()
    print(
        f"stopped {embedded.names(stopped)} in {where}; the data is kept"
        if stopped
        else f"nothing ran in {where}"
    )
    return 0


def cmd_seed(settings: Settings, args: argparse.Namespace) -> int:
    seed.validate(args.aggregates, args.events_per_aggregate, args.months, args.seed)
    with db.connect(settings) as conn:
        result = seed.seed(
            conn, args.aggregates, args.events_per_aggregate, seed=args.seed, months=args.months
        )
    console.print(
        f"seeded {result.events:,} events in {result.aggregates:,} Order aggregates"
        f" in {result.seconds:.1f} s ({result.events_per_second:,.0f} events/s)"
    )
    return 0


def cmd_submit(settings: Settings, args: argparse.Namespace) -> int:
    # Before the job is submitted: a bad --timeout must not leave a job behind.
    timeout = parse_timeout(args.timeout, "--timeout")
    if timeout is not None and not args.wait:
        raise InvalidRequest("--timeout only applies with --wait")
    coordinator = Coordinator(settings)
    job_id = coordinator.submit(
        args.consumer,
        replay_type=args.replay_type,
        aggregate_id=args.aggregate_id,
        from_time=args.from_time,
        to_time=args.to_time,
        event_types=args.event_types,
        slices=args.slices,
        slice_by=args.slice_by,
        reset=args.reset,
        on_error=args.on_error,
        max_events_per_second=args.max_rate,
    )
    if not args.wait:
        console.print(job_id)
        return 0
    job = follow(coordinator, job_id, timeout=timeout)
    print_summary(job)
    return 0 if job["status"] == "completed" else 1


class RateColumn(ProgressColumn):
    """Events per second, averaged over the job so far."""

    def render(self, task: Task) -> Text:
        elapsed = task.elapsed or 0.0
        rate = task.completed / elapsed if elapsed > 0 else 0.0
        return Text(f"{rate:,.0f} events/s", style="progress.data.speed")


def follow(coordinator: Coordinator, job_id: str, timeout: float | None = None) -> dict[str, Any]:
    """Show a live progress bar (events done / total, events/s) until the job ends; after
    ``timeout`` seconds raise ``JobTimeout`` (the job keeps running)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    job = coordinator.get(job_id)
    console.print(f"job {job_id}: {job['slice_count']} slices, {job['total_events']:,} events")
    with Progress(
        TextColumn("[bold]{task.fields[status]}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("events"),
        RateColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    ) as bar:
        task = bar.add_task("replay", total=max(job["total_events"], 1), status=job["status"])
        while True:
            bar.update(task, completed=job["processed_count"], status=job["status"])
            if job["status"] in ("completed", "failed", "cancelled"):
                if job["total_events"] == 0:
                    bar.update(task, completed=1)
                return job
            if deadline is not None and time.monotonic() > deadline:
                raise JobTimeout(
                    f"gave up waiting: job {job['job_id']} still {job['status']}"
                    f" ({job['processed_count']:,}/{job['total_events']:,} events);"
                    " it keeps running"
                )
            time.sleep(0.25)
            job = coordinator.get(job_id)


def print_summary(job: dict[str, Any]) -> None:
    elapsed = job.get("elapsed_seconds") or 0.0
    rate = job["processed_count"] / elapsed if elapsed else 0.0
    console.print(
        f"job {job['job_id']} {job['status']}: {job['processed_count']:,}/{job['total_events']:,}"
        f" events ({job['applied_count']:,} applied, {job['skipped_count']:,} already processed)"
        f" in {elapsed:.1f} s, {rate:,.0f} events/s"
    )
    if job.get("poison_count"):
        console.print(
            f"{job['poison_count']:,} event(s) skipped or parked by on_error={job['on_error']}"
        )
    if job.get("error"):
        console.print(f"error: {job['error'].splitlines()[0]}")


def cmd_status(settings: Settings, args: argparse.Namespace) -> int:
    job = Coordinator(settings).get(args.job_id)
    if args.json:
        print(json.dumps(job, default=_json_default, indent=2))
        return 0
    print_summary(job)
    table = Table("slice", "status", "range", "processed", "total", "attempts", "error")
    for s in job["slices"]:
        if s["first_aggregate"] is not None:
            bounds = f"{s['first_aggregate']} .. {s['last_aggregate']}"
        else:
            bounds = f"{_fmt_time(s['from_time'])} .. {_fmt_time(s['to_time'])}"
        error = (s["last_error"] or "").splitlines()[0] if s["last_error"] else ""
        table.add_row(
            str(s["slice_no"]), s["status"], bounds, f"{s['processed_count']:,}",
            f"{s['total_events']:,}", str(s["attempts"]), error,
        )  # fmt: skip
    console.print(table)
    return 0


def cmd_cancel(settings: Settings, args: argparse.Namespace) -> int:
    print_summary(Coordinator(settings).cancel(args.job_id))
    return 0


def cmd_resume(settings: Settings, args: argparse.Namespace) -> int:
    coordinator = Coordinator(settings)
    job = coordinator.resume(args.job_id)
    if args.wait:
        job = follow(coordinator, job["job_id"])
    print_summary(job)
    return 0 if not args.wait or job["status"] == "completed" else 1


def cmd_throttle(settings: Settings, args: argparse.Namespace) -> int:
    text = args.rate.strip().lower()
    value: float | None = None
    if text not in ("off", "none"):
        try:
            value = float(text)
        except ValueError:
            raise InvalidRequest(
                f"rate must be a number of events per second or 'off', got {shorten(args.rate)}"
            ) from None
    rate = parse_rate(value)  # 0, 0.0: off; below the minimum (1 event/s): refused
    job = Coordinator(settings).throttle(args.job_id, rate)
    limit = "no limit" if rate is None else f"{rate:,g} events/s"
    console.print(f"job {job['job_id']} ({job['status']}): {limit}, within a second or two")
    return 0


def cmd_reconcile(settings: Settings, args: argparse.Namespace) -> int:
    report = Coordinator(settings).reconcile()
    if report.skipped:
        console.print("another reconciler pass is running; nothing done")
        return 0
    console.print(
        f"finalized {len(report.finalized)} job(s), re-dispatched {len(report.redispatched)}"
        f" slice(s), {report.waiting} pending slice(s) still queued"
    )
    for job_id, slice_no in report.redispatched:
        console.print(f"  re-dispatched slice {slice_no} of job {job_id}")
    return 0


def cmd_parked(settings: Settings, args: argparse.Namespace) -> int:
    from shared import jobs

    Coordinator(settings).get(args.job_id)  # a clear error for an unknown job
    with db.connect(settings) as conn:
        rows = jobs.parked_events(conn, args.job_id)
    # One line per event, whole ids: meant to be grepped and pasted, whatever the terminal width.
    for r in rows:
        state = "resolved" if r["resolved_at"] else "parked"
        console.print(
            f"{r['event_id']}  {r['aggregate_id']} #{r['sequence_num']}  {r['event_type']}"
            f"  {state}, {r['attempts']} attempt(s)  {r['error']}",
            highlight=False,
        )  # fmt: skip
    unresolved = sum(not r["resolved_at"] for r in rows)
    console.print(f"{len(rows)} parked event(s), {unresolved} unresolved")
    return 0


def cmd_retry_parked(settings: Settings, args: argparse.Namespace) -> int:
    from shared import runner

    Coordinator(settings).get(args.job_id)
    ctx = runner.Context.create(settings)
    try:
        result = runner.retry_parked(ctx, args.job_id)
    finally:
        ctx.close()
    console.print(
        f"{result.resolved} parked event(s) applied, {result.still_failing} still failing"
    )
    return 0 if result.still_failing == 0 else 1


def cmd_live(settings: Settings, args: argparse.Namespace) -> int:
    import signal
    import threading

    from shared import live, runner

    ctx = runner.Context.create(settings)
    handlers = live.live_handlers(ctx, args.handlers)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    console.print(f"following new events for {', '.join(h.name for h in handlers)}")

    def outage(exc: ReplayError) -> None:
        # One line per outage, not per attempt: a follower rides it out like the workers do (its
        # position is in the database); Ctrl-C ends it as always.
        print(
            f"replay: warning: {_message(exc)}; retrying every {live.RETRY_SECONDS:g} s",
            file=sys.stderr,
        )

    try:
        live.run(
            ctx, handlers, stop,
            on_step=lambda r: console.print(f"{r.handler}: {r.events} new, {r.applied} applied"),
            on_outage=outage,
            on_recovery=lambda s: console.print(f"PostgreSQL answers again after {s:.0f} s"),
        )  # fmt: skip
    finally:
        ctx.close()
    return 0


def cmd_aggregate(settings: Settings, args: argparse.Namespace) -> int:
    from shared import aggregates

    with db.connect(settings) as conn:
        loaded = aggregates.load_aggregate(
            conn, args.aggregate_id, args.at, use_snapshots=not args.no_snapshot
        )
    print(json.dumps(loaded.state, indent=2, sort_keys=True))
    origin = f"snapshot at #{loaded.snapshot_at}" if loaded.snapshot_at else "the first event"
    print(
        f"{loaded.aggregate_type} {loaded.aggregate_id} as of #{loaded.sequence_num}:"
        f" from {origin}, {loaded.events_read} event(s) read",
        file=sys.stderr,
    )
    return 0


def cmd_snapshot(settings: Settings, args: argparse.Namespace) -> int:
    from shared import aggregates

    aggregates.reducer_for(args.aggregate_type)  # a clear error for an unknown type
    coordinator = Coordinator(settings)
    job_id = coordinator.submit(
        aggregates.snapshot_handler_name(args.aggregate_type), reset=True, slices=args.slices
    )
    if not args.wait:
        console.print(job_id)
        return 0
    job = follow(coordinator, job_id)
    print_summary(job)
    return 0 if job["status"] == "completed" else 1


def cmd_jobs(settings: Settings, args: argparse.Namespace) -> int:
    limit = parse_limit(args.limit)
    table = Table("job", "consumer", "type", "status", "processed", "total", "created")
    for job in Coordinator(settings).list(limit):
        table.add_row(
            job["job_id"], job["consumer"], job["replay_type"], job["status"],
            f"{job['processed_count']:,}", f"{job['total_events']:,}",
            _fmt_time(job["created_at"]),
        )  # fmt: skip
    console.print(table)
    return 0


def cmd_handlers(settings: Settings, args: argparse.Namespace) -> int:
    for handler in load_registry(settings.handler_modules):
        order = "per-aggregate order" if handler.requires_order else "any order"
        console.print(f"{handler.name}  ({type(handler).__module__}, {order})")
    return 0


def cmd_bench(settings: Settings, args: argparse.Namespace) -> int:
    from pathlib import Path

    from scheduler import bench

    seed.validate(args.aggregates, args.events_per_aggregate)
    _check_count("--runs", args.runs, MAX_BENCH_RUNS)
    _check_count("--baseline-sample", args.baseline_sample, seed.MAX_EVENTS)
    config = bench.BenchConfig(
        aggregates=args.aggregates, events_per_aggregate=args.events_per_aggregate,
        baseline_sample=args.baseline_sample, runs=args.runs, database=args.database,
        output=Path(args.output), keep_data=args.keep_data,
        measures=tuple(m.strip() for m in args.measures.split(",") if m.strip()),
        force=args.force,
    )  # fmt: skip
    unknown = set(config.measures) - set(bench.MEASURES)
    if unknown:
        raise InvalidRequest(f"unknown --measures {', '.join(sorted(unknown))}")
    bench.run(settings, config, console)
    return 0


def cmd_bench_live(settings: Settings, args: argparse.Namespace) -> int:
    from pathlib import Path

    from scheduler import live_bench

    seed.validate(args.aggregates, args.events_per_aggregate)
    parse_rate(args.rate)
    if not 0 < args.seconds <= MAX_PROBE_SECONDS:  # False for NaN too
        raise InvalidRequest(
            f"--seconds must be above 0 and at most {MAX_PROBE_SECONDS}, got {args.seconds}"
        )
    live_bench.run(
        settings, args.aggregates, args.events_per_aggregate, args.rate, args.seconds,
        Path(args.output), console, force=args.force,
    )  # fmt: skip
    return 0


def cmd_bench_aggregate(settings: Settings, args: argparse.Namespace) -> int:
    from pathlib import Path

    from scheduler import aggregate_bench

    _check_count("--runs", args.runs, MAX_AGGREGATE_BENCH_RUNS)
    aggregate_bench.run(settings, args.runs, Path(args.output), console, force=args.force)
    return 0


def cmd_demo(settings: Settings, args: argparse.Namespace) -> int:
    from scheduler import demo

    # Before demo.run recreates its database and starts workers: a bad --slices would only
    # be refused by the submit, after all that.
    if not 1 <= args.slices <= MAX_SLICES:
        raise InvalidSliceCount(f"--slices must be from 1 to {MAX_SLICES}, got {args.slices}")
    return demo.run(
        settings,
        aggregates=args.aggregates,
        events_per_aggregate=args.events_per_aggregate,
        workers=args.workers,
        slices=args.slices,
        database=args.database,
        console=console,
        force=args.force,
    )


def _check_count(name: str, value: int, high: int) -> None:
    if not 1 <= value <= high:
        raise InvalidRequest(f"{name} must be from 1 to {high:,}, got {value}")


def _fmt_time(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value else "-"


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


COMMANDS = {
    "migrate": cmd_migrate,
    "up": cmd_up,
    "down": cmd_down,
    "seed": cmd_seed,
    "submit": cmd_submit,
    "status": cmd_status,
    "cancel": cmd_cancel,
    "resume": cmd_resume,
    "throttle": cmd_throttle,
    "reconcile": cmd_reconcile,
    "parked": cmd_parked,
    "retry-parked": cmd_retry_parked,
    "live": cmd_live,
    "aggregate": cmd_aggregate,
    "snapshot": cmd_snapshot,
    "jobs": cmd_jobs,
    "handlers": cmd_handlers,
    "bench": cmd_bench,
    "bench-live": cmd_bench_live,
    "bench-aggregate": cmd_bench_aggregate,
    "demo": cmd_demo,
}

# Commands that talk to no server, or manage the embedded ones themselves.
NO_SERVERS = frozenset({"up", "down", "handlers"})
# Commands that migrate (and report on) their own database.
MIGRATE_THEMSELVES = frozenset({"migrate", "demo", "bench", "bench-live", "bench-aggregate"})

if __name__ == "__main__":
    sys.exit(main())
