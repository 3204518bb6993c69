"""The one module that talks to the PostgreSQL driver directly.

It opens connections and pools whose driver errors come out as this project's errors, once,
where they happen (``TranslatingConnection``, ``TranslatingPool``): a lost connection or a lost
conflict as ``DatabaseUnavailable``, which the worker tasks retry; a unique violation as the
error its constraint means (``UNIQUE_CONSTRAINTS``). Everything else (a statement timeout, a bad
value) stays the driver's error: a property of the work that no retry cures. The rest of the code
never imports psycopg.
"""

from __future__ import annotations

import contextlib
import functools
import json
import select
import time
from collections.abc import Callable, Generator, Iterator
from typing import Any, ParamSpec, TypeVar

import orjson
import psycopg
from psycopg import conninfo
from psycopg import errors as pg_errors
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb as _Jsonb
from psycopg.types.json import set_json_loads
from psycopg_pool import ConnectionPool, PoolTimeout

from shared.errors import (
    ActiveJobExists,
    ConcurrencyConflict,
    ConfigurationError,
    DatabaseUnavailable,
)
from shared.settings import Settings, redact, redact_secrets_of, replace_database

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
    """True for errors a retry can cure: a lost or refused connection, or a lost conflict (as
    the driver raises it, or as ``DatabaseUnavailable`` once translated)."""
    return isinstance(exc, DatabaseUnavailable) or _driver_transient(exc)


def _driver_transient(exc: BaseException) -> bool:
    if isinstance(exc, PoolTimeout):
        return True
    if not isinstance(exc, psycopg.Error):
        return False
    state = exc.sqlstate
    if state is None:  # raised by the client: the connection broke or never opened
        return isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError)
    return state.startswith("08") or state in _TRANSIENT_SQLSTATES


class UniqueViolation(Exception):
    """A unique constraint fired. ``constraint`` names it (None if the server did not say).

    Raised as itself for a constraint that ``UNIQUE_CONSTRAINTS`` does not map: a database
    error, not a ``ReplayError`` (no code path is meant to reach one; the CLI reports it as a
    bug). The mapped ones are raised as their project error, which is also a UniqueViolation,
    so that an ``except db.UniqueViolation`` written before the mapping still catches them.
    """

    def __init__(self, message: str, constraint: str | None = None) -> None:
        super().__init__(message)
        self.constraint = constraint


class ActiveJobIndexViolation(ActiveJobExists, UniqueViolation):
    """ActiveJobExists, as the index ``replay_job_one_active_per_consumer`` reports it."""


class EventKeyViolation(ConcurrencyConflict, UniqueViolation):
    """ConcurrencyConflict, as a unique key of the ``event`` table reports it."""


# Constraint (or unique index) name -> the error it means and what to say; names from
# shared/migrations/*.sql. The driver's detail ("Key (consumer_name)=(x) already exists.")
# follows the text, so the message names the row.
UNIQUE_CONSTRAINTS: dict[str, tuple[type[UniqueViolation], str]] = {
    "replay_job_one_active_per_consumer": (
        ActiveJobIndexViolation,
        "the consumer already has an active (pending or running) job",
    ),
    "event_aggregate_sequence_key": (
        EventKeyViolation,
        "an event with this aggregate_id and sequence_num exists already (a concurrent append?)",
    ),
    "event_pkey": (EventKeyViolation, "an event with this event_id exists already"),
}


def translate(exc: BaseException) -> Exception | None:
    """This project's error for driver error ``exc``, or None where the driver's error stands
    (an error of the work itself: see ``is_transient``)."""
    if isinstance(exc, pg_errors.UniqueViolation):
        name = exc.diag.constraint_name
        kind, text = UNIQUE_CONSTRAINTS.get(name or "", (UniqueViolation, "unique violation"))
        detail = first_line(exc) if exc.diag.message_detail is None else exc.diag.message_detail
        if kind is UniqueViolation:
            text = f"{text} of {name or 'an unnamed constraint'}"
        return kind(f"{text}: {redact(detail)}", name)
    if _driver_transient(exc):
        return DatabaseUnavailable(f"PostgreSQL unavailable: {first_line(exc)}")
    return None


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


# --- connections that speak this project's errors -----------------------------------------------
# Every method that talks to the server is wrapped once, here, so that no caller needs to wrap a
# block in translate_errors(): a try/except costs nothing until something is raised (measured:
# see the report of issue 12, well under a microsecond per execute against ~50 us a round trip).
_P = ParamSpec("_P")
_T = TypeVar("_T")


def _raise_ours(exc: psycopg.Error) -> None:
    """Raise ``translate(exc)``, chained to ``exc``, if it maps; else return (the caller then
    re-raises the driver's error unchanged)."""
    ours = translate(exc)
    if ours is not None:
        raise ours from exc


