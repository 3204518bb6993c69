"""Fixtures for the integration suite: a fresh PostgreSQL database, dedicated Redis DB numbers,
and two real ``celery worker`` processes for the whole session.

The database is created (and dropped at the end) under a name unique to this run; the broker,
result backend and cache each get their own Redis DB number, flushed at the start. The store is
seeded once; each test starts from empty read models, markers and jobs (``clean``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from scheduler.coordinator import Coordinator
from scheduler.workers import WorkerProcess, close_app, control_app, wait_until_ready
from shared import db, runner, schema, seed
from shared.handlers import load_registry
from shared.settings import Settings, replace_database

ROOT = Path(__file__).resolve().parents[2]
SERVER_URL = os.environ.get(
    "REPLAY_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("REPLAY_TEST_REDIS_URL", "redis://127.0.0.1:6379").rstrip("/")
# Redis DB numbers of this suite (the defaults of the product use 0, 1 and 2).
BROKER_DB, BACKEND_DB, CACHE_DB = 10, 11, 12
WORKER_BATCH_SIZE = 250  # small, so that aggregates and slices span many batches

# The seeded store: 200 orders of 40 events and 20 of 200 (uneven on purpose): 12,000 events.
SEEDS = ((7, 200, 40), (8, 20, 200))
TOTAL_SEEDED = sum(a * m for _, a, m in SEEDS)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="session")
def settings() -> Iterator[Settings]:
    name = f"replay_test_{os.getpid()}"
    s = Settings(
        database_url=replace_database(SERVER_URL, name),
        broker_url=f"{REDIS_URL}/{BROKER_DB}",
        result_backend=f"{REDIS_URL}/{BACKEND_DB}",
        redis_url=f"{REDIS_URL}/{CACHE_DB}",
        handler_modules=("tests.handlers",),
        queue=f"replay_test_{os.getpid()}",
        live_queue=f"live_test_{os.getpid()}",
        batch_size=WORKER_BATCH_SIZE,
    )
    for n in (BROKER_DB, BACKEND_DB, CACHE_DB):
        flush(f"{REDIS_URL}/{n}")
    db.drop_database(s, name)
    schema.migrate(s)
    with db.connect(s) as conn:
        for handler in load_registry(s.handler_modules):
            handler.setup(conn)
        for seed_no, aggregates, per in SEEDS:
            seed.seed(conn, aggregates, per, seed=seed_no)
    yield s
    db.drop_database(s, name)


@pytest.fixture(scope="session")
def workers(
    settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[WorkerProcess]]:
    """Two worker processes (one pool process each), consuming the replay and live queues."""
    logs = tmp_path_factory.mktemp("worker-logs")
    procs = [
        WorkerProcess(
            settings, f"w{i}", queues=(settings.queue, settings.live_queue),
            log_path=logs / f"w{i}.log", extra_env={"PYTHONPATH": str(ROOT)},
        ).start()
        for i in (1, 2)
    ]  # fmt: skip
    try:
        wait_until_ready(settings, [p.name for p in procs], workers=procs)
        yield procs
    finally:
        for p in procs:
            p.stop()


@pytest.fixture
def conn(settings: Settings) -> Iterator[db.Connection]:
    with db.connect(settings, autocommit=True) as c:
        yield c


@pytest.fixture
def clean(settings: Settings, conn: db.Connection) -> None:
    """Empty read models, markers and jobs; the seeded events stay."""
    conn.execute(
        "TRUNCATE order_summary, email_outbox, processed_event, replay_job, replay_slice, parked_event,"
        " handler_state, strict_order_state"
    )
    flush(settings.redis_url)


def flush(url: str) -> None:
    with redis.Redis.from_url(url) as client:
        client.flushdb()


@pytest.fixture
def coordinator(
    settings: Settings, workers: list[WorkerProcess], clean: None
) -> Iterator[Coordinator]:
    c = Coordinator(settings)
    yield c
    c.close()


@pytest.fixture
def ctx(settings: Settings) -> Iterator[runner.Context]:
    """An in-process worker context (for the live entry point called directly)."""
    c = runner.Context.create(settings)
    yield c
    c.close()


@pytest.fixture
def celery_client(settings: Settings) -> Iterator[Any]:
    app = control_app(settings)
    yield app
    close_app(app)


def events_where(
    conn: db.Connection, condition: str = "TRUE", params: Any = ()
) -> list[dict[str, Any]]:
    return conn.execute(
        "SELECT event_id, aggregate_id, aggregate_type, event_type, payload, sequence_num,"
        f" occurred_at FROM event WHERE {condition}",
        params,
    ).fetchall()
