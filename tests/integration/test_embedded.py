"""The embedded servers (``event-replay[embedded]``), as a newcomer meets them.

The machine's own PostgreSQL and Redis stay up; "nothing answers" is simulated by pointing the
local defaults (``REPLAY_LOCAL_POSTGRES`` / ``REPLAY_LOCAL_REDIS``) at unused ports and leaving the
explicit URLs unset. Every command is a real ``replay`` process; the workers are real ``celery
worker`` processes talking to the embedded Redis and PostgreSQL.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from local import embedded, kafka, servers
from local.servers import KAFKA_ENV, REDIS_ENV
from local.workers import WorkerProcess, wait_until_ready
from shared.settings import Settings
from tests.support import ROOT

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(embedded.binaries() is None, reason="event-replay[embedded] not installed"),
]

#: what `replay up` starts: the embedded Kafka too where event-replay[kafka] is installed
UP_SERVERS = embedded.ALL if kafka.binary() is not None else embedded.SERVERS
UP_EXPORTS = {
    "REPLAY_DATABASE_URL",
    *REDIS_ENV,
    *([KAFKA_ENV] if embedded.KAFKA in UP_SERVERS else []),
}


def unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def stack_home() -> Iterator[Path]:
    # Not pytest's tmp_path: its parents are 0700, and under root the embedded PostgreSQL runs
    # as another user, who must be able to enter the directory.
    parent = Path(tempfile.mkdtemp(prefix="replay-embedded-"))
    parent.chmod(0o755)
    home = parent / ".replay"
    try:
        yield home
    finally:
        found = embedded.binaries()
        for state in parent.glob("*/stack.json"):  # whatever a failed test left running
            if found is not None:
                embedded.EmbeddedStack(state.parent, found).down()
        shutil.rmtree(parent, ignore_errors=True)


@pytest.fixture
def bare_env(stack_home: Path) -> dict[str, str]:
    """An environment that names no server, with the local default ports answering nothing."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("REPLAY_DATABASE_URL", *REDIS_ENV, KAFKA_ENV)
        and not k.startswith("REPLAY_TEST")
    }
    env.update(
        REPLAY_HOME=str(stack_home),
        REPLAY_LOCAL_POSTGRES=f"127.0.0.1:{unused_port()}",
        REPLAY_LOCAL_REDIS=f"127.0.0.1:{unused_port()}",
        REPLAY_LOCAL_KAFKA=f"127.0.0.1:{unused_port()}",
        PYTHONPATH=str(ROOT),
    )
    return env


def replay(
    env: dict[str, str], *args: str, timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "scheduler.cli", *args],
        env=env, capture_output=True, text=True, timeout=timeout, cwd=ROOT,
    )  # fmt: skip


def twice_at_once(env: dict[str, str], *args: str) -> list[tuple[str, str]]:
    """Run ``replay ARGS`` twice concurrently; both must succeed. Returns (stdout, stderr)s."""
    procs = [
        subprocess.Popen([sys.executable, "-m", "scheduler.cli", *args], env=env, cwd=ROOT,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]  # fmt: skip
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err for _, err in outs]
    return outs


