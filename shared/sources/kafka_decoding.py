"""Kafka messages as the ``Event`` mapping every handler gets (the default decoding of
``shared.sources.kafka``).

The value is a JSON object carrying the event's fields: ``event_type`` (required), and
optionally ``event_id`` (a UUID), ``aggregate_type``, ``payload`` and ``metadata`` (objects),
``sequence_num`` (an integer) and ``occurred_at`` (ISO-8601 with a time zone). The key is the
``aggregate_id`` (the value's ``aggregate_id`` only for a message without a key). What the value
does not carry is derived from the message: the ``event_id`` from topic, partition and offset
(uuid5, the same on every read), the ``sequence_num`` from the offset (per-key order is offset
order), ``occurred_at`` from the message's timestamp. ``metadata["kafka"]`` is the message's
topic, partition, offset and timestamp.

A message that cannot be decoded still becomes an event (its id derived, its type empty) with a
``MalformedEvent`` beside it that names the message: the job's ``on_error`` policy takes it.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, cast

import orjson

from shared.errors import MalformedEvent
from shared.handlers import Event

#: the namespace of the event ids derived from topic/partition/offset (fixed for ever: changing
#: it makes every derived event look unprocessed)
NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "event-replay:kafka")
#: confluent-kafka's TIMESTAMP_NOT_AVAILABLE (a message without a timestamp)
NO_TIMESTAMP = 0


def event_id(topic: str, partition: int, offset: int) -> uuid.UUID:
    """The id of the message at ``offset`` of ``partition`` of ``topic`` without its own."""
    return uuid.uuid5(NAMESPACE, f"{topic}/{partition}/{offset}")


def decode(message: Any) -> tuple[Event, MalformedEvent | None]:
    """The message as an event, and the reason it cannot be applied (None if it can)."""
    topic, partition, offset = message.topic(), message.partition(), message.offset()
    kind, millis = message.timestamp()
    stamp = None if kind == NO_TIMESTAMP else datetime.fromtimestamp(millis / 1000, UTC)
    where = {"topic": topic, "partition": partition, "offset": offset,
             "timestamp": stamp.isoformat() if stamp else None}  # fmt: skip
    event: dict[str, Any] = {
        "event_id": event_id(topic, partition, offset), "aggregate_id": "", "aggregate_type": "",
        "event_type": "", "payload": {}, "metadata": {"kafka": where}, "sequence_num": offset,
        "occurred_at": stamp,
    }  # fmt: skip
    try:
        fields = _fields(message.key(), message.value())
    except ValueError as exc:
        error = MalformedEvent(
            f"message at offset {offset} of partition {partition} of topic {topic} cannot be"
            f" decoded: {exc}"
        )
        key = message.key()
        if key is not None:
            event["aggregate_id"] = key.decode("utf-8", "replace")
        return _event(event), error
    metadata = fields.pop("metadata", {})
    event.update(fields)
    event["metadata"] = {**metadata, "kafka": where}
    if event["occurred_at"] is None:
        return _event(event), MalformedEvent(
            f"message at offset {offset} of partition {partition} of topic {topic} has no"
            " timestamp and no occurred_at"
        )
    return _event(event), None


def _event(fields: dict[str, Any]) -> Event:
    return cast(Event, fields)


def _fields(key: bytes | None, value: bytes | None) -> dict[str, Any]:
    """The event's fields that the message carries; ``ValueError`` says what is wrong."""
    if value is None:
        raise ValueError("no value (a tombstone)")
    try:
        data = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"the value is not JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ValueError(f"the value is JSON {type(data).__name__}, not an object")
    fields: dict[str, Any] = {}
    if key is not None:
        try:
            fields["aggregate_id"] = key.decode("utf-8")
        except UnicodeDecodeError:
            raise ValueError("the key is not UTF-8 text") from None
    elif isinstance(data.get("aggregate_id"), str):
        fields["aggregate_id"] = data["aggregate_id"]
    else:
        raise ValueError("no key and no aggregate_id")
    if not isinstance(data.get("event_type"), str) or not data["event_type"]:
        raise ValueError("no event_type")
    fields["event_type"] = data["event_type"]
    for name, kind in (("aggregate_type", str), ("payload", dict), ("metadata", dict)):
        if name in data:
            if not isinstance(data[name], kind):
                raise ValueError(f"{name} is not a JSON {'string' if kind is str else 'object'}")
            fields[name] = data[name]
    if "event_id" in data:
        try:
            fields["event_id"] = uuid.UUID(str(data["event_id"]))
        except ValueError:
            raise ValueError("event_id is not a UUID") from None
    if "sequence_num" in data:
        seq = data["sequence_num"]
        if type(seq) is not int:
            raise ValueError("sequence_num is not an integer")
        fields["sequence_num"] = seq
    if "occurred_at" in data:
        fields["occurred_at"] = _timestamp(data["occurred_at"])
    return fields


def _timestamp(value: Any) -> datetime:
    if not isinstance(value, str):
        raise ValueError("occurred_at is not an ISO-8601 string")
    text = value[:-1] + "+00:00" if value.endswith(("Z", "z")) else value
    try:
        stamp = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError("occurred_at is not an ISO-8601 timestamp") from None
    if stamp.tzinfo is None:
        raise ValueError("occurred_at has no time zone")
    return stamp
