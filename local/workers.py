"""Starting and stopping real ``celery worker`` processes (for the demo, the tests and the
benchmarks), and waiting until they listen."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from kombu.exceptions import KombuError
from redis.exceptions import RedisError

from shared.celeryconf import close_app, control_app
from shared.errors import ServiceUnavailable
from shared.settings import Settings


@dataclass
class WorkerProcess:
    """One ``celery -A worker worker`` process with its own node name."""

    settings: Settings
    name: str
    concurrency: int = 1
    queues: tuple[str, ...] = ()
    pool: str = "prefork"
    extra_args: tuple[str, ...] = ()
    log_path: Path | None = None
    extra_env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> WorkerProcess:
        env = {**os.environ, **self.settings.as_env(), **self.extra_env}
        queues = ",".join(self.queues or (self.settings.queue,))
        cmd = [
            sys.executable, "-m", "celery", "-A", "worker", "worker",
            "-Q", queues, "--concurrency", str(self.concurrency), "--pool", self.pool,
            "--hostname", f"{self.name}@%h", "--without-gossip", "--without-mingle",
            "--loglevel", "INFO", *self.extra_args,
        ]  # fmt: skip
        out = open(self.log_path, "ab") if self.log_path else None  # noqa: SIM115
        try:
            self.process = subprocess.Popen(
                cmd,
                env=env,
                stdout=out or subprocess.DEVNULL,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        finally:
            if out is not None:
                out.close()  # the child has its own descriptor
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL the worker and its pool children at once, as an OOM killer would."""
        if self.process is not None and self.alive():
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def stop(self, timeout: float = 20.0) -> None:
        """Warm shutdown (SIGTERM: finish the current task), then SIGKILL if it lingers."""
        if self.process is None or not self.alive():
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()


@contextlib.contextmanager
def running_workers(
    settings: Settings, count: int, prefix: str, log_dir: Path
) -> Iterator[list[WorkerProcess]]:
    """``count`` worker processes, started and ready (they answer a ping); stopped on exit."""
    procs = [
        WorkerProcess(settings, f"{prefix}{i + 1}", log_path=log_dir / f"{prefix}-{i + 1}.log")
        for i in range(count)
    ]
    try:
        for p in procs:
            p.start()
        wait_until_ready(settings, [p.name for p in procs], workers=procs)
        yield procs
    finally:
        for p in procs:
            p.stop()


def scheduler_process(
    settings: Settings, name: str, schedule_file: Path, **kwargs: object
) -> WorkerProcess:
    """The scheduler: Celery beat (the periodic reconciler) embedded in a one-process worker that
    consumes only the control queue, so reconciling never waits behind slices."""
    return WorkerProcess(
        settings, name, queues=(settings.control_queue,), pool="solo",
        extra_args=("--beat", "--schedule", str(schedule_file)), **kwargs,  # type: ignore[arg-type]
    )  # fmt: skip


def wait_until_ready(
    settings: Settings,
    names: list[str],
    timeout: float = 60.0,
    workers: list[WorkerProcess] | None = None,
) -> None:
    """Block until every named worker answers a ping (so that timings start with workers up)."""
    app = control_app(settings)
    deadline = time.monotonic() + timeout
    want = set(names)
    try:
        while time.monotonic() < deadline:
            for w in workers or []:
                if not w.alive():
                    code = w.process.returncode if w.process is not None else None
                    raise ServiceUnavailable(f"worker {w.name} exited with code {code}")
            try:
                replies = app.control.ping(timeout=0.5) or []
            except (OSError, KombuError, RedisError):  # a broker connection gone stale: retry
                time.sleep(0.2)
                continue
            seen = {name.split("@", 1)[0] for reply in replies for name in reply}
            if want <= seen:
                return
        raise ServiceUnavailable(f"workers {sorted(want)} did not start within {timeout:.0f} s")
    finally:
        close_app(app)
