"""Helpers shared by the integration and fault suites: the servers they run on, their own
database and Redis DB numbers, real worker processes, and plain SQL to read what happened.

The servers are resolved once per session (``tests/conftest.py``, ``tests/suite_servers.py``):
``REPLAY_TEST_DATABASE_URL`` / ``REPLAY_TEST_REDIS_URL``, else the local servers if they answer,
else the embedded ones, started for the session. ``SERVER_URL`` (the PostgreSQL server, its
``postgres`` database) and ``REDIS_URL`` (the Redis server, no DB number) are known from then on;
``make_settings`` builds on them. The embedded servers' URLs carry their secret, and so do the
settings made here and the environment of every process started with them
(``Settings.as_env()``, which ``local.workers.WorkerProcess`` passes on).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import redis

from examples.orders import seed
from local import embedded
from shared import db, schema
from shared.settings import Settings, replace_database
from tests import suite_servers

ROOT = Path(__file__).resolve().parents[1]
#: added to the environment of the processes the tests start (the session's REPLAY_HOME is
#: added when the session starts: nothing a test starts writes into the user's .replay/)
WORKER_ENV = {"PYTHONPATH": str(ROOT)}

#: the session's servers, once ``start_servers`` resolved them
_servers: suite_servers.Resolved | None = None


def start_servers() -> suite_servers.Resolved:
    """Resolve (or start) the session's servers; raises ``suite_servers.Unavailable``."""
    global _servers
    suite_servers.sweep()
    _servers = suite_servers.resolve()
    os.environ[embedded.HOME_ENV] = str(_servers.home)
    WORKER_ENV[embedded.HOME_ENV] = str(_servers.home)
    return _servers


def stop_servers() -> list[str]:
    """Stop the embedded servers the session started (if any); returns those stopped."""
    global _servers
    if _servers is None:
        return []
    found, _servers = _servers, None
    os.environ.pop(embedded.HOME_ENV, None)
    WORKER_ENV.pop(embedded.HOME_ENV, None)
    return suite_servers.stop(found)


def servers() -> suite_servers.Resolved:
    """The session's servers. Only a session that runs tests needing them resolves them."""
    if _servers is None:
        raise RuntimeError(
            "the test servers are resolved when a pytest session that needs them starts"
            " (tests/conftest.py): not in a session of unit tests only, nor outside pytest"
        )
    return _servers


def __getattr__(name: str) -> str:
    # SERVER_URL and REDIS_URL exist once the session resolved its servers (a module-level
    # constant would be computed at import, before that).
    if name == "SERVER_URL":
        return servers().database_url
    if name == "REDIS_URL":
        return servers().redis_url
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# Tables the tests write; emptied between tests (the seeded events stay).
STATE_TABLES = (
    "order_summary, email_outbox, processed_event, handler_progress, replay_job, replay_start,"
    " replay_slice, replay_shadow,"
    " parked_event,"
    " handler_state, strict_order_state, poison_rule, slice_heartbeat, live_audit,"
    " live_checkpoint, snapshot"
)


def make_settings(suite: str, redis_dbs: tuple[int, int, int], **overrides: Any) -> Settings:
    """Settings for one suite of one run: its own database, queues and Redis DB numbers."""
    run = f"{suite}_{os.getpid()}"
    broker, backend, cache = redis_dbs
    found = servers()
    values: dict[str, Any] = {
        "database_url": replace_database(found.database_url, f"replay_{run}"),
        "broker_url": f"{found.redis_url}/{broker}",
        "result_backend": f"{found.redis_url}/{backend}",
        "redis_url": f"{found.redis_url}/{cache}",
        "handler_modules": ("tests.handlers",),
        "queue": f"replay_{run}",
        "live_queue": f"live_{run}",
        "control_queue": f"control_{run}",
        **overrides,
    }
    return Settings(**values)


def create_database(settings: Settings, seeds: Iterable[tuple[int, int, int]]) -> None:
    """A fresh database, migrated, handlers set up, seeded with (seed, aggregates, per)."""
    for url in (settings.broker_url, settings.result_backend, settings.redis_url):
        flush(url)
    db.drop_database(settings, settings.database_name)
    schema.migrate_all(settings)
    with db.connect(settings) as conn:
        for seed_no, aggregates, per in seeds:
            seed.seed(conn, aggregates, per, seed=seed_no)


def flush(url: str) -> None:
    with redis.Redis.from_url(url) as client:
        client.flushdb()


def reset_state(settings: Settings, conn: db.Connection) -> None:
    conn.execute(f"TRUNCATE {STATE_TABLES}")
    drop_shadow_schemas(conn)
    flush(settings.redis_url)


def drop_shadow_schemas(conn: db.Connection) -> None:
    """The schemas that shadow rebuilds made (shared.shadow), dropped with their tables."""
    rows = conn.execute(
        "SELECT nspname FROM pg_namespace WHERE nspname ~ '^replay_(shadow|old)_[0-9a-f]{32}$'"
    ).fetchall()
    for row in rows:
        conn.execute(db.sql.SQL("DROP SCHEMA {} CASCADE").format(db.sql.Identifier(row["nspname"])))


def events_where(
    conn: db.Connection, condition: str = "TRUE", params: Any = ()
) -> list[dict[str, Any]]:
    return conn.execute(
        "SELECT event_id, aggregate_id, aggregate_type, event_type, payload, sequence_num,"
        f" occurred_at FROM event WHERE {condition}",
        params,
    ).fetchall()


def count(conn: db.Connection, query: str, params: Any = ()) -> int:
    row = conn.execute(query, params).fetchone()
    assert row is not None
    return int(next(iter(row.values())))


def append_items(conn: db.Connection, aggregate_id: str, n: int, sku: str) -> None:
    """``n`` ItemAdded events of ``sku`` at the end of the aggregate (a test's late events)."""
    from shared import store

    version = store.stream_version(conn, aggregate_id)
    items = [store.NewEvent("ItemAdded", {"sku": sku, "qty": 1, "price": "2.50"})] * n
    store.append(conn, aggregate_id, "Order", items, expected_version=version)


def items_of(conn: db.Connection, aggregate_id: str, sku: str) -> list[Any]:
    """The ids of the aggregate's ItemAdded events of ``sku``, in order."""
    rows = conn.execute(
        "SELECT event_id FROM event WHERE aggregate_id = %s AND payload->>'sku' = %s"
        " ORDER BY sequence_num",
        (aggregate_id, sku),
    )
    return [r["event_id"] for r in rows]


def wait_until(predicate: Any, timeout: float, what: str, poll: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(poll)