def processes_naming(*needles: str) -> list[str]:
    """Live processes whose command line contains one of ``needles``: the postmaster names its
    data directory (-D); redis-server retitles itself ``redis-server 127.0.0.1:PORT``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            state = (entry / "stat").read_text().rsplit(")", 1)[-1].split()[0]
        except OSError:
            continue
        if any(needle in cmdline for needle in needles) and state != "Z":
            found.append(f"{entry.name}: {cmdline}")
    return found


def answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def assert_nothing_left(home: Path) -> None:
    status = embedded.EmbeddedStack(home, embedded.binaries()).status()  # type: ignore[arg-type]
    assert status["postgres"] is None and status["redis"] is None, status
    assert processes_naming(str(home), f"redis-server 127.0.0.1:{status['redis_port']}") == []
    assert not answers(status["postgres_port"]) and not answers(status["redis_port"])


def test_the_demo_runs_on_embedded_servers_and_stops_them(
    bare_env: dict[str, str], stack_home: Path
) -> None:
    proc = replay(bare_env, "demo", "--aggregates", "300", "--events-per-aggregate", "20",
                  "--slices", "4", timeout=240)  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    first_line = proc.stderr.splitlines()[0]
    assert first_line.startswith("PostgreSQL: embedded 16."), proc.stderr
    assert f"{stack_home.name}/pg" in first_line and "Redis: embedded 6." in first_line
    assert first_line.count(", started") == 2, first_line
    assert "started 2 worker processes" in proc.stdout
    assert "6,000/6,000 events" in proc.stdout
    assert "-> OK" in proc.stdout and "0 differ" in proc.stdout
    assert_nothing_left(stack_home)


def test_up_submit_down_up_keeps_the_job(bare_env: dict[str, str], stack_home: Path) -> None:
    up = replay(bare_env, "up")
    assert up.returncode == 0, up.stderr
    exports = dict(line.removeprefix("export ").split("=", 1) for line in up.stdout.splitlines())
    assert set(exports) == UP_EXPORTS
    assert "started" in up.stderr
    stack = embedded.EmbeddedStack(stack_home, embedded.binaries())  # type: ignore[arg-type]
    first = stack.status()

    again = replay(bare_env, "up")
    assert again.returncode == 0, again.stderr
    assert again.stderr.count("already running, reused") == len(UP_SERVERS)
    assert again.stdout == up.stdout
    second = stack.status()
    assert (second["postgres"], second["redis"]) == (first["postgres"], first["redis"])

    env = {**bare_env, **exports}
    assert replay(env, "seed", "--aggregates", "50", "--events-per-aggregate", "10").returncode == 0
    settings = Settings.from_env(env)
    # The worker is given no URL (empty is unset): it finds the stack `up` left running here.
    unset = dict.fromkeys(UP_EXPORTS, "")
    worker = WorkerProcess(
        settings, "embedded1", log_path=stack_home / "w.log", extra_env={**bare_env, **unset}
    ).start()
    try:
        wait_until_ready(settings, [worker.name], workers=[worker])
        submitted = replay(env, "submit", "order_summary", "--slices", "2", "--wait",
                           "--timeout", "120")  # fmt: skip
        assert submitted.returncode == 0, submitted.stdout + submitted.stderr
        assert "500/500 events" in submitted.stdout
    finally:
        worker.stop()
    assert "event-replay: PostgreSQL: embedded" in (stack_home / "w.log").read_text()
    job_id = submitted.stdout.split("job ", 1)[1].split(":", 1)[0]

    down = replay(bare_env, "down")
    assert down.returncode == 0 and "stopped PostgreSQL and Redis" in down.stdout
    assert_nothing_left(stack_home)

    assert replay(bare_env, "up").returncode == 0
    listed = replay(bare_env, "jobs")  # no exports: the running stack is found
    assert listed.returncode == 0 and job_id[:8] in listed.stdout
    assert "completed" in listed.stdout
    assert replay(bare_env, "down").returncode == 0
    assert_nothing_left(stack_home)


def test_without_the_extra_and_without_servers_one_line_and_exit_2(
    bare_env: dict[str, str], stack_home: Path
) -> None:
    # The extra is installed here; a None in sys.modules makes it look absent to find_spec.
    code = (
        "import sys; sys.modules['pgserver'] = None; from scheduler.cli import main;"
        " sys.exit(main(['jobs']))"
    )
    proc = subprocess.run([sys.executable, "-c", code], env=bare_env, capture_output=True,
                          text=True, timeout=60, cwd=ROOT)  # fmt: skip
    assert proc.returncode == 2
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert "no PostgreSQL answers at 127.0.0.1:" in lines[0]
    assert "pip install 'event-replay[embedded]'" in lines[0]
    assert "docker compose up" in lines[0]
    assert not stack_home.exists()  # nothing half-made


def test_two_commands_at_once_start_one_stack(bare_env: dict[str, str], stack_home: Path) -> None:
    # The flock serializes them: one starts the servers, the other finds them running.
    outs = twice_at_once(bare_env, "up")
    assert outs[0][0] == outs[1][0]  # the same exports: the same servers
    assert sorted(err.count("already running, reused") for _, err in outs) == [0, len(UP_SERVERS)]
    status = embedded.EmbeddedStack(stack_home, embedded.binaries()).status()  # type: ignore[arg-type]
    assert len(processes_naming(f"redis-server 127.0.0.1:{status['redis_port']}")) == 1
    assert len(processes_naming(f"-D {stack_home}/pg")) == 1
    assert replay(bare_env, "down").returncode == 0
    assert_nothing_left(stack_home)


def test_a_stale_pid_file_naming_another_process_is_not_trusted_or_signalled(
    bare_env: dict[str, str], stack_home: Path
) -> None:
    # A crash leaves redis.pid behind, and its pid is reused by an unrelated process.
    (stack_home / "redis").mkdir(parents=True)
    bystander = subprocess.Popen(["sleep", "120"], start_new_session=True)
    try:
        (stack_home / "redis" / "redis.pid").write_text(f"{bystander.pid}\n")
        proc = replay(bare_env, "jobs")
        assert proc.returncode == 0, proc.stderr
        assert "Redis: embedded" in proc.stderr  # started, not mistaken for the bystander
        assert bystander.poll() is None  # and the bystander was not signalled on release
    finally:
        bystander.kill()
        bystander.wait()
    assert_nothing_left(stack_home)


def test_servers_killed_with_sigkill_are_started_again(
    bare_env: dict[str, str], stack_home: Path
) -> None:
    assert replay(bare_env, "up").returncode == 0
    stack = embedded.EmbeddedStack(stack_home, embedded.binaries())  # type: ignore[arg-type]
    before = stack.status()
    for pid in (before["postgres"], before["redis"]):
        os.kill(pid, signal.SIGKILL)
    again = replay(bare_env, "up")
    assert again.returncode == 0, again.stderr
    assert again.stderr.count(", started") == 2
    after = stack.status()
    assert None not in (after["postgres"], after["redis"])
    assert (after["postgres_port"], after["redis_port"]) == (
        before["postgres_port"],
        before["redis_port"],
    )
    assert replay(bare_env, "down").returncode == 0
    assert_nothing_left(stack_home)


def test_sigterm_on_a_command_stops_the_servers_it_started(
    bare_env: dict[str, str], stack_home: Path
) -> None:
    seeded = replay(bare_env, "seed", "--aggregates", "5", "--events-per-aggregate", "2")
    assert seeded.returncode == 0, seeded.stderr
    # No worker runs: --wait waits until it is terminated, as `timeout` or `docker stop` would.
    waiting = subprocess.Popen(
        [sys.executable, "-m", "scheduler.cli", "submit", "order_summary", "--wait"],
        env=bare_env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    stack = embedded.EmbeddedStack(stack_home, embedded.binaries())  # type: ignore[arg-type]
    deadline = time.monotonic() + 60
    while waiting.pid not in stack.status()["users"]:
        assert time.monotonic() < deadline, "the command never registered"
        time.sleep(0.1)
    time.sleep(1.0)  # past planning, into the wait
    waiting.send_signal(signal.SIGTERM)
    _, err = waiting.communicate(timeout=60)
    assert waiting.returncode == 128 + signal.SIGTERM, err
    assert_nothing_left(stack_home)


def test_a_failed_start_leaves_nothing_running(bare_env: dict[str, str], stack_home: Path) -> None:
    # Redis cannot open its log (a directory stands there); PostgreSQL started first.
    (stack_home / "redis" / "redis.log").mkdir(parents=True)
    proc = replay(bare_env, "jobs")
    assert proc.returncode == 2
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("replay: error: could not start Redis"), lines
    assert_nothing_left(stack_home)


def test_first_commands_on_a_bare_machine_need_no_migrate(
    bare_env: dict[str, str], stack_home: Path
) -> None:
    # Two commands at once on a fresh home: one starts the stack, both find the schema ready.
    twice_at_once(bare_env, "jobs")
    assert_nothing_left(stack_home)
    # `replay migrate` reports what it did itself (nothing is migrated behind its back first).
    fresh = stack_home.parent / "fresh"
    fresh.mkdir()
    migrated = replay({**bare_env, "REPLAY_HOME": str(fresh)}, "migrate")
    assert migrated.returncode == 0, migrated.stderr
    assert "migrated replay: 0001_event_store" in migrated.stdout
    assert_nothing_left(fresh)


def test_a_command_says_whether_it_started_or_reused_the_servers(
    bare_env: dict[str, str], stack_home: Path
) -> None:
    # This process starts the stack as a command would; a real `replay` command meanwhile
    # finds it running. Each one's line says which it did.
    with servers.resolved(bare_env) as first:
        assert first.line.count(", started") == 2 and "reused" not in first.line, first.line
        listed = replay(bare_env, "jobs")
        assert listed.returncode == 0, listed.stderr
        line = listed.stderr.splitlines()[0]
        assert line.startswith("PostgreSQL: embedded 16."), line
        assert line.count(", reused") == 2 and "started" not in line, line
        assert "stopped the embedded" not in listed.stderr  # we still use them
    assert first.stopped == ["postgres", "redis"]
    assert_nothing_left(stack_home)
