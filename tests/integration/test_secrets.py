"""Secrets never printed, and no job left pending by a broker or result backend that cannot be
named or reached (issue 11): the real ``replay`` command and a real worker, fed bad URLs that
carry a distinctive password, answer in one line with exit code 2, and the password appears
nowhere in what they print."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace

import pytest

from scheduler.coordinator import Coordinator
from shared import db, planning, sources
from shared.errors import BrokerUnavailable
from shared.requests import build_request
from shared.settings import Settings
from tests.support import ROOT, count, create_database, make_settings, reset_state

pytestmark = pytest.mark.integration

SECRET = "S3cr3tPW"
REDIS_DBS = (7, 8, 9)  # broker, result backend, cache: used by no other suite
ACTIVE_JOBS = "SELECT count(*) FROM replay_job WHERE status IN ('pending', 'running')"

# Each refused before a connection (Settings), by psycopg's parser, or by the server.
BAD_DATABASE_URLS = [
    "notaurl",
    SECRET,  # a password pasted in place of the URL
    f"mysql://u:{SECRET}@h/db",
    f"postgresql//user:{SECRET}@host/db",
    f"user:{SECRET}@host/db",
    f"postgresql://u:{SECRET}",
    f"postgresql://u:{SECRET}@127.0.0.1:notaport/db",
    f"host=127.0.0.1 password={SECRET}",
    f"postgresql://u:{SECRET[:4]} {SECRET[4:]}@127.0.0.1/db",
    f"postgresql://u:{SECRET}@127.0.0.1:5432/db?no_such_option=1",  # psycopg refuses it
    f"postgresql://no_such_role:{SECRET}@127.0.0.1:5432/postgres",  # the server refuses it
    # libpq quotes a bad percent-escape's token whole, password included
    f"postgresql://u:p%ZZ{SECRET}@127.0.0.1:5432/db",
    f"postgresql://u@127.0.0.1:5432/db?password=xx%ZZ{SECRET}",
    f"postgresql://u:{SECRET}%00x@127.0.0.1:5432/db",
]
VERBS = [["jobs"], ["status", str(uuid.uuid4())], ["submit", "order_summary"], ["migrate"]]


@pytest.fixture(scope="module")
def settings() -> Iterator[Settings]:
    s = make_settings("secrets", REDIS_DBS)
    create_database(s, [(1, 20, 5)])
    yield s
    db.drop_database(s, s.database_name)


@pytest.fixture
def conn(settings: Settings) -> Iterator[db.Connection]:
    with db.connect(settings) as c:
        reset_state(settings, c)
        yield c


def closed_port() -> int:
    """A local TCP port that nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run(argv: list[str], settings: Settings, **overrides: str) -> subprocess.CompletedProcess[str]:
    """``argv`` as a real process with ``settings`` in its environment, ``overrides`` on top.
    Every URL is set explicitly, so that no server discovery takes part."""
    inherited = {k: v for k, v in os.environ.items() if not k.startswith(("REPLAY_", "CELERY_"))}
    env = {**inherited, **settings.as_env(), "PYTHONPATH": str(ROOT), **overrides}
    return subprocess.run(
        argv, env=env, capture_output=True, text=True, timeout=60, cwd=ROOT, check=False
    )


def replay(
    argv: list[str], settings: Settings, **overrides: str
) -> subprocess.CompletedProcess[str]:
    return run([sys.executable, "-m", "scheduler.cli", *argv], settings, **overrides)


def assert_one_line_without_secret(proc: subprocess.CompletedProcess[str], prefix: str) -> None:
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(prefix), proc.stderr
    assert "Traceback" not in proc.stderr
    for part in (SECRET, SECRET[:4] + " " + SECRET[4:], SECRET[4:]):
        assert part not in proc.stdout and part not in proc.stderr, proc.stderr


@pytest.mark.parametrize("verb", VERBS, ids=lambda v: v[0])
@pytest.mark.parametrize("url", BAD_DATABASE_URLS)
def test_a_bad_database_url_is_one_line_without_its_password(
    settings: Settings, verb: list[str], url: str
) -> None:
    proc = replay(verb, settings, REPLAY_DATABASE_URL=url)
    assert_one_line_without_secret(proc, "replay: error: ")


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("CELERY_BROKER_URL", f"foo://u:{SECRET}@x/0"),
        ("CELERY_BROKER_URL", f"redis://:{SECRET}@127.0.0.1:{{port}}/0"),
        ("CELERY_RESULT_BACKEND", f"redis://:{SECRET}@127.0.0.1:{{port}}/1"),
        ("CELERY_RESULT_BACKEND", f"rpc://u:{SECRET}@x/"),
        ("REPLAY_REDIS_URL", f"mysql://u:{SECRET}@x/"),
    ],
)
def test_a_submit_to_a_broker_or_backend_that_cannot_be_named_or_reached_leaves_no_job(
    settings: Settings, conn: db.Connection, name: str, value: str
) -> None:
    started = time.monotonic()
    proc = replay(["submit", "order_summary"], settings, **{name: value.format(port=closed_port())})
    assert time.monotonic() - started < 10  # Celery's own retries took ~20 s
    assert_one_line_without_secret(proc, "replay: error: ")
    assert count(conn, ACTIVE_JOBS) == 0
    assert count(conn, "SELECT count(*) FROM replay_job") == 0  # refused before the job row


@pytest.mark.parametrize("field", ["broker_url", "result_backend"])
def test_a_send_that_fails_after_planning_fails_the_job_with_the_resume_hint(
    settings: Settings, conn: db.Connection, field: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The check before planning makes this path rare (a server that dies between the check and
    # the send), so the test drives the two steps of a submit itself: plan, then send.
    for name in ("CELERY_BROKER_URL", "CELERY_RESULT_BACKEND"):  # Celery prefers these to conf
        monkeypatch.delenv(name, raising=False)
    url = f"redis://:{SECRET}@127.0.0.1:{closed_port()}/0"
    coordinator = Coordinator(replace(settings, **{field: url}))
    job_id = uuid.uuid4()
    try:
        request = build_request("order_summary")
        handler = coordinator.registry.get(request.consumer)
        task_ids = planning.plan(
            coordinator.settings, job_id, request, handler, sources.get(request.source)
        )
        started = time.monotonic()
        with pytest.raises(BrokerUnavailable) as caught:
            coordinator._send(job_id, list(enumerate(task_ids)))
        assert time.monotonic() - started < 5
    finally:
        coordinator.close()
    assert f"replay resume {job_id}" in str(caught.value) and SECRET not in str(caught.value)
    job = conn.execute(
        "SELECT status, error FROM replay_job WHERE job_id = %s", (job_id,)
    ).fetchone()
    assert job is not None and job["status"] == "failed"
    assert f"replay resume {job_id}" in job["error"] and SECRET not in job["error"]
    assert count(conn, ACTIVE_JOBS) == 0


def test_a_worker_with_a_bad_url_exits_with_one_line(settings: Settings) -> None:
    proc = run(
        [sys.executable, "-m", "celery", "-A", "worker", "worker", "--pool", "solo"],
        settings,
        REPLAY_DATABASE_URL=f"mysql://u:{SECRET}@h/db",
    )
    assert_one_line_without_secret(proc, "event-replay: error: REPLAY_DATABASE_URL")
