"""Hostile and careless input (issue 11): every bad input below is answered, by the real
``replay`` command, with one line on stderr, exit code 2 and no traceback, and by the Python API
with a ``shared.errors`` exception on one short line; none leaves a job pending or running, and
no refused append writes an event. Data that looks like rich markup is printed literally."""

from __future__ import annotations

import math
import os
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest

from examples.orders import seed
from scheduler.coordinator import Coordinator
from shared import aggregates, db, errors, store
from shared.settings import Settings
from tests.support import ROOT, count, create_database, make_settings

pytestmark = pytest.mark.integration

REDIS_DBS = (4, 5, 6)  # broker, result backend, cache: used by no other suite
REPLAY = str(ROOT / ".venv" / "bin" / "replay")
ACTIVE_JOBS = "SELECT count(*) FROM replay_job WHERE status IN ('pending', 'running')"
EVENTS = "SELECT count(*) FROM event"
# Looks like rich markup ([/x] closes nothing: MarkupError), style ([bold]) and an emoji code.
MARKUP = "[/x] [bold]:smile:"
BIG = "x" * 100_000  # an id pasted from the wrong clipboard
# A byte that is not UTF-8 in argv arrives as a lone surrogate (surrogateescape).
NOT_UTF8 = "a\udcff"
# A message quotes a value shortened (store.shorten) or, as a last guard, the CLI cuts it.
MAX_MESSAGE = 1_200

# Handler modules (on PYTHONPATH) that fail on import with something other than ImportError.
BAD_MODULES = {
    "bad_input_raises": 'raise RuntimeError("refusing to load\\nsecond line")\n',
    "bad_input_syntax": "def broken(:\n",
    "bad_input_name": "value = undefined_name\n",
}
# A handler module whose handler's name is markup: `replay handlers` must print it literally.
MARKUP_MODULE = (
    "from shared.handlers import IdempotentEventHandler, handler\n\n"
    "@handler\n"
    "class Markup(IdempotentEventHandler):\n"
    f"    name = {MARKUP!r}\n"
)


@dataclass(frozen=True)
class Env:
    settings: Settings
    job_id: str  # a cancelled job whose aggregate id, error texts and parked event are MARKUP
    modules: Path  # the directory of the handler modules above


@dataclass(frozen=True)
class Cli:
    """``replay *argv`` must exit with ``code``; stdout must contain each of ``shows``."""

    argv: list[str]
    code: int = 2
    modules: str | None = None  # REPLAY_HANDLER_MODULES for this run
    shows: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Api:
    """``call(env)`` must raise ``error`` (a ``shared.errors`` class)."""

    call: Callable[[Env], Any]
    error: type[errors.ReplayError]


def nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(depth):
        value = {"a": value}
    return value


def submit(consumer: Any = "order_summary", **kwargs: Any) -> Callable[[Env], Any]:
    def call(env: Env) -> Any:
        coordinator = Coordinator(env.settings)
        try:
            return coordinator.submit(consumer, **kwargs)
        finally:
            coordinator.close()

    return call


def append(aggregate_id: str = "bad-input", event_type: str = "NoteAdded", **payload: Any) -> Any:
    def call(env: Env) -> Any:
        with db.connect(env.settings) as conn:
            event = store.NewEvent(event_type, payload)
            return store.append(conn, aggregate_id, "Order", [event], expected_version=0)

    return call


def submit_with_modules(module: str) -> Callable[[Env], Any]:
    def call(env: Env) -> Any:
        coordinator = Coordinator(replace(env.settings, handler_modules=(module,)))
        return coordinator.submit("order_summary")

    return call


def seed_with(**kwargs: Any) -> Callable[[Env], Any]:
    def call(env: Env) -> Any:
        with db.connect(env.settings) as conn:
            return seed.seed(conn, 1, 1, **kwargs)

    return call


def coordinator_call(method: str, *args: Any, **kwargs: Any) -> Callable[[Env], Any]:
    def call(env: Env) -> Any:
        coordinator = Coordinator(env.settings)
        try:
            return getattr(coordinator, method)(*args, **kwargs)
        finally:
            coordinator.close()

    return call


def load(aggregate_id: Any, at_sequence: Any = None) -> Callable[[Env], Any]:
    def call(env: Env) -> Any:
        with db.connect(env.settings) as conn:
            return aggregates.load_aggregate(conn, aggregate_id, at_sequence)

    return call


