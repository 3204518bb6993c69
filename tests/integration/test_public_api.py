"""The module-level Python API on its process's pool (issue 13): the same answers as a
connection of their own, few connections for many calls, a forked child that works on its own
connections, the environment honoured when it changes, errors as ``shared.errors`` types, and a
clean exit."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
import warnings
from collections.abc import Iterator

import pytest

import scheduler
from examples.orders import seed
from scheduler import coordinator, pools
from shared import aggregates, db
from shared.errors import DatabaseUnavailable, InvalidRequest, NotFound, ReplayError
from shared.settings import Settings, replace_database
from tests.integration.conftest import ROOT
from tests.support import count

pytestmark = pytest.mark.integration

AGGREGATES = [seed.aggregate_id(7, i) for i in range(0, 200, 40)] + [seed.aggregate_id(8, 3)]


@pytest.fixture
def environment(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The API reads its settings from the environment, as a user's program does."""
    for key, value in settings.as_env().items():
        monkeypatch.setenv(key, value)
    scheduler.configure(None)
    yield
    scheduler.configure(None)


def sessions(conn: db.Connection, name: str) -> int:
    """Sessions ever opened on database ``name`` (those still open may be counted late)."""
    return count(conn, "SELECT sessions FROM pg_stat_database WHERE datname = %s", (name,))


def test_pooled_calls_answer_as_a_connection_of_their_own(
    environment: None, conn: db.Connection
) -> None:
    for agg in AGGREGATES:
        aggregates.load_aggregate(conn, agg)  # its snapshots, for both ways
        for at in (None, 17):
            for use in (True, False):
                pooled = scheduler.load_aggregate(agg, at, use_snapshots=use)
                own = aggregates.load_aggregate(conn, agg, at, use_snapshots=use)
                assert pooled == own
    long = seed.aggregate_id(8, 3)  # 200 events: snapshots at every 50
    assert scheduler.load_aggregate(long).snapshot_at == 200
    assert scheduler.load_aggregate(long, 120) == aggregates.load_aggregate(conn, long, 120)
    with pytest.raises(NotFound):
        scheduler.get_job(uuid.uuid4())


def test_many_calls_open_few_connections(
    environment: None, settings: Settings, conn: db.Connection
) -> None:
    scheduler.load_aggregate(AGGREGATES[0])  # the pool opens
    before = sessions(conn, settings.database_name)
    for n in range(50):
        scheduler.load_aggregate(AGGREGATES[n % len(AGGREGATES)])
        with pytest.raises(NotFound):
            scheduler.get_job(uuid.uuid4())
    after = sessions(conn, settings.database_name)
    # a connection per call opened 100 sessions here; the pool, none (a few of the suite's own
    # may be counted late)
    assert after - before <= pools.MAX_CONNECTIONS
    held = "SELECT count(*) FROM pg_stat_activity WHERE pid = %s"
    assert count(conn, held, (backend_pid(),)) == 1  # the pool's, open between calls


def backend_pid() -> int:
    with coordinator.default_coordinator().connection() as c:
        return count(c, "SELECT pg_backend_pid()")


def test_a_forked_child_uses_connections_of_its_own(environment: None, conn: db.Connection) -> None:
    agg = AGGREGATES[1]
    expected = scheduler.load_aggregate(agg).state
    parent_pid = backend_pid()
    read, write = os.pipe()
    with warnings.catch_warnings():  # Python 3.12+ warns of a fork in a threaded process
        warnings.simplefilter("ignore", DeprecationWarning)
        child = os.fork()
    if child == 0:  # the child: report, then leave without pytest's teardown
        code = 1
        try:
            os.close(read)
            answer = {"state": scheduler.load_aggregate(agg).state, "pid": backend_pid()}
            with pytest.raises(NotFound):
                scheduler.get_job(uuid.uuid4())
            os.write(write, json.dumps(answer).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write)
    with os.fdopen(read) as pipe:
        answer = json.loads(pipe.read() or "{}")
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert answer["state"] == expected and answer["pid"] != parent_pid
    # The parent's connection survived the child (which neither used nor closed it).
    assert scheduler.load_aggregate(agg).state == expected
    assert count(conn, "SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (parent_pid,)) == 1


def test_errors_are_still_the_projects(environment: None, conn: db.Connection) -> None:
    with pytest.raises(NotFound, match="no events"):
        scheduler.load_aggregate("no-such-order")
    with pytest.raises(InvalidRequest, match="NUL"):
        scheduler.load_aggregate("a\x00b")
    with pytest.raises(NotFound):
        scheduler.load_aggregate(AGGREGATES[0], 10**30)  # beyond bigint: no such event
    with pytest.raises(InvalidRequest):
        scheduler.get_job("not-a-job-id")
    # A pooled connection the server ended is replaced, not handed out.
    pid = backend_pid()
    conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
    assert scheduler.load_aggregate(AGGREGATES[0]).sequence_num == 40


def test_a_changed_environment_is_honoured(
    environment: None, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert scheduler.load_aggregate(AGGREGATES[0]).sequence_num == 40
    missing = replace_database(settings.database_url, f"no_such_db_{os.getpid()}")
    monkeypatch.setenv("REPLAY_DATABASE_URL", missing)
    with pytest.raises(ReplayError) as caught:  # DatabaseUnavailable: it does not exist
        scheduler.load_aggregate(AGGREGATES[0])
    assert isinstance(caught.value, DatabaseUnavailable), caught.value
    monkeypatch.setenv("REPLAY_DATABASE_URL", settings.database_url)
    assert scheduler.load_aggregate(AGGREGATES[0]).sequence_num == 40
    assert pools.open_urls() == [settings.database_url]  # the other one's is closed


def test_a_program_exits_cleanly(settings: Settings) -> None:
    program = (
        "import uuid, scheduler, shared.errors\n"
        f"print(scheduler.load_aggregate({AGGREGATES[0]!r}).sequence_num)\n"
        "try:\n    scheduler.get_job(uuid.uuid4())\n"
        "except shared.errors.NotFound:\n    print('not found')\n"
    )
    done = subprocess.run(
        [sys.executable, "-X", "dev", "-W", "error", "-c", program],
        env={**os.environ, **settings.as_env(), "PYTHONPATH": str(ROOT)},
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout == "40\nnot found\n"
    assert done.stderr == ""  # no "pool not closed", no ResourceWarning, no thread left
