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
(every key lies in one partition); for a handler that needs no order, ``slice_by="time"`` cuts
the partitions into offset ranges (more slices than partitions, for more workers). The frozen
offsets are the slice's bounds, written in the aggregate-range columns as ``p<partition>@<offset>``
(first and last offset, inclusive), so that no column was added; the job's own frozen text is
the planning instant, for people.

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

import itertools
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar
from uuid import UUID

from shared.db import Connection
from shared.errors import InvalidRequest, SourceUnavailable
from shared.handlers import Event
from shared.scope import Scope, SliceBounds
from shared.slicing import PlannedSlice, SliceBy
from shared.sources import Batch, Checkpoint, SliceReader, Source, source
from shared.sources.kafka_client import (
    BOOTSTRAP_ENV,
    EPOCH,
    METADATA_TIMEOUT_SECONDS,
    bootstrap,
    check_group,
    check_retained,
    close_later,
    consumer,
    fetch,
    fetch_until_idle,
    kafka_module,
    log_ends,
    offset_at,
    partitions,
    unreachable,
)
from shared.sources.kafka_decoding import Decoder, decode, get_decoder

__all__ = ["BOOTSTRAP_ENV", "NAME", "KafkaSource", "PartitionReader", "bootstrap"]

log = logging.getLogger(__name__)

NAME = "kafka"


def offset_ranges(scope: Scope) -> list[tuple[int, int, int]]:
    """(partition, first offset, end offset) of every partition of the scope's topic, now."""
    if scope.aggregate_id is not None or scope.event_types:
        raise InvalidRequest(
            "source 'kafka' replays a topic from a time on (to a time): it cannot select one"
            " aggregate or event types yet"
        )
    if scope.topic is None:
        raise InvalidRequest("source 'kafka' needs a topic")
    get_decoder(scope.decoder)  # a decoder this process does not know, before the broker
    kafka = kafka_module()
    client = consumer()
    try:
        marks = {}
        found = partitions(client, scope.topic)
        if scope.group is not None:
            check_group(scope.group, scope.topic, found)
        for p in found:
            tp = kafka.TopicPartition(scope.topic, p)
            try:
                marks[p] = client.get_watermark_offsets(
                    tp, timeout=METADATA_TIMEOUT_SECONDS, cached=False
                )
            except kafka.KafkaException as exc:
                raise unreachable(exc) from None
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


