"""The one module that talks to the PostgreSQL driver directly.

It opens connections and pools, and turns driver errors into this project's errors, so that the
rest of the code never imports psycopg's internals.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from typing import Any

import orjson
import psycopg
from psycopg import conninfo
from psycopg import errors as pg_errors
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb as _Jsonb
from psycopg.types.json import set_json_loads
from psycopg_pool import ConnectionPool, PoolTimeout

from shared.errors import ConfigurationError, DatabaseUnavailable
from shared.settings import Settings, redact, redact_secrets_of, replace_database

Connection = psycopg.Connection[dict[str, Any]]
# What other modules need of the driver, re-exported so that this module stays the only one
# that imports it: JSON parameters, composed SQL (identifiers), isolation levels.
Jsonb = _Jsonb
sql = psycopg.sql
IsolationLevel = psycopg.IsolationLevel

# SQLSTATEs that mean "try again later": the connection failed (class 08), the server shut down
# or is starting (57P01-57P03), or this transaction lost a conflict (40001, 40P01). Everything
# else - a statement timeout, a too-large row, a full disk - is a property of the work itself and
# would fail again: retrying it forever would keep a poison event from its on_error policy.
_TRANSIENT_SQLSTATES = frozenset({"57P01", "57P02", "57P03", "40001", "40P01"})


def is_transient(exc: BaseException) -> bool:
    """True for errors a retry can cure: a lost or refused connection, or a lost conflict."""
    if isinstance(exc, PoolTimeout):
        return True
    if not isinstance(exc, psycopg.Error):
        return False
    state = exc.sqlstate
    if state is None:  # raised by the client: the connection broke or never opened
        return isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError)
    return state.startswith("08") or state in _TRANSIENT_SQLSTATES


UniqueViolation = pg_errors.UniqueViolation


def _configure(conn: psycopg.Connection[Any]) -> None:
    # orjson parses a jsonb payload about four times as fast as the json module, and payloads
    # are most of what a replay reads.
    set_json_loads(_loads, conn)


def _loads(data: bytes | str) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        # A number beyond a double (1e400), which jsonb stores as a 401-digit integer and
        # orjson refuses: the json module reads it, and the handler refuses that one event (its
        # on_error policy) instead of the whole batch failing to load.
        return json.loads(data, parse_int=_parse_int)


def _parse_int(text: str) -> int | float:
    # Past 4,300 digits int() refuses a string (sys.int_info): such a number is read as the
    # float it overflows to (inf), which a handler can refuse like any impossible value.
    return int(text) if len(text) < 4300 else float(text)


def connect(settings: Settings, *, autocommit: bool = True) -> Connection:
    """A new connection to the configured database, rows as dicts.

    Autocommit by default: a transaction is then exactly a ``with conn.transaction():`` block.
    (Without autocommit, the first statement silently opens a transaction that lasts until
    commit, and every ``transaction()`` block inside it is only a savepoint: a slice's batches
    would all commit at its end, or all vanish with its worker.)
    """
    with _connect_errors(settings.database_url):
        conn = psycopg.connect(
            settings.database_url,
            autocommit=autocommit,
            row_factory=dict_row,
            connect_timeout=10,
            application_name="event-replay",
        )
    _configure(conn)
    return conn


@contextlib.contextmanager
def _connect_errors(url: str, doing: str = "connect to") -> Iterator[None]:
    """Turn every driver error of opening (and using) a connection to ``url`` into one of ours,
    on one line, the password masked. psycopg's conninfo parser raises ProgrammingError with
    the whole string quoted, password included (issue 11); a refused connection is an
    OperationalError, the others are a property of the URL or of the role it names. Raised
    ``from None``: the driver's exception, chained, would print the password in any traceback."""
    try:
        yield
    except psycopg.OperationalError as exc:
        raise DatabaseUnavailable(
            f"cannot {doing} PostgreSQL at {redact(url)}: {_hide(url, exc)}"
        ) from None
    except (psycopg.Error, ValueError) as exc:
        raise ConfigurationError(
            f"cannot {doing} PostgreSQL at {redact(url)}: {_hide(url, exc)}"
        ) from None


