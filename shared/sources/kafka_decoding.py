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

Another encoding (Avro, Protobuf, a JSON of another shape) is a decoder, plugged in like a
handler: a function of a ``Message`` that returns the event's fields (the same fields as the JSON
object above, the same defaults for what it leaves out; an ``aggregate_id`` it returns wins
over the key), declared with ``@decoder("name")`` in a
module of ``REPLAY_HANDLER_MODULES``, and named by the job (``decoder="name"``). It raises
``ValueError`` (any exception) for a message it cannot decode: that message is a poison event.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

import orjson

from shared.errors import ConfigurationError, InvalidRequest, MalformedEvent
from shared.handlers import Event
from shared.store import shorten

#: the namespace of the event ids derived from topic/partition/offset (fixed for ever: changing
#: it makes every derived event look unprocessed)
NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "event-replay:kafka")
#: confluent-kafka's TIMESTAMP_NOT_AVAILABLE (a message without a timestamp)
NO_TIMESTAMP = 0


@dataclass(frozen=True)
class Message:
    """A Kafka message as a decoder sees it."""

    topic: str
    partition: int
    offset: int
    #: the broker's or the producer's timestamp (None if the message has none)
    timestamp: datetime | None
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes | None], ...] = ()


#: a message's event fields (see the module's docstring); raises for a message it cannot decode
Decoder = Callable[[Message], Mapping[str, Any]]
#: the name of the default decoding (a JSON object of the event's fields)
JSON = "json"
_DECODERS: dict[str, Decoder] = {}


def decoder(name: str) -> Callable[[Decoder], Decoder]:
    """Function decorator: make ``name`` a decoder a Kafka job can name (``decoder=name``)."""

    def register(function: Decoder) -> Decoder:
        existing = _DECODERS.get(name)
        if existing is not None and existing is not function:
            raise ConfigurationError(f"two Kafka decoders are named {name!r}")
        _DECODERS[name] = function
        return function

    if not isinstance(name, str) or not name:
        raise ConfigurationError(f"a Kafka decoder needs a name, got {shorten(name)}")
    return register


def get_decoder(name: str | None) -> Decoder | None:
    """The decoder named ``name`` (None for the default, which is built in); ``InvalidRequest``
    for a name no module of this process declared."""
    if name is None or name == JSON:
        return None
    found = _DECODERS.get(name)
    if found is None:
        raise InvalidRequest(
            f"unknown Kafka decoder {shorten(name)} (known: {', '.join(decoder_names())}; declare"
            " one with @decoder in a module of REPLAY_HANDLER_MODULES)"
        )
    return found


def decoder_names() -> list[str]:
    return sorted({JSON, *_DECODERS})


def event_id(topic: str, partition: int, offset: int) -> uuid.UUID:
    """The id of the message at ``offset`` of ``partition`` of ``topic`` without its own."""
    return uuid.uuid5(NAMESPACE, f"{topic}/{partition}/{offset}")


def decode(message: Any, plugged: Decoder | None = None) -> tuple[Event, MalformedEvent | None]:
    """The confluent-kafka message as an event, and the reason it cannot be applied (None if
    it can); ``plugged``: the job's decoder, else the value is a JSON object of the fields."""
    topic, partition, offset = message.topic(), message.partition(), message.offset()
    kind, millis = message.timestamp()
    try:
        stamp = None if kind == NO_TIMESTAMP else datetime.fromtimestamp(millis / 1000, UTC)
    except (ValueError, OverflowError, OSError):
        stamp = None  # a timestamp datetime cannot hold: as if none (occurred_at then decides)
    where = {"topic": topic, "partition": partition, "offset": offset,
             "timestamp": stamp.isoformat() if stamp else None}  # fmt: skip
    event: dict[str, Any] = {
        "event_id": event_id(topic, partition, offset), "aggregate_id": "", "aggregate_type": "",
        "event_type": "", "payload": {}, "metadata": {"kafka": where}, "sequence_num": offset,
        "occurred_at": stamp,
    }  # fmt: skip
    try:
        if plugged is None:
            data = _json_object(message.value())
        else:
            headers = tuple(message.headers() or ())
            view = Message(topic, partition, offset, stamp, message.key(), message.value(), headers)
            data = _plugged(plugged, view)
        # a plugged decoder's aggregate_id wins over the key (it knows the encoding)
        key = None if plugged is not None and "aggregate_id" in data else message.key()
        fields = _fields(key, data)
    except ValueError as exc:
        error = MalformedEvent(
            f"message at offset {offset} of partition {partition} of topic {topic} cannot be"
            f" decoded: {exc}"
        )
        key = message.key()
        if key is not None:
            text = key.decode("utf-8", "replace")
            event["aggregate_id"] = key.hex() if "\x00" in text else text
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


def _json_object(value: bytes | None) -> Mapping[str, Any]:
    """The default decoding: the value, a JSON object of the event's fields."""
    if value is None:
        raise ValueError("no value (a tombstone)")
    try:
        data = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"the value is not JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ValueError(f"the value is JSON {type(data).__name__}, not an object")
    return data


def _plugged(plugged: Decoder, message: Message) -> Mapping[str, Any]:
    """What a plugged decoder makes of ``message``; any error of it is a ``ValueError``."""
    try:
        data = plugged(message)
    except Exception as exc:
        raise ValueError(f"{type(exc).__name__}: {exc}") from exc
    if not isinstance(data, Mapping):
        raise ValueError(f"the decoder returned {type(data).__name__}, not a mapping")
    return data


def _fields(key: bytes | None, data: Mapping[str, Any]) -> dict[str, Any]:
    """The event's fields of ``data`` (and ``key``), checked; ``ValueError`` says what is
    wrong."""
    fields: dict[str, Any] = {}
    if key is not None:
        try:
            fields["aggregate_id"] = key.decode("utf-8")
        except UnicodeDecodeError:
            raise ValueError("the key is not UTF-8 text (a binary key needs a decoder)") from None
        if "\x00" in fields["aggregate_id"]:
            raise ValueError("the key holds NUL bytes (a binary key needs a decoder)")
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