JOB = "{job}"  # replaced by the markup job's id
CASES: list[Any] = [
    # --- tracebacks of the command line -----------------------------------------------------
    pytest.param(Cli(["jobs", "--limit", "-1"]), id="jobs-limit-negative"),
    pytest.param(Cli(["jobs", "--limit", str(10**20)]), id="jobs-limit-bigint"),
    pytest.param(Cli(["jobs", "--limit", "0"]), id="jobs-limit-zero"),
    pytest.param(Cli(["jobs", "--limit", "many"]), id="jobs-limit-not-a-number"),
    pytest.param(
        Cli(["seed", "--aggregates", "1", "--events-per-aggregate", "1", "--months", "10000000"]),
        id="seed-months-overflow",
    ),
    pytest.param(
        Cli(["seed", "--aggregates", "1", "--events-per-aggregate", "1", "--seed", str(10**99)]),
        id="seed-id-too-long",
    ),
    *[pytest.param(Cli(["handlers"], modules=m), id=f"cli-{m}") for m in BAD_MODULES],
    pytest.param(Cli(["submit", "order_summary", "--wait", "--timeout", "-1"]), id="timeout-neg"),
    pytest.param(Cli(["submit", "order_summary", "--wait", "--timeout", "nan"]), id="timeout-nan"),
    pytest.param(Cli(["submit", "order_summary", "--timeout", "5"]), id="timeout-no-wait"),
    pytest.param(Cli(["submit", "order_summary", "--max-rate", "nan"]), id="max-rate-nan"),
    pytest.param(Cli(["submit", "order_summary", "--max-rate", "0.001"]), id="max-rate-tiny"),
    pytest.param(Cli(["throttle", JOB, "0.5"]), id="throttle-below-minimum"),
    pytest.param(Cli(["throttle", JOB, "fast"]), id="throttle-not-a-number"),
    pytest.param(Cli(["throttle", JOB, "0.0"]), id="throttle-zero-is-off-but-job-ended"),
    pytest.param(Cli(["snapshot", "--type", "Order", "--slices", "0"]), id="snapshot-slices"),
    pytest.param(Cli(["demo", "--slices", "0", "--database", "bad_input_demo"]), id="demo-slices"),
    pytest.param(Cli(["bench", "--runs", "1000"]), id="bench-runs"),
    pytest.param(Cli(["bench-live", "--rate", "nan"]), id="bench-live-rate"),
    pytest.param(Cli(["bench-live", "--seconds", "inf"]), id="bench-live-seconds"),
    pytest.param(Cli(["bench-aggregate", "--runs", str(10**20)]), id="bench-aggregate-runs"),
    pytest.param(Cli(["frobnicate"]), id="unknown-verb"),
    # --- text PostgreSQL cannot hold, from argv -----------------------------------------------
    pytest.param(
        Cli(["submit", "order_summary", "--type", "aggregate", "--aggregate-id", NOT_UTF8]),
        id="cli-aggregate-id-not-utf8",
    ),
    pytest.param(
        Cli(["submit", "order_summary", "--type", "event_type", "--event-type", NOT_UTF8]),
        id="cli-event-type-not-utf8",
    ),
    pytest.param(Cli(["submit", NOT_UTF8]), id="cli-consumer-not-utf8"),
    # --- a 100 kB value comes back short ------------------------------------------------------
    pytest.param(Cli(["submit", BIG]), id="cli-consumer-100kB"),
    pytest.param(
        Cli(["submit", "order_summary", "--type", "aggregate", "--aggregate-id", BIG]),
        id="cli-aggregate-id-100kB",
    ),
    pytest.param(Cli(["status", BIG]), id="cli-job-id-100kB"),
    pytest.param(Cli(["aggregate", NOT_UTF8]), id="cli-aggregate-not-utf8"),
    pytest.param(Cli(["aggregate", BIG]), id="cli-aggregate-100kB"),
    pytest.param(Cli(["aggregate", "order-x", "--at", "0"]), id="cli-aggregate-at-zero"),
    # --- data that looks like markup is printed literally --------------------------------------
    pytest.param(
        Cli(
            ["status", JOB],
            code=0,
            shows=[f"error: {MARKUP}", f"{MARKUP} .. {MARKUP}", f"[/y] {MARKUP}"],
        ),
        id="status",
    ),
    pytest.param(
        Cli(["parked", JOB], code=0, shows=[f"{MARKUP} #1", f"[/z] {MARKUP}"]), id="parked"
    ),
    pytest.param(Cli(["jobs"], code=0, shows=["cancelled"]), id="jobs"),
    pytest.param(
        Cli(["handlers"], code=0, modules="bad_input_markup", shows=[MARKUP]), id="handlers"
    ),
    # --- the Python API: shared.errors, not driver errors --------------------------------------
    pytest.param(
        Api(submit(replay_type="aggregate", aggregate_id="a\x00b"), errors.InvalidRequest),
        id="submit-aggregate-id-nul",
    ),
    pytest.param(
        Api(submit(replay_type="aggregate", aggregate_id="a\ud800"), errors.InvalidRequest),
        id="submit-aggregate-id-surrogate",
    ),
    pytest.param(
        Api(submit(replay_type="aggregate", aggregate_id=BIG), errors.InvalidRequest),
        id="submit-aggregate-id-100kB",
    ),
    pytest.param(
        Api(
            submit(replay_type="event_type", event_types=["Order\x00Placed"]), errors.InvalidRequest
        ),
        id="submit-event-type-nul",
    ),
    pytest.param(
        Api(submit(event_types=["OrderPlaced", "\ud800"]), errors.InvalidRequest),
        id="submit-event-type-surrogate",
    ),
    pytest.param(
        Api(submit(consumer="order\x00summary"), errors.InvalidRequest), id="submit-consumer-nul"
    ),
    pytest.param(
        Api(submit(consumer="order\ud800"), errors.InvalidRequest), id="submit-consumer-surrogate"
    ),
    pytest.param(Api(submit(consumer=BIG), errors.InvalidRequest), id="submit-consumer-100kB"),
    *[
        pytest.param(Api(submit_with_modules(m), errors.ConfigurationError), id=f"api-{m}")
        for m in BAD_MODULES
    ],
    pytest.param(Api(load("a\x00b"), errors.InvalidRequest), id="load-aggregate-nul"),
    pytest.param(Api(load(42), errors.InvalidRequest), id="load-aggregate-int-id"),
    pytest.param(Api(load(MARKUP, "5"), errors.InvalidRequest), id="load-aggregate-at-str"),
    pytest.param(Api(load(MARKUP, 2.5), errors.InvalidRequest), id="load-aggregate-at-float"),
    pytest.param(Api(coordinator_call("list", -1), errors.InvalidRequest), id="list-negative"),
    pytest.param(Api(coordinator_call("list", 10**20), errors.InvalidRequest), id="list-bigint"),
    pytest.param(
        Api(
            coordinator_call("wait", "00000000-0000-0000-0000-000000000000", timeout=-1),
            errors.InvalidRequest,
        ),
        id="wait-timeout-negative",
    ),
    pytest.param(Api(coordinator_call("get", BIG), errors.NotFound), id="get-100kB"),
    pytest.param(Api(coordinator_call("get", 42), errors.NotFound), id="get-int"),
    pytest.param(Api(seed_with(months=10**7), errors.InvalidRequest), id="seed-months-overflow"),
    pytest.param(Api(append(note="a\x00b"), errors.InvalidRequest), id="append-payload-nul"),
    pytest.param(Api(append(**{"k\x00": 1}), errors.InvalidRequest), id="append-key-nul"),
    pytest.param(Api(append(note="\ud800"), errors.InvalidRequest), id="append-payload-surrogate"),
    pytest.param(Api(append(deep=nested(5_000)), errors.InvalidRequest), id="append-5000-deep"),
    pytest.param(Api(append(price=math.nan), errors.InvalidRequest), id="append-nan"),
    pytest.param(Api(append(price=-math.inf), errors.InvalidRequest), id="append-infinity"),
    pytest.param(Api(append(items={1, 2}), errors.InvalidRequest), id="append-a-set"),
    pytest.param(Api(append(aggregate_id="a\x00"), errors.InvalidRequest), id="append-id-nul"),
    pytest.param(
        Api(append(aggregate_id="\ud800"), errors.InvalidRequest), id="append-id-surrogate"
    ),
    pytest.param(Api(append(aggregate_id=BIG), errors.InvalidRequest), id="append-id-100kB"),
    pytest.param(Api(append(event_type="X\x00"), errors.InvalidRequest), id="append-type-nul"),
]


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    settings = make_settings("badinput", REDIS_DBS)
    create_database(settings, [(1, 20, 5)])
    modules = tmp_path_factory.mktemp("modules")
    for name, text in {**BAD_MODULES, "bad_input_markup": MARKUP_MODULE}.items():
        (modules / f"{name}.py").write_text(text)
    try:
        yield Env(settings, _markup_job(settings), modules)
    finally:
        db.drop_database(settings, settings.database_name)