def _hide(url: str, exc: BaseException) -> str:
    return redact_secrets_of(url, first_line(exc))


def check_url(url: str) -> None:
    """Raise ``ConfigurationError`` if psycopg cannot parse ``url`` (before a pool's background
    threads try it, and log the driver's message)."""
    with _connect_errors(url, "use"):
        conninfo.conninfo_to_dict(url)


def make_pool(settings: Settings, *, max_size: int = 4) -> ConnectionPool[Connection]:
    """A small pool for one process (a worker process or a scheduler)."""
    check_url(settings.database_url)
    return ConnectionPool(
        settings.database_url,
        min_size=1,
        max_size=max_size,
        timeout=10,  # seconds to wait for a connection before PoolTimeout (a transient error)
        reconnect_timeout=60,
        # autocommit: see connect()
        kwargs={"row_factory": dict_row, "application_name": "event-replay", "autocommit": True},
        open=True,
        check=ConnectionPool.check_connection,
        configure=_configure,
        connection_class=psycopg.Connection,
    )


@contextlib.contextmanager
def translate_errors() -> Iterator[None]:
    """Re-raise a transient error (``is_transient``) as ``DatabaseUnavailable``, which the tasks
    retry with backoff. Enter it before taking a connection from a pool, so that a pool timeout
    is translated too."""
    try:
        yield
    except Exception as exc:
        if is_transient(exc):
            raise DatabaseUnavailable(f"PostgreSQL unavailable: {first_line(exc)}") from exc
        raise


def create_database_if_missing(settings: Settings) -> bool:
    """Create the configured database if it does not exist. Returns True if it was created."""
    admin = replace_database(settings.database_url, "postgres")
    name = settings.database_name
    with (
        _connect_errors(admin, f"create database {name!r} on"),
        psycopg.connect(admin, autocommit=True, connect_timeout=10) as conn,
    ):
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if exists:
            return False
        try:
            conn.execute(psycopg.sql.SQL("CREATE DATABASE {}").format(psycopg.sql.Identifier(name)))
        except (pg_errors.DuplicateDatabase, pg_errors.UniqueViolation):
            # Created concurrently by another migrate: PostgreSQL reports the loser of a
            # simultaneous CREATE DATABASE as a unique violation on pg_database, not 42P04.
            return False
        return True


def drop_database(settings: Settings, name: str) -> None:
    """Drop database ``name`` on the configured server, disconnecting its sessions."""
    admin = replace_database(settings.database_url, "postgres")
    with (
        _connect_errors(admin, f"drop database {name!r} on"),
        psycopg.connect(admin, autocommit=True, connect_timeout=10) as conn,
    ):
        conn.execute(
            psycopg.sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                psycopg.sql.Identifier(name)
            )
        )


def database_comment(settings: Settings, name: str) -> str | None:
    """The comment on database ``name`` ('' if it has none), or None if it does not exist."""
    admin = replace_database(settings.database_url, "postgres")
    with (
        _connect_errors(admin, "read the databases of"),
        psycopg.connect(admin, autocommit=True, connect_timeout=10) as conn,
    ):
        row = conn.execute(
            "SELECT coalesce(shobj_description(oid, 'pg_database'), '') FROM pg_database"
            " WHERE datname = %s",
            (name,),
        ).fetchone()
    return None if row is None else str(row[0])


def comment_on_database(settings: Settings, name: str, text: str) -> None:
    """Set the comment on database ``name`` (COMMENT takes no parameters: quoted here)."""
    admin = replace_database(settings.database_url, "postgres")
    with (
        _connect_errors(admin, f"comment on database {name!r} on"),
        psycopg.connect(admin, autocommit=True, connect_timeout=10) as conn,
    ):
        conn.execute(
            psycopg.sql.SQL("COMMENT ON DATABASE {} IS {}").format(
                psycopg.sql.Identifier(name), psycopg.sql.Literal(text)
            )
        )


def first_line(exc: BaseException) -> str:
    """The first line of ``exc``'s message, passwords masked (``settings.redact``): the form in
    which a driver's message goes into an error, a log line or a job's error column."""
    text = str(exc).strip()
    return redact(text.splitlines()[0]) if text else type(exc).__name__
