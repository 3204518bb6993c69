"""A Kafka topic as a source (issue 14): replay its retained messages from a point in time, on the
same workers, with the same exactly-once effects as the event table.

A job names the source ``kafka`` and a topic (``Scope.topic``); brokers come from
``REPLAY_KAFKA_BOOTSTRAP`` (``host:port,...``). The client is ``confluent-kafka``, imported only
when a Kafka job is planned or read (the extra ``event-replay[kafka]``), so the project works
without it. The registry imports this module the first time a job names ``kafka``.

Frozen scope: at planning, for every partition, the start offset is the first message at or
after ``from_time`` (``offsets_for_times``) and the end is the first at or after ``to_time``, or
the high watermark at planning time; messages appended later are not the job's, and
``total_events`` is the exact sum. One slice per partition, so per-key order is partition order
(every key lies in one partition). The frozen offsets are the slice's bounds, written in the
aggregate-range columns as ``p<partition>@<offset>`` (first and last offset, inclusive), so that
no column was added; the job's own frozen text is the planning instant, for people.

Reading: the slice's partition is assigned (no group is joined: ``assign``, never
``subscribe``) and read in offset order from the checkpoint, the next offset to read, which the
runner commits in the batch's PostgreSQL transaction with the handler's writes: a killed worker
resumes at exactly the right message, whatever Kafka's group offsets say. After each commit the
offset is also committed, best effort, to the job's own consumer group ``replay-<job id>``, so
that Kafka's tools show the replay's progress; no other group is ever committed to.

Messages become the ``Event`` mapping every handler gets: the value is a JSON object carrying
the event's fields (``event_type`` required; ``event_id``, ``aggregate_type``, ``payload``,
``metadata``, ``sequence_num``, ``occurred_at`` optional), the key is ``aggregate_id``, and
``metadata["kafka"]`` holds the topic, partition, offset and timestamp. Without an
``event_id``, one is derived from topic, partition and offset (uuid5); without a
``sequence_num``, the offset stands for it; without ``occurred_at``, the message's timestamp. A
value that cannot be decoded is a poison event (``Batch.poison``): the job's ``on_error`` policy
takes it, naming its partition and offset, and the handler never sees it.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar
from uuid import UUID

from shared.db import Connection
from shared.errors import ConfigurationError, InvalidRequest, ServiceUnavailable
from shared.handlers import Event
from shared.scope import Scope, SliceBounds
from shared.slicing import PlannedSlice, SliceBy
from shared.sources import Batch, Checkpoint, SliceReader, Source, source
from shared.sources.kafka_decoding import decode
from shared.store import shorten

log = logging.getLogger(__name__)

NAME = "kafka"
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
            f"no Kafka broker: set {BOOTSTRAP_ENV}=host:port of a broker, or install the extra"
            " (pip install 'event-replay[kafka]') and start the embedded one"
        )
    return value


def _kafka() -> Any:
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
    return _kafka().Consumer({
        "bootstrap.servers": bootstrap(), "group.id": group, "enable.auto.commit": False,
        "enable.auto.offset.store": False, "enable.partition.eof": True,
        # a deleted offset is an error, never a silent jump to the log's start or end
        "auto.offset.reset": "error", "allow.auto.create.topics": False, "log_level": 3,
        # a fetch at the (believed) end of the log returns at once: see log_end
        "fetch.wait.max.ms": 50,
    })  # fmt: skip


def _unreachable(exc: Exception) -> ServiceUnavailable:
    return ServiceUnavailable(
        f"no Kafka broker answers at {shorten(bootstrap())} ({BOOTSTRAP_ENV}): start one and"
        f" point {BOOTSTRAP_ENV} at it, or install the extra (pip install"
        f" 'event-replay[kafka]') for the embedded one ({exc})"
    )


def to_millis(when: datetime) -> int:
    """The first Kafka timestamp (ms) at or after ``when``."""
    micros = (when - EPOCH) // timedelta(microseconds=1)
    return -(-micros // 1000)


def partitions(client: Any, topic: str) -> list[int]:
    """The topic's partitions; ``InvalidRequest`` for a topic the broker does not have."""
    kafka = _kafka()
    try:
        meta = client.list_topics(topic, timeout=METADATA_TIMEOUT_SECONDS).topics.get(topic)
    except kafka.KafkaException as exc:
        raise _unreachable(exc) from None
    if meta is None or meta.error is not None or not meta.partitions:
        raise InvalidRequest(f"no topic {shorten(topic)} on the Kafka broker at {bootstrap()}")
    return sorted(meta.partitions)