def _markup_job(settings: Settings) -> str:
    """A cancelled job over an aggregate named MARKUP, whose job and slice errors and parked
    event's error are markup too (set in SQL: what a handler's exception text could be)."""
    with db.connect(settings) as conn:
        ids = store.append(conn, MARKUP, "Order", [store.NewEvent("NoteAdded")], expected_version=0)
    coordinator = Coordinator(settings)
    try:
        job_id = coordinator.submit("order_summary", replay_type="aggregate", aggregate_id=MARKUP)
        coordinator.cancel(job_id)  # no worker runs in this module: it would stay pending
    finally:
        coordinator.close()
    with db.connect(settings) as conn:
        conn.execute("UPDATE replay_job SET error = %s WHERE job_id = %s", (MARKUP, job_id))
        conn.execute(
            "UPDATE replay_slice SET last_error = %s WHERE job_id = %s", (f"[/y] {MARKUP}", job_id)
        )
        conn.execute(
            "INSERT INTO parked_event (job_id, event_id, handler_name, slice_no, error, traceback)"
            " VALUES (%s, %s, 'order_summary', 0, %s, '')",
            (job_id, ids[0], f"[/z] {MARKUP}"),
        )
    return job_id


def run_cli(env: Env, case: Cli) -> subprocess.CompletedProcess[str]:
    """The real ``replay`` command, every URL given explicitly (no server discovery)."""
    inherited = {k: v for k, v in os.environ.items() if not k.startswith(("REPLAY_", "CELERY_"))}
    child = {
        **inherited,
        **env.settings.as_env(),
        "PYTHONPATH": f"{ROOT}{os.pathsep}{env.modules}",
        "COLUMNS": "200",  # the status table's cells whole, so that stdout shows them
    }
    if case.modules is not None:
        child["REPLAY_HANDLER_MODULES"] = case.modules
    argv = [REPLAY, *(env.job_id if a == JOB else a for a in case.argv)]
    return subprocess.run(
        argv,
        env=child,
        capture_output=True,
        text=True,
        errors="backslashreplace",
        timeout=60,
        cwd=ROOT,
        check=False,
    )


