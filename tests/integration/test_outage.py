"""A PostgreSQL outage, met by the CLI (issue 12): every verb answers a server it cannot reach
with one line on stderr and exit code 2, and `replay live` rides an outage out (one warning line
per outage, then it follows again from its position), as the workers do.

The outage is real: a PostgreSQL cluster of the test's own (initdb, pg_ctl), stopped with
``pg_ctl stop -m fast`` while `replay live` runs; the machine's shared server is never touched.
Every command is a real process.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest

from shared import db, schema, store
from shared.errors import ActiveJobExists, ConcurrencyConflict, DatabaseUnavailable
from shared.settings import Settings
from tests.support import REDIS_URL, ROOT, count

pytestmark = pytest.mark.integration

PG_BINS = sorted(glob.glob("/usr/lib/postgresql/*/bin"))
# Commands of these tests write nothing to Redis (submit pings the broker, then fails on
# PostgreSQL before it dispatches): a DB number shared with another suite is safe.
REDIS_DB = 3
UNKNOWN_JOB = "00000000-0000-0000-0000-000000000000"
VERBS = [
    ["live"],
    ["status", UNKNOWN_JOB],
    ["submit", "order_summary"],
    ["jobs"],
    ["migrate"],
    ["seed", "--aggregates", "1", "--events-per-aggregate", "1"],
]


def free_port() -> int:
    """A local TCP port that nothing listens on (yet)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PrivateCluster:
    """A PostgreSQL cluster of this test's own, on a free port, trust authentication on
    127.0.0.1 only. Run as the ``postgres`` user when we are root (the server refuses root)."""

    def __init__(self, root: Path) -> None:
        self.root, self.data, self.port = root, root / "data", free_port()
        self.bin = Path(PG_BINS[-1])

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/replay_outage"

    def _run(self, *argv: str) -> None:
        as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        subprocess.run([*as_postgres, *argv], check=True, capture_output=True, timeout=60)

    def init(self) -> PrivateCluster:
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres")
        self._run(str(self.bin / "initdb"), "-D", str(self.data), "-A", "trust", "-U",
                  "postgres", "-E", "UTF8", "--no-sync")  # fmt: skip
        return self

    def start(self) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.root / "log"),
                  "-w", "-o", options, "start")  # fmt: skip

    def stop(self) -> None:
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")

    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()


def private_cluster() -> Iterator[PrivateCluster]:
    if not PG_BINS:
        pytest.skip("no PostgreSQL server binaries in /usr/lib/postgresql/*/bin")
    # Not under pytest's tmp_path: its parents are private to root, and the server runs as
    # postgres, which must reach its directory.
    root = Path(tempfile.mkdtemp(prefix="replay-outage-", dir="/tmp"))
    root.chmod(0o755)
    c = PrivateCluster(root).init()
    c.start()
    try:
        yield c
    finally:
        if c.running():
            c.stop()
        shutil.rmtree(root, ignore_errors=True)


cluster = pytest.fixture(private_cluster)
shared_cluster = pytest.fixture(private_cluster, scope="module", name="shared_cluster")


def environment(database_url: str, redis_url: str = f"{REDIS_URL}/{REDIS_DB}") -> dict[str, str]:
    """Every URL explicit (no server discovery), queues of this run's own, the test handlers."""
    inherited = {k: v for k, v in os.environ.items() if not k.startswith(("REPLAY_", "CELERY_"))}
    run = f"outage_{os.getpid()}"
    settings = Settings(
        database_url=database_url, broker_url=redis_url, result_backend=redis_url,
        redis_url=redis_url, handler_modules=("tests.handlers",), queue=f"replay_{run}",
        live_queue=f"live_{run}", control_queue=f"control_{run}",
    )  # fmt: skip
    return {**inherited, **settings.as_env(), "PYTHONPATH": str(ROOT)}


def replay(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "scheduler.cli", *argv],
        env=env, capture_output=True, text=True, timeout=120, cwd=ROOT,
    )  # fmt: skip


