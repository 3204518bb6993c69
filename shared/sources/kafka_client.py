"""The Kafka client calls of the Kafka source (``shared.sources.kafka``): which brokers, a
consumer that never joins a group, a topic's partitions, the offset at a time, a partition's
messages from an offset, and the true ends of a topic's partitions. ``confluent-kafka`` (the
extra ``event-replay[kafka]``) is imported only when one of them is called.

A broker that does not answer is ``SourceUnavailable``: at planning the submit is refused with
one line; while a slice reads, its task retries as on a PostgreSQL outage.
"""

from __future__ import annotations

import os
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from shared.errors import ConfigurationError, InvalidRequest, SourceLost, SourceUnavailable
from shared.store import shorten

BOOTSTRAP_ENV = "REPLAY_KAFKA_BOOTSTRAP"
#: how long a metadata or offset request may take before the broker counts as unreachable, in s
METADATA_TIMEOUT_SECONDS = 5.0
#: how long a batch's messages may take to arrive before the read fails, in seconds
FETCH_TIMEOUT_SECONDS = 30.0
#: planning on a broker whose high watermark is short of the log's end (tansu): no message
#: for this long, in seconds, is the end (see log_ends)
END_IDLE_SECONDS = 0.5
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def bootstrap() -> str:
    """The brokers, ``host:port,...``, from ``REPLAY_KAFKA_BOOTSTRAP`` (read when used)."""
    value = os.environ.get(BOOTSTRAP_ENV, "").strip()
    if not value:
        raise ConfigurationError(
            f"no Kafka broker: set {BOOTSTRAP_ENV}=host:port,... of your brokers, or run"
            " `replay up` (with the extra: pip install 'event-replay[kafka]') for the embedded one"
        )
    return value


def kafka_module() -> Any:
    try:
        import confluent_kafka
    except ImportError:
        raise ConfigurationError(
            "the Kafka source needs confluent-kafka: pip install 'event-replay[kafka]'"
        ) from None
    return confluent_kafka


def consumer(group: str = "event-replay") -> Any:
    """A consumer that joins no group (it is only ever ``assign``-ed) and commits only when
    told; ``group`` is the group its explicit commits go to."""
    return kafka_module().Consumer({
        "bootstrap.servers": bootstrap(), "group.id": group, "enable.auto.commit": False,
        "enable.auto.offset.store": False, "enable.partition.eof": True,
        # a deleted offset is an error, never a silent jump to the log's start or end
        "auto.offset.reset": "error", "allow.auto.create.topics": False,
        # librdkafka logs every failed connect on stderr: this project says what went wrong
        # in its own one-line errors instead
        "log_level": 0,
        # a fetch at the (believed) end of the log returns at once: see log_end
        "fetch.wait.max.ms": 50,
        # read ahead a few batches, not librdkafka's 64 MB per partition: a worker's memory
        # stays small whatever the topic, and what it holds is what a hung broker leaves it
        "queued.max.messages.kbytes": 1024,
    })  # fmt: skip


def close_later(client: Any) -> None:
    """Close a client in a thread of its own: a close waits for what the client has in flight
    (an asynchronous commit), and a hung broker must not hold up a slice, least of all inside
    its batch's transaction."""
    threading.Thread(target=client.close, name="kafka-close", daemon=True).start()


def unreachable(exc: Exception) -> SourceUnavailable:
    error = exc.args[0] if exc.args else exc
    said = error.str() if hasattr(error, "str") else str(error)  # a KafkaError's own words
    return SourceUnavailable(
        f"no Kafka broker answers at {bootstrap()} ({BOOTSTRAP_ENV}): start it, or point"
        f" {BOOTSTRAP_ENV} at one that runs, or run `replay up` (with the extra: pip install"
        f" 'event-replay[kafka]') for the embedded one ({' '.join(said.split())})"
    )


