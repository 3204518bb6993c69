"""Kafka messages as events (``shared.sources.kafka_decoding``): what the default decoding takes
from the value, the key and the message, and what makes a message a poison event. No broker: a
message is its six accessors, as confluent-kafka's ``Message`` has them."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest

from shared.errors import MalformedEvent
from shared.sources.kafka_decoding import decode, event_id

STAMP = 1_790_000_000_123  # ms


@dataclass
class Message:
    _value: bytes | None
    _key: bytes | None = b"order-7"
    _offset: int = 41
    _timestamp: tuple[int, int] = (2, STAMP)  # TIMESTAMP_LOG_APPEND_TIME

    def topic(self) -> str:
        return "orders"

    def partition(self) -> int:
        return 3

    def offset(self) -> int:
        return self._offset

    def timestamp(self) -> tuple[int, int]:
        return self._timestamp

    def key(self) -> bytes | None:
        return self._key

    def value(self) -> bytes | None:
        return self._value


def value(**fields: Any) -> bytes:
    return json.dumps({"event_type": "ItemAdded", **fields}).encode()


def test_the_message_fills_in_what_the_value_does_not_carry() -> None:
    event, error = decode(Message(value(payload={"qty": 1}, metadata={"by": "me"})))
    assert error is None
    stamp = datetime(2026, 9, 21, 14, 13, 20, 123000, tzinfo=UTC)
    assert event == {
        "event_id": event_id("orders", 3, 41), "aggregate_id": "order-7", "aggregate_type": "",
        "event_type": "ItemAdded", "payload": {"qty": 1}, "sequence_num": 41,
        "occurred_at": stamp,
        "metadata": {"by": "me", "kafka": {"topic": "orders", "partition": 3, "offset": 41,
                                           "timestamp": stamp.isoformat()}},
    }  # fmt: skip
    # Derived ids are the same on every read, and differ by position.
    assert event_id("orders", 3, 41) == decode(Message(value()))[0]["event_id"]
    assert event_id("orders", 3, 42) != event_id("orders", 3, 41) != event_id("orders", 2, 41)


def test_the_value_carries_the_events_own_fields() -> None:
    own = uuid.uuid4()
    event, error = decode(
        Message(value(event_id=str(own), aggregate_type="Order", sequence_num=9,
                      occurred_at="2026-01-02T03:04:05Z", aggregate_id="ignored"))
    )  # fmt: skip
    assert error is None
    assert (event["event_id"], event["aggregate_type"], event["sequence_num"]) == (own, "Order", 9)
    assert event["occurred_at"] == datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert event["aggregate_id"] == "order-7"  # the key wins
    keyless, error = decode(Message(value(aggregate_id="order-8"), _key=None))
    assert error is None and keyless["aggregate_id"] == "order-8"


@pytest.mark.parametrize(
    ("raw", "key", "reason"),
    [
        (b"{not json", b"k", "the value is not JSON"),
        (b"[1, 2]", b"k", "the value is JSON list, not an object"),
        (None, b"k", "no value (a tombstone)"),
        (value(), b"\xff\xfe", "the key is not UTF-8 text"),
        (value(), None, "no key and no aggregate_id"),
        (json.dumps({"payload": {}}).encode(), b"k", "no event_type"),
        (value(payload=[1]), b"k", "payload is not a JSON object"),
        (value(event_id="x"), b"k", "event_id is not a UUID"),
        (value(sequence_num=True), b"k", "sequence_num is not an integer"),
        (value(occurred_at="2026-01-02T03:04:05"), b"k", "occurred_at has no time zone"),
    ],
)
def test_a_message_that_cannot_be_decoded_is_a_poison_event(
    raw: bytes | None, key: bytes | None, reason: str
) -> None:
    event, error = decode(Message(raw, _key=key))
    assert isinstance(error, MalformedEvent)
    assert str(error).startswith("message at offset 41 of partition 3 of topic orders")
    assert str(error).endswith(reason) or f"{reason} (" in str(error)
    # Still an event, for the error policy: its id derived, nothing of the value in it.
    assert event["event_id"] == event_id("orders", 3, 41)
    assert (event["event_type"], event["payload"], event["sequence_num"]) == ("", {}, 41)


def test_a_binary_key_and_an_impossible_timestamp_make_a_poison_event_not_a_crash() -> None:
    placed = b'{"event_type": "OrderPlaced"}'
    event, error = decode(Message(placed, b"\x00\x00\x00\x00\x07ord-1"))
    assert error is not None and "NUL bytes" in str(error)
    assert event["aggregate_id"] == "00000000076f72642d31"  # shown as hex, storable as text
    event, error = decode(Message(placed, _timestamp=(1, 2**62)))
    assert error is not None and "no timestamp" in str(error)
