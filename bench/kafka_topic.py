"""The topic of ``replay bench-kafka`` (``kafka_bench``): the broker it runs on, and a new
topic of three bursts of JSON Order events with pauses between them, deleted after."""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console

from examples.orders.messages import order_message, send
from local.kafka import EmbeddedKafka
from shared.sources import kafka as kafka_source

PARTITIONS = 4
#: between bursts, in seconds: the broker's timestamps of two bursts must differ
BURST_PAUSE_SECONDS = 1.2


@dataclass(frozen=True)
class Topic:
    """The bench's topic: its name, and the broker times that split its bursts."""

    name: str
    #: the second burst's start: where both sides begin
    from_time: datetime
    #: the third burst's start: where the sample ends (None: the sample is every event)
    sample_end: datetime | None
    events: int
    sample: int


@contextlib.contextmanager
def broker(logs: Path, console: Console) -> Iterator[tuple[str, str]]:
    """(bootstrap, description) of the broker: ``REPLAY_KAFKA_BOOTSTRAP`` if set (by the user or
    by the command's resolution), else an embedded tansu started for this run, exported in this
    process's environment (the coordinator and the workers read it there) while it runs."""
    given = os.environ.get(kafka_source.BOOTSTRAP_ENV, "").strip()
    if given:
        how = f"{given} ({kafka_source.BOOTSTRAP_ENV}), a topic of its own deleted after"
        console.print(f"Kafka: {how}")
        yield given, how
        return
    with EmbeddedKafka(log_path=logs / "kafkabench-tansu.log") as kafka:
        how = f"embedded tansu ({kafka.bootstrap}), started for this run and stopped after"
        console.print(f"Kafka: {how}")
        os.environ[kafka_source.BOOTSTRAP_ENV] = kafka.bootstrap
        try:
            yield kafka.bootstrap, how
        finally:
            os.environ.pop(kafka_source.BOOTSTRAP_ENV, None)


@contextlib.contextmanager
def topic_of_bursts(bootstrap: str, config: Any, console: Console) -> Iterator[Topic]:
    """A new topic of three bursts (see the module's docstring), and the times between them;
    deleted on exit, best effort (a broker of the user's keeps no bench topic)."""
    from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

    name = f"replay-bench-orders-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 3})
    for future in admin.create_topics([NewTopic(name, PARTITIONS, 1)]).values():
        future.result(30)
    try:
        yield _produce(bootstrap, name, config, console)
    finally:
        with contextlib.suppress(Exception):
            for future in admin.delete_topics([name]).values():
                future.result(30)


def _produce(bootstrap: str, name: str, config: Any, console: Console) -> Topic:
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    sample = min(config.baseline_sample, config.events)
    started = time.perf_counter()
    send(producer, name, [order_message(k, config.keys, placed=True) for k in range(config.keys)])
    from_time = _pause()
    send(producer, name, [order_message(i, config.keys) for i in range(sample)])
    sample_end = None
    if sample < config.events:
        sample_end = _pause()
        rest = range(sample, config.events)
        send(producer, name, [order_message(i, config.keys) for i in rest])
    console.print(
        f"produced {config.keys + config.events:,} messages ({config.keys:,} keys) to {name} in"
        f" {time.perf_counter() - started:.1f} s; both sides replay the {config.events:,} from"
        f" {from_time.isoformat()}"
    )
    return Topic(name, from_time, sample_end, config.events, sample)


def _pause() -> datetime:
    """Sleep between two bursts; the instant in the middle (whole milliseconds), which splits
    them whatever the broker's clock granularity."""
    time.sleep(BURST_PAUSE_SECONDS / 2)
    middle = datetime.fromtimestamp(int(time.time() * 1000) / 1000, UTC)
    time.sleep(BURST_PAUSE_SECONDS / 2)
    return middle
