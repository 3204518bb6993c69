"""Which database errors are worth a retry (and which are a property of the work itself), and
how driver errors become ours: one line, the password masked."""

from __future__ import annotations

import psycopg
import pytest
from psycopg import errors as pg
from psycopg_pool import PoolTimeout

from shared import db
from shared.db import is_transient
from shared.errors import ConfigurationError, DatabaseUnavailable
from shared.settings import Settings


@pytest.mark.parametrize(
    "exc",
    [
        psycopg.OperationalError("server closed the connection unexpectedly"),  # client side
        pg.AdminShutdown(),
        pg.CannotConnectNow(),
        pg.ConnectionFailure(),
        pg.SerializationFailure(),
        pg.DeadlockDetected(),
        PoolTimeout("no connection in 10 s"),
    ],
)
def test_lost_connections_and_lost_conflicts_are_transient(exc: Exception) -> None:
    assert is_transient(exc)


@pytest.mark.parametrize(
    "exc",
    [
        pg.QueryCanceled(),  # statement_timeout: the same event would time out again
        pg.ProgramLimitExceeded(),
        pg.DiskFull(),
        pg.LockNotAvailable(),
        pg.UniqueViolation(),
        pg.UndefinedTable(),
        ValueError("a handler bug"),
    ],
)
def test_errors_of_the_work_itself_are_not(exc: Exception) -> None:
    assert not is_transient(exc)


@pytest.mark.parametrize(
    "url",
    ["notaurl", "mysql://u:S3cr3tPW@h/db", "postgresql//user:S3cr3tPW@host/db",
     "user:S3cr3tPW@host/db"],
)  # fmt: skip
def test_a_url_psycopg_cannot_parse_is_a_configuration_error_without_its_password(
    url: str,
) -> None:
    # psycopg's own message quotes the whole string, password included
    with pytest.raises(psycopg.ProgrammingError, match=r"S3cr3tPW|notaurl"):
        psycopg.conninfo.conninfo_to_dict(url)
    with pytest.raises(ConfigurationError) as caught:
        db.check_url(url)
    assert "S3cr3tPW" not in str(caught.value)
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


def test_a_refused_connection_is_unavailable_without_its_password() -> None:
    settings = Settings(database_url="postgresql://u:S3cr3tPW@127.0.0.1:1/db")  # port 1: closed
    for call in (db.connect, db.create_database_if_missing, lambda s: db.drop_database(s, "x")):
        with pytest.raises(DatabaseUnavailable) as caught:
            call(settings)
        message = str(caught.value)
        assert "u:***@127.0.0.1:1" in message and "S3cr3tPW" not in message
        assert "\n" not in message


def test_first_line_masks_passwords() -> None:
    exc = psycopg.ProgrammingError('missing "=" after "mysql://u:S3cr3tPW@h/db"\nmore')
    assert db.first_line(exc) == 'missing "=" after "mysql://u:***@h/db"'