def _translating(method: Callable[_P, _T]) -> Callable[_P, _T]:
    @functools.wraps(method)
    def translated(*args: _P.args, **kwargs: _P.kwargs) -> _T:
        try:
            return method(*args, **kwargs)
        except psycopg.Error as exc:
            _raise_ours(exc)
            raise

    return translated


def _translating_cm(
    method: Callable[_P, contextlib.AbstractContextManager[_T]],
) -> Callable[_P, contextlib._GeneratorContextManager[_T, None, None]]:
    """For a context manager (``transaction``, ``copy``): its enter, its exit (a COMMIT, the end
    of a COPY, where a unique violation fires) and its body."""

    @functools.wraps(method)
    @contextlib.contextmanager
    def translated(*args: _P.args, **kwargs: _P.kwargs) -> Iterator[_T]:
        try:
            with method(*args, **kwargs) as value:
                yield value
        except psycopg.Error as exc:
            _raise_ours(exc)
            raise

    return translated


def _translating_iter(method: Callable[_P, Iterator[_T]]) -> Callable[_P, Generator[_T]]:
    """For a generator (``stream``, ``notifies``): the error comes while it is consumed."""

    @functools.wraps(method)
    def translated(*args: _P.args, **kwargs: _P.kwargs) -> Generator[_T]:
        try:
            yield from method(*args, **kwargs)
        except psycopg.Error as exc:
            _raise_ours(exc)
            raise

    return translated


Row = dict[str, Any]  # every connection of this module reads rows as dicts


class TranslatingCursor(psycopg.Cursor[Row]):
    """A client-side cursor: its rows arrive with ``execute``, so only the statements and COPY
    talk to the server."""

    execute = _translating(psycopg.Cursor[Row].execute)
    executemany = _translating(psycopg.Cursor[Row].executemany)
    stream = _translating_iter(psycopg.Cursor[Row].stream)
    copy = _translating_cm(psycopg.Cursor[Row].copy)


class TranslatingServerCursor(psycopg.ServerCursor[Row]):
    """A named (server-side) cursor: every fetch is a round trip (its methods are wrapped just
    below: typed as overrides of Cursor's, mypy would refuse a ServerCursor ``self``)."""


for _name in ("execute", "fetchone", "fetchmany", "fetchall", "__next__", "scroll"):
    setattr(TranslatingServerCursor, _name, _translating(getattr(psycopg.ServerCursor, _name)))


class TranslatingConnection(psycopg.Connection[Row]):
    """A psycopg connection whose cursors, transactions and notifications raise this project's
    errors (``translate``). ``conn.execute`` goes through its cursor."""

    def __init__(self, pgconn: Any, row_factory: Any = dict_row) -> None:
        super().__init__(pgconn, row_factory)
        self.cursor_factory = TranslatingCursor
        self.server_cursor_factory = TranslatingServerCursor
        self.returned_at = 0.0  # when a pool last took it back (time.monotonic())

    transaction = _translating_cm(psycopg.Connection[Row].transaction)
    notifies = _translating_iter(psycopg.Connection[Row].notifies)
    commit = _translating(psycopg.Connection[Row].commit)
    rollback = _translating(psycopg.Connection[Row].rollback)


Connection = TranslatingConnection


class TranslatingPool(ConnectionPool[Connection]):
    """A pool of TranslatingConnections whose wait for a connection ends in
    ``DatabaseUnavailable``, not PoolTimeout."""

    getconn = _translating(ConnectionPool.getconn)


# The type to annotate a pool with (make_pool's are TranslatingPools).
Pool = ConnectionPool[Connection]


def connect(settings: Settings, *, autocommit: bool = True) -> Connection:
    """A new connection to the configured database, rows as dicts.

    Autocommit by default: a transaction is then exactly a ``with conn.transaction():`` block.
    (Without autocommit, the first statement silently opens a transaction that lasts until
    commit, and every ``transaction()`` block inside it is only a savepoint: a slice's batches
    would all commit at its end, or all vanish with its worker.)
    """
    with _connect_errors(settings.database_url):
        conn = TranslatingConnection.connect(
            settings.database_url,
            autocommit=autocommit,
            row_factory=dict_row,
            connect_timeout=10,
            application_name="event-replay",
        )
    _configure(conn)
    return conn


@contextlib.contextmanager
def _connect_errors(url: str, doing: str = "connect to PostgreSQL at") -> Iterator[None]:
    """Turn every driver error of opening (and using) a connection to ``url`` into one of ours,
    on one line, the password masked. psycopg's conninfo parser raises ProgrammingError with
    the whole string quoted, password included (issue 11); a refused connection is an
    OperationalError, the others are a property of the URL or of the role it names. Raised
    ``from None``: the driver's exception, chained, would print the password in any traceback."""
    try:
        yield
    except psycopg.OperationalError as exc:
        raise DatabaseUnavailable(f"cannot {doing} {redact(url)}: {_hide(url, exc)}") from None
    except (psycopg.Error, ValueError) as exc:
        raise ConfigurationError(f"cannot {doing} {redact(url)}: {_hide(url, exc)}") from None


