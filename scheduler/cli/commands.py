"""How a ``replay`` verb is declared: its parser, the function that runs it, and what it needs
before it runs. The verbs' modules (``jobs``, ``ops``, ``demo``, and plugins such as the
benchmarks, see ``scheduler.cli.PLUGIN_GROUP``) all declare theirs through ``add``."""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable
from typing import Any, NoReturn

from shared.errors import InvalidRequest
from shared.settings import Settings
from shared.store import shorten

EXIT_USAGE = 2
#: `--wait --timeout N` gave up waiting; the job itself goes on (not a usage error).
EXIT_TIMEOUT = 3

#: what runs a verb: settings resolved for it, and its arguments; returns the exit code
Run = Callable[[Settings, argparse.Namespace], int]
Subcommands = Any  # argparse's _SubParsersAction, private in typeshed


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line and exit code 2, like every other error."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def add(
    sub: Subcommands, run: Run, help: str, *, servers: bool = True, migrates: bool = False
) -> argparse.ArgumentParser:
    """Declare the verb that ``run`` runs, named after it: ``cmd_retry_parked`` is
    ``retry-parked``. ``servers=False``: it talks to no server, or manages the embedded ones
    itself; ``migrates=True``: it migrates (and reports on) its own database, so ``main`` does
    not migrate an embedded one for it first."""
    name = run.__name__.removeprefix("cmd_").replace("_", "-")
    parser: argparse.ArgumentParser = sub.add_parser(name, help=help)
    parser.set_defaults(run=run, needs_servers=servers, migrates_itself=migrates)
    return parser


def scratch_arguments(s: argparse.ArgumentParser, kind: str) -> None:
    """--database and --force of a verb that drops and remakes its database (scheduler.scratch)."""
    s.add_argument(
        "--database",
        default=None,
        help=f"{kind} database, dropped and made afresh (default: <db>_{kind}); only one whose"
        f" name ends in _{kind} and that replay created, unless --force",
    )
    s.add_argument("--force", action="store_true", help="drop --database whatever it is")


def check_count(name: str, value: int, high: int) -> None:
    """Refuse ``value`` unless it is from 1 to ``high``."""
    if not 1 <= value <= high:
        raise InvalidRequest(f"{name} must be from 1 to {high:,}, got {value}")


#: a database name that ``--database`` takes (it goes into the URL's path as it is)
DATABASE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_$.-]{0,62}")


def database_argument(s: argparse.ArgumentParser) -> None:
    """--database of a verb that reads jobs: another database on the same server (the demo's,
    the benchmark's), read as it is; see ``on_database``."""
    s.add_argument(
        "--database",
        default=None,
        help="read this database on the same PostgreSQL instead (e.g. replay_demo after"
        " `replay demo`)",
    )


def on_database(settings: Settings, args: argparse.Namespace) -> Settings:
    """``settings`` pointed at ``--database``, if given."""
    if args.database is None:
        return settings
    if not DATABASE_NAME.fullmatch(args.database):
        raise InvalidRequest(
            "--database must be a database name (letters, digits, _ $ . -; at most 63), got"
            f" {shorten(args.database)}"
        )
    return settings.with_database(args.database)
