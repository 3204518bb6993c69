"""Flower as the README starts it: on 127.0.0.1 only, and nothing without the password.

Flower shows task arguments, results and tracebacks and can revoke tasks, so the README's command
carries authentication (issue 11, item 5). A real Flower process, real HTTP.
"""

from __future__ import annotations

import base64
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from shared.settings import Settings
from tests.support import ROOT, WORKER_ENV

pytestmark = pytest.mark.integration

USER, PASSWORD = "admin", "flower-test-pw"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def flower(settings: Settings, tmp_path: Path) -> Iterator[int]:
    port = free_port()
    env = {
        **os.environ, **settings.as_env(), **WORKER_ENV,
        "FLOWER_BASIC_AUTH": f"{USER}:{PASSWORD}", "FLOWER_DB": str(tmp_path / "flower.db"),
    }  # fmt: skip
    # The README's command (`replay flower`), but for the port.
    proc = subprocess.Popen(
        [sys.executable, "-m", "scheduler.cli", "flower", f"--port={port}"],
        env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while status(port, None) is None:
            assert proc.poll() is None, "flower exited"
            assert time.monotonic() < deadline, "flower did not listen within 30 s"
            time.sleep(0.2)
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=15)


def status(port: int, auth: str | None, host: str = "127.0.0.1", path: str = "/") -> int | None:
    request = urllib.request.Request(f"http://{host}:{port}{path}")
    if auth is not None:
        request.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return None


def test_flower_needs_the_password_and_listens_on_loopback_only(flower: int) -> None:
    assert status(flower, None) == 401
    assert status(flower, f"{USER}:wrong") == 401
    assert status(flower, f"{USER}:{PASSWORD}") == 200
    assert status(flower, None, path="/api/workers") == 401
    assert status(flower, f"{USER}:{PASSWORD}", path="/api/workers") == 200
    # Bound to 127.0.0.1: another address of this machine does not answer.
    other = socket.gethostbyname(socket.gethostname())
    if not other.startswith("127."):
        assert status(flower, f"{USER}:{PASSWORD}", host=other) is None