def assert_one_line(result: subprocess.CompletedProcess[str], *expected: str) -> None:
    """Exit code 2, nothing on stdout, one line on stderr that says ``expected``."""
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("replay: error: "), lines[0]
    for text in expected:
        assert text in lines[0], (text, lines[0])


@pytest.mark.parametrize("verb", VERBS, ids=[v[0] for v in VERBS])
def test_every_verb_answers_a_database_it_cannot_reach_with_one_line(verb: list[str]) -> None:
    port = free_port()
    result = replay(verb, environment(f"postgresql://postgres@127.0.0.1:{port}/replay_x"))
    assert_one_line(result, "PostgreSQL", f"127.0.0.1:{port}", "Connection refused")


def test_submit_with_the_broker_down_is_one_line_too(cluster: PrivateCluster) -> None:
    env = environment(cluster.url, redis_url=f"redis://127.0.0.1:{free_port()}/0")
    assert replay(["migrate"], env).returncode == 0
    assert_one_line(replay(["submit", "order_summary"], env), "broker")


class Follower:
    """`replay live --handler live_audit` as a real process; its output read as it comes."""

    def __init__(self, env: dict[str, str], logs: Path) -> None:
        self.out, self.err = logs / "live.out", logs / "live.err"
        with open(self.out, "wb") as out, open(self.err, "wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "scheduler.cli", "live", "--handler", "live_audit"],
                env=env, stdout=out, stderr=err, cwd=ROOT,
            )  # fmt: skip

    def stdout(self) -> str:
        return self.out.read_text()

    def stderr(self) -> str:
        return self.err.read_text()

    def wait_for(self, what: str, check: Callable[[], Any], seconds: float = 60) -> None:
        deadline = time.monotonic() + seconds
        while not check():
            assert self.proc.poll() is None, (what, self.proc.returncode, self.stderr())
            assert time.monotonic() < deadline, (what, self.stdout(), self.stderr())
            time.sleep(0.2)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(30)


def audited(settings: Settings) -> int:
    with db.connect(settings) as conn:
        return count(conn, "SELECT count(*) FROM live_audit")


def append(settings: Settings, aggregate_id: str, version: int) -> None:
    with db.connect(settings) as conn:
        store.append(conn, aggregate_id, "Order", [store.NewEvent("OrderPlaced", {"n": version})],
                     expected_version=version)  # fmt: skip


def test_replay_live_rides_out_a_postgresql_outage_with_one_line_each(
    cluster: PrivateCluster, tmp_path: Path
) -> None:
    env = environment(cluster.url)
    settings = Settings.from_env(env)
    assert replay(["migrate"], env).returncode == 0
    follower = Follower(env, tmp_path)
    try:
        # A new live handler starts at the present: its checkpoint row first, then events.
        follower.wait_for("its position", lambda: _checkpoints(settings) == 1)
        append(settings, "o-1", 0)
        follower.wait_for("the first event", lambda: audited(settings) == 1)

        cluster.stop()
        follower.wait_for("a warning", lambda: follower.stderr())
        time.sleep(6)  # three retries: still one line, still running
        assert follower.proc.poll() is None, follower.stderr()
        warning = follower.stderr().splitlines()
        assert len(warning) == 1, warning
        assert warning[0].startswith("replay: warning: PostgreSQL unavailable"), warning
        assert "retrying every" in warning[0]

        # Every other verb meets the stopped server with its one line.
        for verb in (["status", UNKNOWN_JOB], ["submit", "live_audit"], ["jobs"]):
            assert_one_line(replay(verb, env), f"127.0.0.1:{cluster.port}")

        cluster.start()
        follower.wait_for("recovery", lambda: "PostgreSQL answers again" in follower.stdout())
        append(settings, "o-1", 1)
        follower.wait_for("the event after the outage", lambda: audited(settings) == 2)

        cluster.stop()  # a second outage, ended by the operator: one more line, exit 0
        follower.wait_for("a second warning", lambda: len(follower.stderr().splitlines()) == 2)
        assert follower.stop() == 0
    finally:
        follower.stop()
    errors = follower.stderr()
    assert "Traceback" not in errors and "internal error" not in errors, errors
    assert len(errors.splitlines()) == 2, errors