def to_millis(when: datetime) -> int:
    """The first Kafka timestamp (ms) at or after ``when``."""
    micros = (when - EPOCH) // timedelta(microseconds=1)
    return -(-micros // 1000)


def partitions(client: Any, topic: str) -> list[int]:
    """The topic's partitions; ``InvalidRequest`` for a topic the broker does not have."""
    kafka = kafka_module()
    try:
        meta = client.list_topics(topic, timeout=METADATA_TIMEOUT_SECONDS).topics.get(topic)
    except kafka.KafkaException as exc:
        raise unreachable(exc) from None
    if meta is None or meta.error is not None or not meta.partitions:
        raise InvalidRequest(f"no topic {shorten(topic)} on the Kafka broker at {bootstrap()}")
    return sorted(meta.partitions)


def offset_at(client: Any, topic: str, partition: int, when: datetime, low: int, high: int) -> int:
    """The offset of the first message at or after ``when`` (``high`` if none).

    ``offsets_for_times`` answers that on Kafka; tansu (the embedded broker) answers with an
    offset at or before it, so the answer is checked by reading forward from it (on Kafka the
    first message read is the one)."""
    kafka = kafka_module()
    millis = to_millis(when)
    tp = kafka.TopicPartition(topic, partition, millis)
    try:
        found = client.offsets_for_times([tp], timeout=METADATA_TIMEOUT_SECONDS)[0]
    except kafka.KafkaException as exc:
        raise unreachable(exc) from None
    offset = found.offset
    if offset < 0 or offset >= high:
        return high
    offset = max(offset, low)
    assign = True
    while offset < high:
        got, _ = fetch(client, topic, partition, offset, min(500, high - offset), assign=assign)
        for message in got:
            if message.timestamp()[1] >= millis:
                return int(message.offset())
            offset = message.offset() + 1
        assign = False  # go on where the consumer is
        if not got:
            break
    return high


#: the errors of a read that no retry cures: the broker no longer has what was asked for
GONE = frozenset({
    "_AUTO_OFFSET_RESET", "OFFSET_OUT_OF_RANGE", "UNKNOWN_TOPIC_OR_PART", "_UNKNOWN_PARTITION",
    "_UNKNOWN_TOPIC", "TOPIC_AUTHORIZATION_FAILED",
})  # fmt: skip


def fetch(
    client: Any,
    topic: str,
    partition: int,
    offset: int,
    count: int,
    *,
    assign: bool = True,
    idle: float | None = None,
) -> tuple[list[Any], bool]:
    """Up to ``count`` messages of the partition from ``offset`` on, and whether the broker
    signalled the log's end after them (then fewer; with ``idle``, fewer also when no message
    came for that many seconds). ``assign=False``: the consumer is assigned there already (it
    read up to ``offset`` and saw no end). ``SourceLost`` for what the broker no longer has,
    ``SourceUnavailable`` when nothing comes."""
    kafka = kafka_module()
    if assign:
        client.assign([kafka.TopicPartition(topic, partition, offset)])
    messages: list[Any] = []
    deadline = time.monotonic() + FETCH_TIMEOUT_SECONDS
    while len(messages) < count:
        got = client.consume(count - len(messages), timeout=idle or 1.0)
        if not got and idle is not None:
            return messages, False
        if time.monotonic() > deadline:
            if messages:
                return messages, False  # what came is a batch; the next read goes on
            raise SourceUnavailable(
                f"the Kafka broker at {bootstrap()} sent no message of partition {partition}"
                f" of topic {topic} from offset {offset} in {FETCH_TIMEOUT_SECONDS:.0f} s"
            )
        for message in got:
            error = message.error()
            if error is not None:
                if error.code() == kafka.KafkaError._PARTITION_EOF:
                    return messages, True
                raise read_error(error, topic, partition, offset)
            messages.append(message)
    return messages, False


def read_error(error: Any, topic: str, partition: int, offset: int) -> Exception:
    """A read's error: ``SourceLost`` for what the broker no longer has, else
    ``SourceUnavailable``."""
    where = f"reading partition {partition} of topic {topic} from offset {offset}"
    if error.name() in GONE:
        return SourceLost(f"{where}: {error.str()}{LOST_WAYS_OUT}")
    return SourceUnavailable(f"{where}: {error.str()}")


#: how long a slice's reader waits for a message past an end signal before it believes it, in
#: seconds: long enough for a loaded broker, paid once at the end of a slice
CONFIRM_END_SECONDS = 3.0


def fetch_until_idle(client: Any, topic: str, partition: int, offset: int, count: int) -> list[Any]:
    """Up to ``count`` messages from ``offset``, read until none comes for
    ``CONFIRM_END_SECONDS``, whatever end the broker signals: tansu signals its end at its high
    watermark, which falls short of the log's end (see ``log_ends``)."""
    kafka = kafka_module()
    client.assign([kafka.TopicPartition(topic, partition, offset)])
    messages: list[Any] = []
    while len(messages) < count:
        got = client.consume(count - len(messages), timeout=CONFIRM_END_SECONDS)
        if not got:
            break
        for message in got:
            error = message.error()
            if error is None:
                messages.append(message)
            elif error.code() != kafka.KafkaError._PARTITION_EOF:
                raise read_error(error, topic, partition, offset)
    return messages


LOST_WAYS_OUT = (
    " (the topic was deleted or recreated, its offsets deleted by retention, or this worker"
    " reaches another broker than the job was planned on: submit a new job for what the topic"
    " holds now)"
)


def check_retained(client: Any, topic: str, partition: int, offset: int, end: int) -> None:
    """``SourceLost`` if the broker no longer has offsets [``offset``, ``end``) of the
    partition (a read of them returned nothing, or nothing for long); returns if it has them,
    or has only offsets without a message there (a transaction's markers, compaction)."""
    kafka = kafka_module()
    where = f"offsets {offset} to {end - 1} of partition {partition} of topic {topic}"
    try:
        meta = client.list_topics(topic, timeout=METADATA_TIMEOUT_SECONDS).topics.get(topic)
        if meta is None or meta.error is not None or partition not in meta.partitions:
            raise SourceLost(f"{where}: the broker at {bootstrap()} has no such partition"
                             f"{LOST_WAYS_OUT}")  # fmt: skip
        low, high = client.get_watermark_offsets(
            kafka.TopicPartition(topic, partition), timeout=METADATA_TIMEOUT_SECONDS, cached=False
        )
    except kafka.KafkaException as exc:
        raise unreachable(exc) from None
    if low > offset:
        raise SourceLost(f"{where}: the partition now starts at offset {low}{LOST_WAYS_OUT}")
    true_end = log_ends(client, topic, {partition: (low, high)})[partition]
    if true_end < end:
        raise SourceLost(f"{where}: the partition now ends at offset {true_end}{LOST_WAYS_OUT}")


def log_ends(client: Any, topic: str, marks: dict[int, tuple[int, int]]) -> dict[int, int]:
    """Each partition's end offset (the next one to be written), from its low and high
    watermarks.

    tansu (the embedded broker) reports as high watermark the first offset of the partition's
    last record batch plus one, not past the batch (nor does it signal the partition's end):
    reading every partition from there finds the true ends: a partition is at its end once its
    last batch has arrived and the broker signals the end or nothing more comes for
    ``END_IDLE_SECONDS`` (an idle read before that batch arrives, under load, proves nothing).
    On Kafka one message per partition is read, and the broker signals each end at once.
    Messages that keep coming are read for ``FETCH_TIMEOUT_SECONDS`` at most; a partition that
    never answers in that time is ``SourceUnavailable``."""
    kafka = kafka_module()
    ends = {p: high for p, (_, high) in marks.items()}
    pending = {p for p, (low, high) in marks.items() if high > low}
    if not pending:
        return ends
    client.assign([kafka.TopicPartition(topic, p, ends[p] - 1) for p in sorted(pending)])
    arrived: set[int] = set()  # partitions whose message at high - 1 (and its batch) came
    deadline = time.monotonic() + FETCH_TIMEOUT_SECONDS
    while pending and time.monotonic() < deadline:
        got = client.consume(10_000, timeout=END_IDLE_SECONDS)
        if not got:
            pending -= arrived
        for message in got:
            error, p = message.error(), message.partition()
            if error is None:
                ends[p] = max(ends[p], message.offset() + 1)
                arrived.add(p)
            elif error.code() == kafka.KafkaError._PARTITION_EOF:
                if p in arrived:
                    pending.discard(p)
            else:
                raise SourceUnavailable(f"reading the ends of topic {topic}: {error.str()}")
    if pending:
        silent = ", ".join(map(str, sorted(pending)))
        raise SourceUnavailable(
            f"reading the ends of topic {topic}: partition(s) {silent} sent nothing"
            f" in {FETCH_TIMEOUT_SECONDS:.0f} s"
        )
    return ends


def check_group(group: str, topic: str, found: list[int]) -> None:
    """``InvalidRequest`` if ``group`` has committed offsets for ``topic``: it is someone's,
    likely the live consumer's, and a replay never commits to that."""
    kafka = kafka_module()
    client = consumer(group)
    try:
        offsets = client.committed(
            [kafka.TopicPartition(topic, p) for p in found], timeout=METADATA_TIMEOUT_SECONDS
        )
    except kafka.KafkaException as exc:
        raise unreachable(exc) from None
    finally:
        client.close()
    if any(tp.offset >= 0 for tp in offsets):
        raise InvalidRequest(
            f"consumer group {shorten(group)} has committed offsets for topic {shorten(topic)}"
            " already (a live consumer's?): a replay commits only to a group of its own; name a"
            " new one, or leave the default replay-<job id>"
        )
