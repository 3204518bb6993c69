"""Helpers shared by the integration and fault suites: their own database and Redis DB numbers,
real worker processes, and plain SQL to read what happened."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import redis

from examples.orders import seed
from shared import db, schema
from shared.settings import Settings, replace_database

ROOT = Path(__file__).resolve().parents[1]
SERVER_URL = os.environ.get(
    "REPLAY_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("REPLAY_TEST_REDIS_URL", "redis://127.0.0.1:6379").rstrip("/")
WORKER_ENV = {"PYTHONPATH": str(ROOT)}

# Tables the tests write; emptied between tests (the seeded events stay).
STATE_TABLES = (
    "order_summary, email_outbox, processed_event, replay_job, replay_slice, parked_event,"
    " handler_state, strict_order_state, poison_rule, slice_heartbeat, live_audit,"
    " live_checkpoint, snapshot"
)


def make_settings(suite: str, redis_dbs: tuple[int, int, int], **overrides: Any) -> Settings:
    """Settings for one suite of one run: its own database, queues and Redis DB numbers."""
    run = f"{suite}_{os.getpid()}"
    broker, backend, cache = redis_dbs
    values: dict[str, Any] = {
        "database_url": replace_database(SERVER_URL, f"replay_{run}"),
        "broker_url": f"{REDIS_URL}/{broker}",
        "result_backend": f"{REDIS_URL}/{backend}",
        "redis_url": f"{REDIS_URL}/{cache}",
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
    flush(settings.redis_url)


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
