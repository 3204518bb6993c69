"""The stack's state file (``stack.json``): its ports, its servers' processes and its users.

Only ever a memory: a lost record means a server is not stopped, never that another process is.
"""

from __future__ import annotations

import json
import os
import socket
import zlib
from pathlib import Path
from typing import Any

from local import pids
from shared.errors import EmbeddedServerError

# Ports for the servers: below Linux's ephemeral range (32768-60999), three per home
# (PostgreSQL, Redis, Kafka: the ``offset`` of ``port``).
PORT_RANGE = (20000, 30000)
PORTS_PER_HOME = 3
PORT_SLOTS = (PORT_RANGE[1] - PORT_RANGE[0]) // PORTS_PER_HOME
#: stack.json's "version": a home without it predates the secret (trust, open Redis)
STATE_VERSION = 2


def records(state: dict[str, Any]) -> dict[str, Any]:
    """stack.json's ``processes``: server -> the process started for it (pids.Process)."""
    records = state.get("processes")
    if not isinstance(records, dict):
        records = state["processes"] = {}
    return records


def port(state: dict[str, Any], key: str, home_dir: Path, offset: int) -> int:
    """The port a server is started on: the one it had (so URLs exported in other terminals stay
    valid), else one derived from the home's path, outside the kernel's ephemeral range (where
    a client socket could take it between our check and the server's bind), the next free one
    if that is taken."""
    preferred = state.get(key)
    if isinstance(preferred, int) and port_free(preferred):
        return preferred
    slot = zlib.crc32(str(home_dir).encode()) % PORT_SLOTS
    base = PORT_RANGE[0] + PORTS_PER_HOME * slot + offset
    for step in range(0, PORTS_PER_HOME * 200, PORTS_PER_HOME):
        port = PORT_RANGE[0] + (base - PORT_RANGE[0] + step) % (PORT_RANGE[1] - PORT_RANGE[0])
        if port_free(port):
            return port
    raise EmbeddedServerError(f"no free TCP port on 127.0.0.1 in {PORT_RANGE[0]}-{PORT_RANGE[1]}")


def port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # As the servers do: a port just left by our own server is in TIME_WAIT, not taken.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def me() -> list[int]:
    return [os.getpid(), pids.start_time(os.getpid()) or 0]


def live_users(state: dict[str, Any]) -> list[list[int]]:
    """The registered users that still run (the same pid and the same start time, so that a
    reused pid is not taken for the process that registered)."""
    users = []
    for entry in state.get("users", []):
        try:
            pid, started = int(entry[0]), int(entry[1])
        except (TypeError, ValueError, IndexError):
            continue
        if pids.start_time(pid) == started:
            users.append([pid, started])
    return users


def read_state(path: Path) -> dict[str, Any]:
    """stack.json, or empty if missing or unreadable: it only remembers ports, processes and
    users (a lost record means a server is not stopped, never that another process is)."""
    try:
        state = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except ValueError:
        return {}
    return state if isinstance(state, dict) else {}


def write_state(path: Path, state: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    try:
        tmp.write_text(json.dumps(state, indent=2, sort_keys=True) + "\n")
        tmp.replace(path)  # atomic: an unlocked reader (peek) sees one version or the other
    except OSError as exc:
        raise EmbeddedServerError(f"cannot write {path}: {exc}") from exc
