"""Which database errors are worth a retry (and which are a property of the work itself), and
how driver errors become ours: one line, the password masked; a unique violation as the error
its constraint means (``db.UNIQUE_CONSTRAINTS``). No server needed: the driver's errors are
built with the diagnostics a server would send."""

from __future__ import annotations

import re
from importlib import resources

import psycopg
import pytest
from psycopg import errors as pg
from psycopg import pq
from psycopg_pool import PoolTimeout

from shared import db
from shared.db import is_transient
from shared.errors import (
    ActiveJobExists,
    ConcurrencyConflict,
    ConfigurationError,
    DatabaseUnavailable,
    ReplayError,
)
from shared.settings import Settings

F = pq.DiagnosticField


def unique_violation(constraint: str | None, detail: str | None = None) -> pg.UniqueViolation:
    """A unique violation as the server reports it (diagnostics included)."""
    info = {F.SQLSTATE: b"23505", F.MESSAGE_PRIMARY: b"duplicate key value"}
    if constraint is not None:
        info[F.CONSTRAINT_NAME] = constraint.encode()
    if detail is not None:
        info[F.MESSAGE_DETAIL] = detail.encode()
    return pg.UniqueViolation("duplicate key value violates unique constraint", info=info)


def raised_through_a_translation(exc: BaseException) -> BaseException:
    """What a block that raises ``exc`` raises once translated (as a TranslatingConnection's
    methods translate: the same function)."""
    with pytest.raises(BaseException) as caught, db.translate_errors():
        raise exc
    return caught.value


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


def test_translated_errors_are_still_transient() -> None:
    assert is_transient(DatabaseUnavailable("PostgreSQL unavailable: x"))


@pytest.mark.parametrize(
    "exc",
    [
        psycopg.OperationalError("consuming input failed: server closed the connection\nmore"),
        pg.AdminShutdown("terminating connection due to administrator command"),
        pg.SerializationFailure("could not serialize access"),
        PoolTimeout("couldn't get a connection after 10.00 sec"),
    ],
)
def test_a_transient_error_comes_out_as_database_unavailable_on_one_line(exc: Exception) -> None:
    ours = raised_through_a_translation(exc)
    assert type(ours) is DatabaseUnavailable
    assert str(ours).startswith("PostgreSQL unavailable: ") and "\n" not in str(ours)
    assert ours.__cause__ is exc  # the driver's error stays in the chain, for worker logs


@pytest.mark.parametrize(
    "exc", [pg.QueryCanceled(), pg.DataError("invalid input syntax"), pg.UndefinedTable()]
)
def test_an_error_of_the_work_itself_stays_the_drivers(exc: Exception) -> None:
    assert raised_through_a_translation(exc) is exc


def test_the_one_active_job_index_means_active_job_exists() -> None:
    driver = unique_violation(
        "replay_job_one_active_per_consumer", "Key (consumer_name)=(order_summary) already exists."
    )
    ours = raised_through_a_translation(driver)
    assert isinstance(ours, ActiveJobExists)
    assert "(order_summary)" in str(ours) and "active" in str(ours)
    # Caught as before too, by callers written before the mapping (issue 12).
    assert isinstance(ours, db.UniqueViolation)
    assert ours.constraint == "replay_job_one_active_per_consumer"
    assert ours.__cause__ is driver


@pytest.mark.parametrize("constraint", ["event_aggregate_sequence_key", "event_pkey"])
def test_a_key_of_the_event_table_means_a_concurrency_conflict(constraint: str) -> None:
    ours = raised_through_a_translation(unique_violation(constraint, "Key (...)=(...) exists."))
    assert isinstance(ours, ConcurrencyConflict) and isinstance(ours, db.UniqueViolation)
    assert not isinstance(ours, ActiveJobExists)


@pytest.mark.parametrize("constraint", ["live_audit_pkey", None])
def test_an_unknown_constraint_stays_a_database_error_that_names_it(
    constraint: str | None,
) -> None:
    ours = raised_through_a_translation(unique_violation(constraint, "Key (id)=(1) exists."))
    assert type(ours) is db.UniqueViolation
    assert not isinstance(ours, ReplayError)  # a bug, reported as one by the CLI
    assert (constraint or "an unnamed constraint") in str(ours)
    assert "Key (id)=(1) exists." in str(ours)


def test_every_mapped_constraint_exists_in_the_migrations() -> None:
    """A renamed index would silently turn its error back into a database error."""
    text = "".join(
        f.read_text(encoding="utf-8")
        for f in resources.files("shared.migrations").iterdir()
        if f.name.endswith(".sql")
    )
    named = set(re.findall(r"(?:CONSTRAINT|UNIQUE INDEX)\s+(\w+)", text))
    named.add("event_pkey")  # PostgreSQL's name for the event table's PRIMARY KEY
    assert "event_id       uuid PRIMARY KEY" in text
    assert set(db.UNIQUE_CONSTRAINTS) <= named
