"""Bad input: a specific error before anything is written (no job row), and in the CLI one line
on stderr with exit code 2."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import pytest

from scheduler.coordinator import Coordinator
from shared import errors
from shared.db import Connection
from shared.settings import Settings
from tests.integration.conftest import ROOT

pytestmark = pytest.mark.integration

# (submit kwargs, the error, the same request on the command line)
BAD: list[tuple[dict[str, Any], type[errors.ReplayError], list[str]]] = [
    ({"consumer": "no_such_handler"}, errors.InvalidRequest, ["no_such_handler"]),
    ({"replay_type": "everything"}, errors.InvalidRequest, ["--type", "everything"]),
    ({"slice_by": "planet"}, errors.InvalidRequest, ["--slice-by", "planet"]),
    ({"replay_type": "aggregate"}, errors.InvalidRequest, ["--type", "aggregate"]),
    (
        {
            "replay_type": "time_range",
            "from_time": "2026-03-01T00:00:00Z",
            "to_time": "2026-02-01T00:00:00Z",
        },
        errors.InvalidRequest,
        ["--type", "time_range", "--from", "2026-03-01T00:00:00Z", "--to", "2026-02-01T00:00:00Z"],
    ),
    (
        {
            "replay_type": "time_range",
            "from_time": "2026-03-01T00:00:00Z",
            "to_time": "2026-03-01T00:00:00Z",
        },
        errors.InvalidRequest,
        ["--type", "time_range", "--from", "2026-03-01T00:00:00Z", "--to", "2026-03-01T00:00:00Z"],
    ),
    ({"replay_type": "time_range"}, errors.InvalidRequest, ["--type", "time_range"]),
    (
        {"replay_type": "time_range", "from_time": "2026-03-01T00:00:00"},
        errors.InvalidRequest,
        ["--type", "time_range", "--from", "2026-03-01T00:00:00"],
    ),
    (
        {"replay_type": "time_range", "from_time": "last tuesday"},
        errors.InvalidRequest,
        ["--type", "time_range", "--from", "last tuesday"],
    ),
    ({"slices": 0}, errors.InvalidRequest, ["--slices", "0"]),
    ({"slices": 10**6}, errors.InvalidRequest, ["--slices", "1000000"]),
    ({"replay_type": "event_type"}, errors.InvalidRequest, ["--type", "event_type"]),
    (
        {"replay_type": "event_type", "event_types": ["OrderPlaced", "OrderTeleported"]},
        errors.InvalidRequest,
        ["--type", "event_type", "--event-type", "OrderPlaced", "--event-type", "OrderTeleported"],
    ),
    ({"slice_by": "time"}, errors.InvalidRequest, ["--slice-by", "time"]),
    (
        {"replay_type": "time_range", "from_time": "2026-02-01T00:00:00Z", "reset": True},
        errors.InvalidRequest,
        ["--type", "time_range", "--from", "2026-02-01T00:00:00Z", "--reset"],
    ),
    (
        {"event_types": ["ItemAdded"], "reset": True},
        errors.InvalidRequest,
        ["--event-type", "ItemAdded", "--reset"],
    ),
]
IDS = [f"{i}-{e.__name__}" for i, (_, e, _) in enumerate(BAD)]


def job_rows(conn: Connection) -> int:
    return conn.execute("SELECT count(*) AS n FROM replay_job").fetchone()["n"]


@pytest.mark.parametrize(("kwargs", "error", "argv"), BAD, ids=IDS)
def test_bad_request_raises_its_error_and_writes_nothing(
    settings: Settings, conn: Connection, clean: None, kwargs: dict[str, Any],
    error: type[errors.ReplayError], argv: list[str],
) -> None:  # fmt: skip
    kwargs = dict(kwargs)
    consumer = kwargs.pop("consumer", "order_summary")
    summary_before = conn.execute("SELECT count(*) AS n FROM processed").fetchone()["n"]

    coordinator = Coordinator(settings)
    with pytest.raises(error):
        coordinator.submit(consumer, **kwargs)
    coordinator.close()

    assert job_rows(conn) == 0
    assert conn.execute("SELECT count(*) AS n FROM processed").fetchone()["n"] == summary_before


@pytest.mark.parametrize(("kwargs", "error", "argv"), BAD, ids=IDS)
def test_bad_request_on_the_command_line_exits_2_with_one_line(
    settings: Settings, conn: Connection, clean: None, kwargs: dict[str, Any],
    error: type[errors.ReplayError], argv: list[str],
) -> None:  # fmt: skip
    if argv[0].startswith("-"):
        argv = ["order_summary", *argv]
    proc = subprocess.run(
        [sys.executable, "-m", "scheduler.cli", "submit", *argv],
        env={**os.environ, **settings.as_env(), "PYTHONPATH": str(ROOT)},
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("replay: error: "), proc.stderr
    assert proc.stdout == ""
    assert job_rows(conn) == 0


@pytest.mark.parametrize(
    "argv",
    [
        ["status", "not-a-uuid"],
        ["status", "00000000-0000-0000-0000-000000000000"],
        ["seed", "--aggregates", "0", "--events-per-aggregate", "5"],
        ["submit", "order_summary", "--slices", "many"],
        ["frobnicate"],
    ],
)
def test_other_cli_errors_exit_2_with_one_line(settings: Settings, argv: list[str]) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "scheduler.cli", *argv],
        env={**os.environ, **settings.as_env(), "PYTHONPATH": str(ROOT)},
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )  # fmt: skip
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
