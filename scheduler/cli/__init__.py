"""The ``replay`` command. Errors print one line on stderr and exit with code 2; ``--wait
--timeout`` that runs out exits with code 3 (the job keeps running); a job that ends failed or
cancelled under ``--wait`` exits with code 1.

The verbs live in modules by job (``jobs``, ``ops``, ``demo``); more come from the entry points
of the group ``PLUGIN_GROUP`` (the benchmarks of ``bench`` declare theirs there in
pyproject.toml), so that this package imports nothing above it.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence
from importlib.metadata import entry_points

from local import embedded, servers
from scheduler.cli import archive, demo, jobs, ops, shadows
from scheduler.cli.commands import EXIT_TIMEOUT, EXIT_USAGE, Parser, Run
from scheduler.cli.display import message
from shared import schema
from shared.errors import JobTimeout, ReplayError
from shared.settings import Settings

__all__ = ["EXIT_TIMEOUT", "EXIT_USAGE", "build_parser", "main"]

#: an error this program did not foresee (a bug): one line; REPLAY_DEBUG=1 re-raises it
EXIT_BUG = 70
EXIT_INTERRUPTED = 130
#: entry points of this group are functions ``add_commands(sub)`` that declare more verbs
PLUGIN_GROUP = "event_replay.commands"


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="replay", description="Replay PostgreSQL events through idempotent handlers")
    sub = p.add_subparsers(dest="command", required=True, parser_class=Parser)
    ops.add_commands(sub)
    jobs.add_commands(sub)
    shadows.add_commands(sub)
    archive.add_commands(sub)
    for plugin in sorted(entry_points(group=PLUGIN_GROUP), key=lambda e: e.name):
        plugin.load()(sub)
    demo.add_commands(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _exit_on_termination()
    _quiet_the_driver()
    try:
        return _run(args.run, args)
    except JobTimeout as exc:
        print(f"replay: {message(exc)}", file=sys.stderr)
        return EXIT_TIMEOUT
    except ReplayError as exc:
        print(f"replay: error: {message(exc)}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("replay: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:
        # A bug, or a driver error nobody foresaw: still one line, and never a secret (a
        # traceback prints the locals' URLs). REPLAY_DEBUG=1 shows the traceback.
        if os.environ.get("REPLAY_DEBUG"):
            raise
        print(
            f"replay: internal error: {type(exc).__name__}: {message(exc)}"
            " (a bug; REPLAY_DEBUG=1 shows the traceback)",
            file=sys.stderr,
        )
        return EXIT_BUG


def _run(run: Run, args: argparse.Namespace) -> int:
    """Run the verb with the servers it needs: explicit environment, else the local servers,
    else the embedded ones (local.servers); an embedded server started for this command is
    stopped when it ends."""
    if not args.needs_servers:
        return run(Settings.from_env(), args)
    with servers.resolved() as found:
        if found.line:
            print(found.line, file=sys.stderr)
        settings = Settings.from_env(found.env)
        if embedded.POSTGRES in found.embedded and not args.migrates_itself:
            # Our own database: keep it ready, so that a first command on a bare machine
            # (seed, submit, jobs) needs no `replay migrate`. Cheap when current, and
            # serialized by an advisory lock when two commands start at once.
            schema.migrate_all(settings)
        code = run(settings, args)
    if found.stopped and found.stack is not None:
        print(
            f"stopped the embedded {embedded.names(found.stopped)} (no other command uses"
            f" them); the data stays in {found.stack.home}: `replay up` starts them again"
            " and keeps them running",
            file=sys.stderr,
        )
    return code


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