def _hide(url: str, exc: BaseException) -> str:
    return redact_secrets_of(url, first_line(exc))


def check_url(url: str) -> None:
    """``ConfigurationError`` if psycopg cannot parse ``url`` (before a pool's threads try)."""
    with _connect_errors(url, "use PostgreSQL at"):
        conninfo.conninfo_to_dict(url)


def make_pool(
    settings: Settings, *, max_size: int = 4, check_idle_after: float = 0.0
) -> TranslatingPool:
    """A small pool for one process. ``DatabaseUnavailable`` (one line) if the server does not
    answer, rather than a pool whose threads retry and log until a caller's wait times out. A
    connection handed out is checked (a round trip) if idle over ``check_idle_after`` seconds
    or if the server wrote to it (it ended it): a pool of many short calls (the Python API)
    saves a round trip per call."""
    check_url(settings.database_url)
    connect(settings).close()
    return TranslatingPool(
        settings.database_url,
        min_size=1,
        max_size=max_size,
        timeout=10,  # seconds to wait for a connection before DatabaseUnavailable
        reconnect_timeout=60,
        # autocommit: see connect()
        kwargs={"row_factory": dict_row, "application_name": "event-replay", "autocommit": True},
        open=True,
        check=functools.partial(_check_if_idle, check_idle_after),
        reset=lambda conn: setattr(conn, "returned_at", time.monotonic()),
        configure=_configure,
        connection_class=TranslatingConnection,
    )


def _check_if_idle(seconds: float, conn: Connection) -> None:
    # An idle connection has nothing to read: if it has, the server most likely ended it.
    if time.monotonic() - conn.returned_at > seconds or select.select([conn], [], [], 0)[0]:
        ConnectionPool.check_connection(conn)


@contextlib.contextmanager
def translate_errors() -> Iterator[None]:
    """Raise a driver error of the block as ours (``translate``), as this module's connections
    and pools already do by themselves: around them it changes nothing, and the call sites
    written before them can drop it. Still of use around a connection opened elsewhere."""
    try:
        yield
    except psycopg.Error as exc:
        _raise_ours(exc)
        raise


@contextlib.contextmanager
def _admin(settings: Settings, doing: str) -> Iterator[psycopg.Connection[Any]]:
    """A plain connection to the server's ``postgres`` database, every driver error of it one
    line (``_connect_errors``: ``doing`` says what failed)."""
    admin = replace_database(settings.database_url, "postgres")
    with (
        _connect_errors(admin, f"{doing} PostgreSQL at"),
        psycopg.connect(admin, autocommit=True, connect_timeout=10) as conn,
    ):
        yield conn


def create_database_if_missing(settings: Settings) -> bool:
    """Create the configured database if it does not exist. Returns True if it was created."""
    name = settings.database_name
    with _admin(settings, f"create database {name!r} on") as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if exists:
            return False
        try:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        except (pg_errors.DuplicateDatabase, pg_errors.UniqueViolation):
            # Created concurrently by another migrate: PostgreSQL reports the loser of a
            # simultaneous CREATE DATABASE as a unique violation on pg_database, not 42P04.
            return False
        return True


def drop_database(settings: Settings, name: str) -> None:
    """Drop database ``name`` on the configured server, disconnecting its sessions."""
    with _admin(settings, f"drop database {name!r} on") as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def database_comment(settings: Settings, name: str) -> str | None:
    """The comment on database ``name`` ('' if it has none), or None if it does not exist."""
    with _admin(settings, "read the databases of") as conn:
        query = "SELECT coalesce(shobj_description(oid, 'pg_database'), '') FROM pg_database"
        row = conn.execute(query + " WHERE datname = %s", (name,)).fetchone()
    return None if row is None else str(row[0])


def comment_on_database(settings: Settings, name: str, text: str) -> None:
    """Set the comment on database ``name`` (COMMENT takes no parameters: quoted here)."""
    with _admin(settings, f"comment on database {name!r} on") as conn:
        conn.execute(
            sql.SQL("COMMENT ON DATABASE {} IS {}").format(sql.Identifier(name), sql.Literal(text))
        )


def first_line(exc: BaseException) -> str:
    """The first line of ``exc``'s message, passwords masked: for an error, a log, a job row."""
    text = str(exc).strip()
    return redact(text.splitlines()[0]) if text else type(exc).__name__