def offset_at(client: Any, topic: str, partition: int, when: datetime, low: int, high: int) -> int:
    """The offset of the first message at or after ``when`` (``high`` if none).

    ``offsets_for_times`` answers that on Kafka; tansu (the embedded broker) answers with an
    offset at or before it, so the answer is checked by reading forward from it (on Kafka the
    first message read is the one)."""
    kafka = _kafka()
    millis = to_millis(when)
    tp = kafka.TopicPartition(topic, partition, millis)
    try:
        found = client.offsets_for_times([tp], timeout=METADATA_TIMEOUT_SECONDS)[0]
    except kafka.KafkaException as exc:
        raise _unreachable(exc) from None
    offset = found.offset
    if offset < 0 or offset >= high:
        return high
    offset = max(offset, low)
    assign = True
    while offset < high:
        got = fetch(client, topic, partition, offset, min(500, high - offset), assign=assign)
        for message in got:
            if message.timestamp()[1] >= millis:
                return int(message.offset())
            offset = message.offset() + 1
        assign = False  # go on where the consumer is
        if not got:
            break
    return high


def fetch(
    client: Any,
    topic: str,
    partition: int,
    offset: int,
    count: int,
    *,
    assign: bool = True,
    idle: float | None = None,
) -> list[Any]:
    """Up to ``count`` messages of the partition from ``offset`` on, fewer at the log's end
    (which the broker signals, or, with ``idle``, no message for that many seconds);
    ``assign=False``: the consumer is assigned there already (it read up to ``offset``)."""
    kafka = _kafka()
    if assign:
        client.assign([kafka.TopicPartition(topic, partition, offset)])
    messages: list[Any] = []
    deadline = time.monotonic() + FETCH_TIMEOUT_SECONDS
    while len(messages) < count:
        got = client.consume(count - len(messages), timeout=idle or 1.0)
        if not got and idle is not None:
            return messages
        if time.monotonic() > deadline:
            raise ServiceUnavailable(
                f"the Kafka broker at {bootstrap()} sent no message of partition {partition}"
                f" of topic {topic} from offset {offset} in {FETCH_TIMEOUT_SECONDS:.0f} s"
            )
        for message in got:
            error = message.error()
            if error is not None:
                if error.code() == kafka.KafkaError._PARTITION_EOF:
                    return messages
                raise ServiceUnavailable(
                    f"reading partition {partition} of topic {topic} from offset {offset}:"
                    f" {error.str()}"
                )
            messages.append(message)
    return messages


def log_ends(client: Any, topic: str, marks: dict[int, tuple[int, int]]) -> dict[int, int]:
    """Each partition's end offset (the next one to be written), from its low and high
    watermarks.

    tansu (the embedded broker) reports as high watermark the first offset of the partition's
    last record batch plus one, not past the batch (nor does it signal the partition's end):
    reading every partition from there until no message comes for ``END_IDLE_SECONDS`` finds
    the true ends. On Kafka one message per partition is read, and the broker signals each end
    at once. Messages that keep coming are read for ``FETCH_TIMEOUT_SECONDS`` at most."""
    kafka = _kafka()
    ends = {p: high for p, (_, high) in marks.items()}
    pending = {p for p, (low, high) in marks.items() if high > low}
    if not pending:
        return ends
    client.assign([kafka.TopicPartition(topic, p, ends[p] - 1) for p in sorted(pending)])
    deadline = time.monotonic() + FETCH_TIMEOUT_SECONDS
    while pending and time.monotonic() < deadline:
        got = client.consume(10_000, timeout=END_IDLE_SECONDS)
        if not got:
            break
        for message in got:
            error = message.error()
            if error is None:
                ends[message.partition()] = max(ends[message.partition()], message.offset() + 1)
            elif error.code() == kafka.KafkaError._PARTITION_EOF:
                pending.discard(message.partition())
            else:
                raise ServiceUnavailable(f"reading the ends of topic {topic}: {error.str()}")
    return ends


def offset_ranges(scope: Scope) -> list[tuple[int, int, int]]:
    """(partition, first offset, end offset) of every partition of the scope's topic, now."""
    if scope.aggregate_id is not None or scope.event_types:
        raise InvalidRequest(
            "source 'kafka' replays a topic from a time on (to a time): it cannot select one"
            " aggregate or event types yet"
        )
    if scope.topic is None:
        raise InvalidRequest("source 'kafka' needs a topic")
    kafka = _kafka()
    client = consumer()
    try:
        marks = {}
        for p in partitions(client, scope.topic):
            tp = kafka.TopicPartition(scope.topic, p)
            try:
                marks[p] = client.get_watermark_offsets(
                    tp, timeout=METADATA_TIMEOUT_SECONDS, cached=False
                )
            except kafka.KafkaException as exc:
                raise _unreachable(exc) from None
        ends = log_ends(client, scope.topic, marks)
        ranges = []
        for p, (low, _) in marks.items():
            high = ends[p]
            start = low
            if scope.from_time is not None:
                start = offset_at(client, scope.topic, p, scope.from_time, low, high)
            end = high
            if scope.to_time is not None:
                end = offset_at(client, scope.topic, p, scope.to_time, low, high)
            ranges.append((p, start, max(start, end)))
        return ranges
    finally:
        client.close()


