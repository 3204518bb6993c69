"""The verbs that submit, watch and steer replay jobs: ``submit``, ``status``, ``jobs``,
``cancel``, ``resume``, ``throttle``, ``reconcile``, ``parked``, ``retry-parked``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from scheduler.cli import formats
from scheduler.cli.commands import EXIT_TIMEOUT, Subcommands, add, database_argument, on_database
from scheduler.cli.display import console, follow, print_summary
from scheduler.cli.formats import Column
from scheduler.coordinator import Coordinator
from shared import context, db, parked, slices, sources
from shared.errors import InvalidRequest
from shared.jobs import OnError, ReplayType, Status
from shared.requests import (
    REPLAY_TYPES,
    SLICE_BY,
    parse_job_id,
    parse_limit,
    parse_rate,
    parse_timeout,
)
from shared.settings import Settings
from shared.slicing import SliceBy
from shared.store import shorten


def add_commands(sub: Subcommands) -> None:
    s = add(sub, cmd_submit, "submit a replay job")
    s.add_argument("consumer", help="handler name, e.g. order_summary")
    s.add_argument(
        "--type", dest="replay_type", default=ReplayType.FULL, help=" | ".join(REPLAY_TYPES)
    )
    s.add_argument("--aggregate-id")
    s.add_argument("--from", dest="from_time", help="ISO-8601 with a time zone (inclusive)")
    s.add_argument("--to", dest="to_time", help="ISO-8601 with a time zone (exclusive)")
    s.add_argument("--event-type", dest="event_types", action="append", help="repeatable")
    s.add_argument(
        "--source",
        default=sources.DEFAULT,
        help=f"the registered source to read: {sources.DEFAULT} (the event table) | kafka | ...",
    )
    s.add_argument(
        "--kafka-topic",
        dest="topic",
        help="with --source kafka: the topic to replay (all of it retained, or --from/--to)",
    )
    s.add_argument(
        "--kafka-group",
        dest="group",
        help="the consumer group the replay's offsets are committed to (default replay-<job id>)",
    )
    s.add_argument(
        "--kafka-decoder",
        dest="decoder",
        help="a decoder of REPLAY_HANDLER_MODULES (@decoder) for messages that are not JSON events",
    )
    s.add_argument("--slices", type=int)
    s.add_argument("--slice-by", default=SliceBy.AGGREGATE.value, help=" | ".join(SLICE_BY))
    s.add_argument("--reset", action="store_true", help="rebuild: clear state and markers first")
    s.add_argument(
        "--shadow",
        action="store_true",
        help="with --reset: rebuild into shadow copies of the handler's tables, live ones untouched"
        " (then replay diff / cutover / rollback / discard)",
    )
    s.add_argument(
        "--on-error",
        default=OnError.FAIL.value,
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

    s = add(sub, cmd_status, "show a job and its slices")
    s.add_argument("job_id")
    s.add_argument("--json", action="store_true", help="the job and its slices as JSON")
    database_argument(s)

    s = add(sub, cmd_cancel, "cancel a job (slices stop at their next batch)")
    s.add_argument("job_id")

    s = add(sub, cmd_resume, "re-dispatch a failed/cancelled job from its checkpoints")
    s.add_argument("job_id")
    s.add_argument("--wait", action="store_true")

    s = add(sub, cmd_throttle, "change a running job's speed limit")
    s.add_argument("job_id")
    s.add_argument("rate", help="events per second for the whole job, or 'off'")

    s = add(sub, cmd_reconcile, "one reconciler pass now (normally run by beat)")
    s.add_argument("--json", action="store_true", help="what the pass did, as JSON")

    s = add(sub, cmd_parked, "list the events a job parked (on_error=park)")
    s.add_argument("job_id")
    s.add_argument("--json", action="store_true", help="the parked events as JSON")
    database_argument(s)

    s = add(sub, cmd_retry_parked, "run a job's parked events again (after a fix)")
    s.add_argument("job_id")

    s = add(sub, cmd_jobs, "list recent jobs")
    s.add_argument("--limit", type=int, default=20)
    s.add_argument("--json", action="store_true", help="the jobs as JSON")
    database_argument(s)


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
        shadow=args.shadow,
        on_error=args.on_error,
        max_events_per_second=args.max_rate,
        source=args.source,
        topic=args.topic,
        group=args.group,
        decoder=args.decoder,
    )
    if not args.wait:
        console.print(job_id)
        return 0
    job = follow(coordinator, job_id, timeout=timeout)
    print_summary(job)
    return 0 if job["status"] == Status.COMPLETED else 1


#: ``replay status``'s table of slices; a slice's error is printed under it, on a line of its own
SLICE_COLUMNS = (
    Column("slice", right=True),
    Column("status"),
    Column("range"),
    Column("events", drop=1, right=True),
    Column("attempts", drop=2, right=True),
)


def cmd_status(settings: Settings, args: argparse.Namespace) -> int:
    job = Coordinator(on_database(settings, args)).get(args.job_id)
    if args.json:
        print(formats.to_json(job))
        return 0
    print_summary(job)
    if job["slices"]:
        print_table(SLICE_COLUMNS, [_slice_cells(s) for s in job["slices"]])
    for s in job["slices"]:
        if s["last_error"]:
            console.print(
                f"slice {s['slice_no']}: {s['last_error'].splitlines()[0]}", highlight=False
            )
    return 0


def _slice_cells(s: dict[str, Any]) -> list[str]:
    if s["first_aggregate"] is not None:
        bounds = f"{s['first_aggregate']} .. {s['last_aggregate']}"
    else:
        bounds = f"{formats.timestamp(s['from_time'])} .. {formats.timestamp(s['to_time'])}"
    return [
        str(s["slice_no"]), s["status"], bounds,
        formats.fraction(s["processed_count"], s["total_events"]), formats.count(s["attempts"]),
    ]  # fmt: skip


def print_table(columns: Sequence[Column], rows: Sequence[Sequence[str]]) -> None:
    """A table fitted to the terminal (``formats.table``); what it left out is said on stderr."""
    width = formats.terminal_width()
    laid = formats.table(columns, rows, width)
    for line in laid.lines:
        console.print(line, highlight=False)
    if laid.dropped:
        print(
            f"({', '.join(laid.dropped)} left out to fit {width} columns; --json shows every"
            " field)",
            file=sys.stderr,
        )


def cmd_cancel(settings: Settings, args: argparse.Namespace) -> int:
    print_summary(Coordinator(settings).cancel(args.job_id))
    return 0


def cmd_resume(settings: Settings, args: argparse.Namespace) -> int:
    coordinator = Coordinator(settings)
    job = coordinator.resume(args.job_id)
    if args.wait:
        job = follow(coordinator, job["job_id"])
    print_summary(job)
    return 0 if not args.wait or job["status"] == Status.COMPLETED else 1


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
    limit = "no limit" if rate is None else formats.rate(rate)
    console.print(f"job {job['job_id']} ({job['status']}): {limit}, within a second or two")
    return 0


def cmd_reconcile(settings: Settings, args: argparse.Namespace) -> int:
    report = Coordinator(settings).reconcile()
    if args.json:
        print(formats.to_json(report.as_dict()))
        return 0
    if report.skipped:
        console.print("another reconciler pass is running; nothing done")
        return 0
    console.print(
        f"finalized {formats.count(len(report.finalized))} job(s), re-dispatched"
        f" {formats.count(len(report.redispatched))} slice(s),"
        f" {formats.count(report.waiting)} pending slice(s) still queued"
    )
    for job_id, slice_no in report.redispatched:
        console.print(f"  re-dispatched slice {slice_no} of job {job_id}")
    return 0


def cmd_parked(settings: Settings, args: argparse.Namespace) -> int:
    settings = on_database(settings, args)
    job_id = parse_job_id(args.job_id)
    job = Coordinator(settings).get(job_id)  # a clear error for an unknown job
    source = sources.get(job["source"])
    with db.connect(settings) as conn:
        rows = slices.parked_events(conn, job_id)
    for r in rows:
        r["position"] = source.describe_parked(r) or None  # a Kafka message: partition, offset
    if args.json:
        print(formats.to_json(rows))
        return 0
    # One line per event, whole ids: meant to be grepped and pasted, whatever the terminal width.
    for r in rows:
        state = "resolved" if r["resolved_at"] else "parked"
        where = f"  {r['position']}" if r["position"] else ""
        console.print(
            f"{r['event_id']}  {r['aggregate_id']} #{r['sequence_num']}  {r['event_type'] or '?'}"
            f"{where}  {state}, {formats.count(r['attempts'])} attempt(s)  {r['error']}",
            highlight=False,
        )  # fmt: skip
    unresolved = sum(not r["resolved_at"] for r in rows)
    console.print(
        f"{formats.count(len(rows))} parked event(s), {formats.count(unresolved)} unresolved"
    )
    return 0


def cmd_retry_parked(settings: Settings, args: argparse.Namespace) -> int:
    job_id = parse_job_id(args.job_id)
    Coordinator(settings).get(job_id)
    ctx = context.Context.create(settings)
    try:
        result = parked.retry_parked(ctx, job_id)
    finally:
        ctx.close()
    console.print(
        f"{formats.count(result.resolved)} parked event(s) applied,"
        f" {formats.count(result.still_failing)} still failing"
    )
    return 0 if result.still_failing == 0 else 1


#: ``replay jobs``'s table: the id and the status always whole; at 80 columns the type and
#: the creation time are left out first (``--json`` has them)
JOB_COLUMNS = (
    Column("job"),
    Column("consumer", drop=2),
    Column("type", drop=5),
    Column("status"),
    Column("events", drop=3, right=True),
    Column("created", drop=4),
)


def cmd_jobs(settings: Settings, args: argparse.Namespace) -> int:
    limit = parse_limit(args.limit)
    listed = Coordinator(on_database(settings, args)).list(limit)
    if args.json:
        print(formats.to_json(listed))
        return 0
    if not listed:
        console.print("no replay jobs yet")
        return 0
    print_table(JOB_COLUMNS, [_job_cells(job) for job in listed])
    return 0


def _job_cells(job: dict[str, Any]) -> list[str]:
    return [
        job["job_id"], job["consumer"], job["replay_type"], job["status"],
        formats.fraction(job["processed_count"], job["total_events"]),
        formats.timestamp(job["created_at"]),
    ]  # fmt: skip
