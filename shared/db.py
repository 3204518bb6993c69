"""The one module that talks to the PostgreSQL driver directly.

It opens connections and pools, and turns driver errors into this project's errors, so that the
rest of the code never imports psycopg's internals.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import orjson
import psycopg
from psycopg import errors as pg_errors
from psycopg.rows import dict_row
from psycopg.types.json import set_json_loads
from psycopg_pool import ConnectionPool, PoolTimeout

from shared.errors import DatabaseUnavailable
from shared.settings import Settings, redact, replace_database

Connection = psycopg.Connection[dict[str, Any]]

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
    set_json_loads(orjson.loads, conn)


def connect(settings: Settings, *, autocommit: bool = True) -> Connection:
    """A new connection to the configured database, rows as dicts.

    Autocommit by default: a transaction is then exactly a ``with conn.transaction():`` block.
    (Without autocommit, the first statement silently opens a transaction that lasts until
    commit, and every ``transaction()`` block inside it is only a savepoint: a slice's batches
    would all commit at its end, or all vanish with its worker.)
    """
    try:
        conn = psycopg.connect(
            settings.database_url,
            autocommit=autocommit,
            row_factory=dict_row,
            connect_timeout=10,
            application_name="event-replay",
        )
    except psycopg.OperationalError as exc:
        raise DatabaseUnavailable(
            f"cannot connect to PostgreSQL at {redact(settings.database_url)}: {first_line(exc)}"
        ) from exc
    _configure(conn)
    return conn


def make_pool(settings: Settings, *, max_size: int = 4) -> ConnectionPool[Connection]:
    """A small pool for one process (a worker process or a scheduler)."""
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
    try:
        with psycopg.connect(admin, autocommit=True, connect_timeout=10) as conn:
            exists = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (name,)
            ).fetchone()
            if exists:
                return False
            try:
                conn.execute(
                    psycopg.sql.SQL("CREATE DATABASE {}").format(psycopg.sql.Identifier(name))
                )
            except (pg_errors.DuplicateDatabase, pg_errors.UniqueViolation):
                # Created concurrently by another migrate: PostgreSQL reports the loser of a
                # simultaneous CREATE DATABASE as a unique violation on pg_database, not 42P04.
                return False
            return True
    except psycopg.OperationalError as exc:
        raise DatabaseUnavailable(
            f"cannot connect to PostgreSQL at {redact(admin)}: {first_line(exc)}"
        ) from exc


def drop_database(settings: Settings, name: str) -> None:
    """Drop database ``name`` on the configured server, disconnecting its sessions."""
    admin = replace_database(settings.database_url, "postgres")
    with psycopg.connect(admin, autocommit=True, connect_timeout=10) as conn:
        conn.execute(
            psycopg.sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                psycopg.sql.Identifier(name)
            )
        )


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