def _checkpoints(settings: Settings) -> int:
    with db.connect(settings) as conn:
        return count(conn, "SELECT count(*) FROM live_checkpoint")


# --- the translating connection itself, on a real server ----------------------------------------
@pytest.fixture(scope="module")
def migrated(shared_cluster: PrivateCluster) -> Settings:
    settings = Settings(database_url=shared_cluster.url)
    schema.migrate(settings)
    return settings


def _insert_job(conn: db.Connection, consumer: str) -> None:
    conn.execute(
        "INSERT INTO replay_job (job_id, consumer_name, replay_type, frozen_scope, cache_epoch)"
        " VALUES (gen_random_uuid(), %s, 'full', pg_current_snapshot()::text, '')",
        (consumer,),
    )


def test_a_connection_raises_the_error_its_constraint_means(migrated: Settings) -> None:
    with db.connect(migrated) as conn:
        _insert_job(conn, "c1")
        with pytest.raises(ActiveJobExists, match=r"\(c1\)"):  # execute
            _insert_job(conn, "c1")

        first = store.NewEvent("E", event_id=uuid.uuid4())
        store.append(conn, "a-1", "T", [first], expected_version=0)
        with pytest.raises(ConcurrencyConflict, match="event_id exists"):  # executemany
            store.append(conn, "a-2", "T", [first], expected_version=0)
        line = store.format_copy_line(
            uuid.uuid4(), "a-1", "T", "E", "{}", "{}", 1, datetime.now(UTC)
        )
        with pytest.raises(ConcurrencyConflict):  # the end of a COPY
            store.copy_rows(conn, [line])

        # A deferred key fires at COMMIT, in the transaction's exit; an unknown one stays a
        # database error.
        conn.execute("CREATE TEMP TABLE once (k int CONSTRAINT once_k UNIQUE DEFERRABLE"
                     " INITIALLY DEFERRED)")  # fmt: skip
        with pytest.raises(db.UniqueViolation, match="once_k") as caught, conn.transaction():
            conn.execute("INSERT INTO once VALUES (1), (1)")
        assert not isinstance(caught.value, ActiveJobExists | ConcurrencyConflict)

        with pytest.raises(psycopg.errors.DivisionByZero):  # the work's own error: unchanged
            conn.execute("SELECT 1 / 0")


def _killed(conn: db.Connection, settings: Settings) -> None:
    with db.connect(settings) as other:
        other.execute("SELECT pg_terminate_backend(%s)", (conn.info.backend_pid,))


def test_a_lost_connection_is_unavailable_wherever_it_shows(migrated: Settings) -> None:
    with db.connect(migrated) as conn:
        _killed(conn, migrated)
        with pytest.raises(DatabaseUnavailable, match=r"^PostgreSQL unavailable: "):
            conn.execute("SELECT 1")

    with db.connect(migrated) as conn, conn.transaction(), conn.cursor(name="rows") as cur:
        cur.execute("SELECT generate_series(1, 10) AS n")
        assert len(cur.fetchmany(2)) == 2
        _killed(conn, migrated)
        with pytest.raises(DatabaseUnavailable):  # a server-side cursor's fetch
            cur.fetchmany(2)

    with db.connect(migrated) as listener:
        listener.execute("LISTEN nothing")
        _killed(listener, migrated)
        with pytest.raises(DatabaseUnavailable):
            list(listener.notifies(timeout=5))


def test_a_pool_that_cannot_serve_is_unavailable(migrated: Settings) -> None:
    pool = db.make_pool(migrated, max_size=1)
    try:
        with pool.connection(), pytest.raises(DatabaseUnavailable, match="unavailable"):
            pool.getconn(timeout=0.2)  # its one connection is taken
    finally:
        pool.close()
    with pytest.raises(DatabaseUnavailable, match="Connection refused"):
        db.make_pool(Settings(database_url=f"postgresql://postgres@127.0.0.1:{free_port()}/x"))
