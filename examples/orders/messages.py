"""``Order`` events as Kafka messages, for the tests and ``replay bench-kafka``: JSON values the
Kafka source's default decoding reads (``shared.sources.kafka_decoding``), keyed by order id.

The same order semantics as ``seed`` (an ``OrderPlaced`` first, then mostly ``ItemAdded``, a
status event now and then), with no ``sequence_num`` (the offset stands for it) and an
``event_id`` on every other message (the others get one derived from topic, partition and
offset): both ways of naming an event are exercised.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import Any

import orjson


def order_message(i: int, keys: int, *, placed: bool = False) -> tuple[str, bytes]:
    """The ``i``-th message of a stream that gives ``keys`` orders their events in turn
    (``placed``: the ``OrderPlaced`` that opens an order)."""
    key, n = i % keys, i // keys
    value: dict[str, Any] = {"aggregate_type": "Order"}
    if placed:
        value.update(event_type="OrderPlaced", payload={"customer": f"c-{key}"})
    elif (n + key) % 11 == 0:
        value.update(event_type=("PaymentProcessed", "OrderShipped")[n % 2], payload={})
    else:
        value.update(event_type="ItemAdded", payload={
            "sku": f"s{n}", "qty": 1 + (n + key) % 3, "price": f"{(key % 7) + 1}.25"})  # fmt: skip
    if i % 2:
        value["event_id"] = str(uuid.uuid4())
    return f"kafka-order-{key:06d}", orjson.dumps(value)


def send(producer: Any, topic: str, messages: Iterable[tuple[str | None, bytes]]) -> None:
    """Produce ``messages`` (key, value) to ``topic`` with a confluent-kafka ``Producer`` and
    wait until the broker has them all; a full queue waits for the producer to send."""
    for key, value in messages:
        while True:
            try:
                producer.produce(topic, key=key, value=value)
                break
            except BufferError:
                producer.poll(0.1)
    if producer.flush(120) != 0:
        raise RuntimeError(f"the broker did not take every message of topic {topic}")