def cut(ranges: list[tuple[int, int, int]], slices: int) -> list[tuple[int, int, int]]:
    """The partitions' offset ranges cut into about ``slices`` ranges of about equal size
    (each partition into at least one, at most one per message)."""
    total = sum(end - start for _, start, end in ranges)
    out = []
    for partition, start, end in ranges:
        size = end - start
        pieces = min(size, max(1, round(slices * size / total)))
        bounds = [start + size * i // pieces for i in range(pieces + 1)]
        out += [(partition, a, b) for a, b in itertools.pairwise(bounds)]
    return out


def slice_bounds(partition: int, start: int, end: int, *, cut: bool = False) -> SliceBounds:
    """A partition's offsets [start, end) as a slice's bounds (first and last, inclusive);
    ``cut``: one of several ranges of the partition, marked by a ``from_time`` (the epoch),
    whose reader commits nothing to the job's group."""
    return SliceBounds(
        first_aggregate=f"p{partition}@{start}", last_aggregate=f"p{partition}@{end - 1}",
        from_time=EPOCH if cut else None,
    )  # fmt: skip


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

    @property
    def decoder(self) -> Decoder | None:
        return get_decoder(self.scope.decoder)

    def read(self, conn: Connection, checkpoint: Checkpoint | None, limit: int) -> Batch:
        partition, start, end = partition_range(self.bounds)
        offset = int(checkpoint["offset"]) if checkpoint else start
        want = min(limit, end - offset)
        if want <= 0:
            self._close()
            return Batch([])
        if self._client is None:
            self._client = consumer()
        # A new assign only where the consumer is not already (a batch read again, a resume),
        # or after the log's end was signalled (it is signalled once per assign).
        try:
            messages, at_end = fetch(
                self._client, self.topic, partition, offset, want, assign=self._next != offset
            )
        except SourceUnavailable:
            self._next = None
            check_retained(self._client, self.topic, partition, offset, end)
            raise
        if at_end and not messages:
            # The broker says the log ends here; tansu says so short of its true end: read on
            # until nothing comes before taking it at its word.
            messages = fetch_until_idle(self._client, self.topic, partition, offset, want)
        messages = [m for m in messages if m.offset() < end]
        self._next = None if at_end or not messages else messages[-1].offset() + 1
        if not messages:
            # The log ended before the slice did: gone (SourceLost), or offsets without a
            # message (a transaction's markers, compaction), and the slice is done.
            check_retained(self._client, self.topic, partition, offset, end)
            self._close()
            return Batch([])
        batch = Batch([])
        plugged = self.decoder
        for message in messages:
            event, error = decode(message, plugged)
            batch.events.append(event)
            if error is not None:
                batch.poison[event["event_id"]] = error
        return batch

    def checkpoint_after(self, event: Mapping[str, Any]) -> Checkpoint:
        return {"offset": int(event["metadata"]["kafka"]["offset"]) + 1}

    def committed(self, job_id: UUID, checkpoint: Checkpoint) -> None:
        """The offset, to the job's own group (``replay-<job id>`` unless the job names one),
        best effort and asynchronously: a broker that hangs never holds the slice up. A range
        of a cut partition (``slice_by="time"``) commits nothing: ranges of one partition run at
        once, and no one offset says where they are."""
        if self.bounds.from_time is not None:
            return
        partition, _, end = partition_range(self.bounds)
        try:
            if self._committer is None:
                self._committer = consumer(group=self.scope.group or f"replay-{job_id}")
            offset = kafka_module().TopicPartition(self.topic, partition, int(checkpoint["offset"]))
            self._committer.commit(offsets=[offset], asynchronous=True)
            self._committer.poll(0)  # serves the results of earlier commits
        except Exception:
            log.warning("job %s: the offset of partition %s was not committed to its group",
                        job_id, partition, exc_info=True)  # fmt: skip
        if int(checkpoint["offset"]) >= end and self._committer is not None:
            close_later(self._committer)  # sends what is pending
            self._committer = None

    def _close(self) -> None:
        for client in (self._client, self._committer):
            if client is not None:
                close_later(client)
        self._client = self._committer = None
        self._next = None


@source
class KafkaSource(Source):
    """A Kafka topic (see the module's docstring)."""

    name: ClassVar[str] = NAME
    #: by time: offset ranges of partitions, for a handler that needs no order
    slice_by: ClassVar[tuple[SliceBy, ...]] = (SliceBy.AGGREGATE, SliceBy.TIME)
    reads_topics: ClassVar[bool] = True
    reader_class: ClassVar[type[SliceReader]] = PartitionReader

    def __init__(self) -> None:
        #: the last planning's offsets, by its frozen text: ``count`` and ``plan`` of one
        #: planning see the same offsets, read from the broker once
        self._ranges: tuple[str, list[tuple[int, int, int]]] | None = None

    def freeze(self, conn: Connection) -> str:
        # The frozen offsets are the slices' bounds (``plan``): this is when they were taken.
        return f"offsets at {datetime.now(UTC).isoformat()}"

    def ranges(self, scope: Scope, frozen: str) -> list[tuple[int, int, int]]:
        """``offset_ranges`` of the scope, once per planning (``frozen`` tells them apart)."""
        if self._ranges is None or self._ranges[0] != frozen:
            self._ranges = (frozen, offset_ranges(scope))
        return self._ranges[1]

    def missing_event_types(self, conn: Connection, event_types: tuple[str, ...]) -> list[str]:
        raise InvalidRequest("source 'kafka' cannot select event types yet")

    def known_event_types(self, conn: Connection, limit: int = 30) -> list[str]:
        return []

    def count(self, conn: Connection, scope: Scope, frozen: str) -> int:
        return sum(end - start for _, start, end in self.ranges(scope, frozen))

    def plan(
        self, conn: Connection, scope: Scope, frozen: str, slice_by: SliceBy, slices: int
    ) -> list[PlannedSlice]:
        """By aggregate: one slice per partition with messages in scope (a key's messages
        are all in its partition, in offset order). By time (only for a handler that needs no
        order): about ``slices`` slices, each partition cut into offset ranges in proportion to
        its messages."""
        ranges = [(p, start, end) for p, start, end in self.ranges(scope, frozen) if end > start]
        cut_up = slice_by is SliceBy.TIME
        if cut_up:
            ranges = cut(ranges, slices)
        return [
            PlannedSlice(i, slice_bounds(p, start, end, cut=cut_up), end - start)
            for i, (p, start, end) in enumerate(ranges)
        ]

    def events(self, conn: Connection, event_ids: Sequence[UUID | str]) -> list[Event]:
        raise InvalidRequest(
            "the messages of a Kafka topic cannot be found by event id: by their partition and"
            " offset only (``reread``)"
        )

    def reread(
        self, conn: Connection, scope: Scope, parked: Sequence[Mapping[str, Any]]
    ) -> list[Event]:
        """Each parked message read again where it lies (its ``metadata["kafka"]``) and decoded
        with the job's decoder; ``MalformedEvent`` if one still cannot be decoded."""
        assert scope.topic is not None
        plugged = get_decoder(scope.decoder)
        client = consumer()
        try:
            events = []
            for row in parked:
                partition, offset = _position(row)
                got, _ = fetch(client, scope.topic, partition, offset, 1)
                if not got or got[0].offset() != offset:
                    raise InvalidRequest(
                        f"the message at offset {offset} of partition {partition} of topic"
                        f" {scope.topic} is no longer retained by the broker"
                    )
                event, error = decode(got[0], plugged)
                if error is not None:
                    raise error
                events.append(event)
            return events
        finally:
            client.close()

    def describe_bounds(self, bounds: SliceBounds) -> str:
        partition, start, end = partition_range(bounds)
        return f"partition {partition} offsets {start:,} … {end - 1:,}"

    def describe_parked(self, parked: Mapping[str, Any]) -> str:
        try:
            partition, offset = _position(parked)
        except InvalidRequest:
            return "position unknown"
        return f"partition {partition} offset {offset}"

    def describe_checkpoint(self, checkpoint: Checkpoint | None) -> str:
        return "start" if checkpoint is None else f"next offset {checkpoint['offset']}"


def _position(parked: Mapping[str, Any]) -> tuple[int, int]:
    """(partition, offset) of a parked message, from the metadata it was parked with."""
    where = (parked.get("metadata") or {}).get("kafka") or {}
    if "partition" not in where or "offset" not in where:
        raise InvalidRequest(
            f"parked event {parked.get('event_id')} has no partition and offset (parked before"
            " migration 0009): replay its partition instead"
        )
    return int(where["partition"]), int(where["offset"])