def slice_bounds(partition: int, start: int, end: int) -> SliceBounds:
    """A partition's offsets [start, end) as a slice's bounds (first and last, inclusive)."""
    return SliceBounds(
        first_aggregate=f"p{partition}@{start}", last_aggregate=f"p{partition}@{end - 1}"
    )


def partition_range(bounds: SliceBounds) -> tuple[int, int, int]:
    """(partition, start, end) of ``slice_bounds``."""
    assert bounds.first_aggregate is not None and bounds.last_aggregate is not None
    partition, _, first = bounds.first_aggregate[1:].partition("@")
    last = bounds.last_aggregate.partition("@")[2]
    return int(partition), int(first), int(last) + 1


@dataclass
class PartitionReader(SliceReader):
    """Reads one partition's offsets [start, end), in offset order, without joining a group."""

    _client: Any = field(default=None, repr=False)
    _committer: Any = field(default=None, repr=False)
    #: the offset the assigned consumer delivers next (None: not assigned)
    _next: int | None = None

    @property
    def topic(self) -> str:
        assert self.scope.topic is not None
        return self.scope.topic

    def read(self, conn: Connection, checkpoint: Checkpoint | None, limit: int) -> Batch:
        partition, start, end = partition_range(self.bounds)
        offset = int(checkpoint["offset"]) if checkpoint else start
        want = min(limit, end - offset)
        if want <= 0:
            self._close()
            return Batch([])
        if self._client is None:
            self._client = consumer()
        # A new assign only where the consumer is not already (a batch read again, a resume).
        messages = fetch(
            self._client, self.topic, partition, offset, want, assign=self._next != offset
        )
        messages = [m for m in messages if m.offset() < end]
        self._next = messages[-1].offset() + 1 if messages else None
        batch = Batch([])
        for message in messages:
            event, error = decode(message)
            batch.events.append(event)
            if error is not None:
                batch.poison[event["event_id"]] = error
        return batch

    def checkpoint_after(self, event: Mapping[str, Any]) -> Checkpoint:
        return {"offset": int(event["metadata"]["kafka"]["offset"]) + 1}

    def committed(self, job_id: UUID, checkpoint: Checkpoint) -> None:
        """The offset, to the job's own group ``replay-<job id>`` (best effort)."""
        partition, _, end = partition_range(self.bounds)
        try:
            if self._committer is None:
                self._committer = consumer(group=f"replay-{job_id}")
            offset = _kafka().TopicPartition(self.topic, partition, int(checkpoint["offset"]))
            self._committer.commit(offsets=[offset], asynchronous=False)
        except Exception:
            log.warning("job %s: the offset of partition %s was not committed to its group",
                        job_id, partition, exc_info=True)  # fmt: skip
        if int(checkpoint["offset"]) >= end and self._committer is not None:
            self._committer.close()
            self._committer = None

    def _close(self) -> None:
        for client in (self._client, self._committer):
            if client is not None:
                client.close()
        self._client = self._committer = None
        self._next = None


@source
class KafkaSource(Source):
    """A Kafka topic (see the module's docstring)."""

    name: ClassVar[str] = NAME
    slice_by: ClassVar[tuple[SliceBy, ...]] = (SliceBy.AGGREGATE,)
    reads_topics: ClassVar[bool] = True
    reader_class: ClassVar[type[SliceReader]] = PartitionReader

    def freeze(self, conn: Connection) -> str:
        # The frozen offsets are the slices' bounds (``plan``): this is when they were taken.
        return f"offsets at {datetime.now(UTC).isoformat()}"

    def missing_event_types(self, conn: Connection, event_types: tuple[str, ...]) -> list[str]:
        raise InvalidRequest("source 'kafka' cannot select event types yet")

    def known_event_types(self, conn: Connection, limit: int = 30) -> list[str]:
        return []

    def count(self, conn: Connection, scope: Scope, frozen: str) -> int:
        return sum(end - start for _, start, end in offset_ranges(scope))

    def plan(
        self, conn: Connection, scope: Scope, frozen: str, slice_by: SliceBy, slices: int
    ) -> list[PlannedSlice]:
        """One slice per partition with messages in scope (``slices`` is not used: cutting a
        partition into offset ranges is for handlers that need no order, not built yet)."""
        ranges = [(p, start, end) for p, start, end in offset_ranges(scope) if end > start]
        return [
            PlannedSlice(i, slice_bounds(p, start, end), end - start)
            for i, (p, start, end) in enumerate(ranges)
        ]

    def events(self, conn: Connection, event_ids: Sequence[UUID | str]) -> list[Event]:
        raise InvalidRequest(
            "the events of a Kafka job cannot be read again by id yet (retry-parked of a Kafka"
            " job is not built): replay the partition's offsets instead"
        )

    def describe_checkpoint(self, checkpoint: Checkpoint | None) -> str:
        return "start" if checkpoint is None else f"next offset {checkpoint['offset']}"
