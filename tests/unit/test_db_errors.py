"""Which database errors are worth a retry (and which are a property of the work itself)."""

from __future__ import annotations

import psycopg
import pytest
from psycopg import errors as pg
from psycopg_pool import PoolTimeout

from shared.db import is_transient


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
