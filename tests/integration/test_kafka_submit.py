"""Submitting a Kafka replay through the public entry points (issue 14): the module-level
``submit_replay(..., source="kafka", topic=...)`` and ``replay submit --source kafka
--kafka-topic TOPIC --from TIME``, on the embedded broker and real worker processes.

The broker, the settings and the two workers are ``test_kafka``'s fixtures (this module gets its
own broker and workers: they are module-scoped).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from examples.orders.messages import order_message
from local.kafka import EmbeddedKafka
from scheduler import coordinator as api
from shared import db
from shared.settings import Settings
from tests.integration import test_kafka
from tests.integration.test_kafka import (
    BOOTSTRAP_ENV,
    BURST_PAUSE_SECONDS,
    SOURCE,
    create_topic,
    produce,
)
from tests.support import ROOT

# test_kafka's fixtures, by the names its fixtures ask for (assigned, not imported: the tests'
# parameters of these names are the fixtures); this module gets its own broker and workers.
pytestmark = test_kafka.pytestmark
broker = test_kafka.broker
kafka_settings = test_kafka.kafka_settings
kafka_workers = test_kafka.kafka_workers
coordinator = test_kafka.coordinator


KEYS = 20
EVENTS_PER_KEY = 3


def messages(first: int) -> list[tuple[str | None, bytes]]:
    """EVENTS_PER_KEY Order events for each of KEYS keys, the ``first``-th on."""
    start = first * KEYS
    return [
        order_message(i, KEYS, placed=i < KEYS) for i in range(start, start + EVENTS_PER_KEY * KEYS)
    ]


@pytest.fixture
def module_api(coordinator: api.Coordinator) -> Iterator[None]:
    """The module-level calls on the Kafka settings (the workers of this module are running)."""
    api.configure(coordinator.settings)
    yield
    api.configure(None)


def job_rows(conn: db.Connection) -> int:
    row = conn.execute("SELECT count(*) AS n FROM replay_job").fetchone()
    assert row is not None
    return int(row["n"])


def run_cli(
    settings: Settings, broker: EmbeddedKafka, *argv: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "scheduler.cli", "submit", *argv],
        env={**os.environ, **settings.as_env(), BOOTSTRAP_ENV: broker.bootstrap,
             "PYTHONPATH": str(ROOT)},
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )  # fmt: skip


def test_submit_replay_takes_a_topic(module_api: None, broker: EmbeddedKafka) -> None:
    topic = create_topic(broker, partitions=2)
    produce(broker, topic, messages(0))
    job_id = api.submit_replay("order_summary", source=SOURCE, topic=topic)
    job = api.wait_for_job(job_id, timeout=60)
    assert job["status"] == "completed", job["error"]
    assert (job["source"], job["filter_params"]["topic"]) == (SOURCE, topic)
    assert job["processed_count"] == job["total_events"] == KEYS * EVENTS_PER_KEY


def test_the_cli_submits_a_kafka_topic_from_a_time(
    coordinator: api.Coordinator, broker: EmbeddedKafka
) -> None:
    topic = create_topic(broker, partitions=2)
    produce(broker, topic, messages(0))
    time.sleep(BURST_PAUSE_SECONDS)  # tansu stamps its append time: the batches must differ
    second = datetime.fromtimestamp(int(time.time() * 1000) / 1000, UTC)
    produce(broker, topic, messages(EVENTS_PER_KEY))
    proc = run_cli(
        coordinator.settings, broker, "order_summary", "--source", SOURCE,
        "--kafka-topic", topic, "--type", "time_range", "--from", second.isoformat(),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    job_id = str(uuid.UUID(proc.stdout.strip()))
    job = coordinator.wait(job_id, timeout=60)
    assert job["status"] == "completed", job["error"]
    assert (job["source"], job["replay_type"]) == (SOURCE, "time_range")
    assert job["filter_params"]["topic"] == topic
    assert job["filter_params"]["from_time"] == second.isoformat()
    # only the second batch: the messages at or after --from
    assert job["processed_count"] == job["total_events"] == KEYS * EVENTS_PER_KEY


def test_a_kafka_topic_without_the_kafka_source_is_refused(
    coordinator: api.Coordinator, broker: EmbeddedKafka, conn: db.Connection
) -> None:
    topic = create_topic(broker, partitions=1)
    proc = run_cli(coordinator.settings, broker, "order_summary", "--kafka-topic", topic)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("replay: error: "), proc.stderr
    assert "topic" in lines[0] and "'postgres'" in lines[0]
    assert proc.stdout == ""
    assert job_rows(conn) == 0