@pytest.mark.parametrize("case", CASES)
def test_bad_input_is_one_line_and_leaves_nothing_behind(
    env: Env, case: Cli | Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    with db.connect(env.settings) as conn:
        events_before = count(conn, EVENTS)
    if isinstance(case, Cli):
        proc = run_cli(env, case)
        assert proc.returncode == case.code, proc.stderr[:MAX_MESSAGE]
        assert "Traceback" not in proc.stderr + proc.stdout
        if case.code != 0:
            assert len(proc.stderr.splitlines()) == 1, proc.stderr[:MAX_MESSAGE]
            assert proc.stderr.startswith("replay"), proc.stderr[:MAX_MESSAGE]
            assert len(proc.stderr) < MAX_MESSAGE
        for text in case.shows:
            assert text in proc.stdout, proc.stdout
    else:
        monkeypatch.syspath_prepend(str(env.modules))
        with pytest.raises(case.error) as raised:
            case.call(env)
        message = str(raised.value)
        assert "\n" not in message and len(message) < 300, message[:MAX_MESSAGE]
    with db.connect(env.settings) as conn:
        assert count(conn, ACTIVE_JOBS) == 0
        assert count(conn, EVENTS) == events_before
        assert count(conn, "SELECT count(*) FROM replay_job") == 1  # the markup job only


def test_a_wait_that_runs_out_exits_3_not_the_usage_code(env: Env) -> None:
    """``--wait --timeout`` that expires is not a usage error: its own exit code, documented in
    ``replay submit --help``, and the job goes on (no worker runs in this module: it stays
    pending until cancelled here)."""
    proc = run_cli(env, Cli(["submit", "snapshot_order", "--wait", "--timeout", "0.5"]))
    try:
        assert proc.returncode == 3, proc.stderr
        assert proc.stderr.startswith("replay: gave up waiting: job ")
        assert len(proc.stderr.splitlines()) == 1 and "keeps running" in proc.stderr
        with db.connect(env.settings) as conn:
            assert count(conn, ACTIVE_JOBS) == 1
    finally:
        with db.connect(env.settings) as conn:
            conn.execute("DELETE FROM replay_job WHERE consumer_name = 'snapshot_order'")
    usage = run_cli(env, Cli(["submit", "--help"]))
    assert "exit with code 3" in " ".join(usage.stdout.split())
