"""What ``replay`` prints for the jobs it lists, as a user's terminal or script gets it: whole job
ids and statuses at 80 columns, tables that fit, JSON that parses, an ETA while a job runs
(the real command, against real worker processes)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import datetime
from typing import Any

import pytest

from local.workers import WorkerProcess
from scheduler.coordinator import Coordinator
from shared import db
from shared.settings import Settings
from tests.integration.conftest import ROOT
from tests.support import WORKER_ENV

pytestmark = pytest.mark.integration


def replay(settings: Settings, *args: str, columns: int = 80) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "scheduler.cli", *args],
        env={**os.environ, **settings.as_env(), **WORKER_ENV, "COLUMNS": str(columns)},
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )  # fmt: skip


def ok(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


@pytest.fixture
def four_jobs(coordinator: Coordinator) -> dict[str, str]:
    """Job id -> status: three that completed (two consumers, two replay types) and one
    cancelled."""
    requests: list[tuple[str, dict[str, Any]]] = [
        ("order_summary", {"slices": 3}),
        ("order_notifications", {"replay_type": "event_type", "event_types": ["OrderShipped"]}),
        # a reset: a catch-up of it would have nothing left to read after the first job
        (
            "order_summary",
            {"replay_type": "aggregate", "aggregate_id": "order-7-0000042", "reset": True},
        ),
    ]
    statuses = {}
    for consumer, options in requests:  # one active job per consumer: each waited for
        job_id = coordinator.submit(consumer, **options)
        statuses[job_id] = coordinator.wait(job_id, timeout=120)["status"]
    slow = coordinator.submit("slow_noop", slices=2)
    statuses[slow] = coordinator.cancel(slow)["status"]
    assert sorted(statuses.values()) == ["cancelled", "completed", "completed", "completed"]
    return statuses


def test_jobs_at_80_columns_prints_every_id_and_status_whole(
    settings: Settings, four_jobs: dict[str, str]
) -> None:
    out = ok(replay(settings, "jobs", columns=80))
    lines = out.splitlines()
    assert max(len(line) for line in lines) <= 80
    for job_id, status in four_jobs.items():
        (line,) = [line for line in lines if job_id in line]
        assert line.split()[0] == job_id and status in line.split()
        # the id pasted into the next command works
        assert json.loads(ok(replay(settings, "status", job_id, "--json")))["job_id"] == job_id
    assert "…" not in out
    wide = ok(replay(settings, "jobs", columns=200)).splitlines()
    assert wide[0].split() == ["job", "consumer", "type", "status", "events", "created"]


def test_jobs_json_holds_every_job(settings: Settings, four_jobs: dict[str, str]) -> None:
    listed = json.loads(ok(replay(settings, "jobs", "--json")))
    assert {j["job_id"]: j["status"] for j in listed} == four_jobs
    for j in listed:
        datetime.fromisoformat(j["created_at"])  # a datetime, written as a string
        assert j["processed_count"] <= j["total_events"]
    completed = [j for j in listed if j["status"] == "completed"]
    assert all(j["events_per_second"] is not None and j["eta_seconds"] is None for j in completed)


def test_status_json_and_its_table_at_80_columns(
    settings: Settings, coordinator: Coordinator
) -> None:
    job_id = coordinator.submit("order_notifications", slice_by="time", slices=6)
    job = coordinator.wait(job_id, timeout=120)
    assert job["status"] == "completed"

    status = json.loads(ok(replay(settings, "status", job_id, "--json")))
    assert status["job_id"] == job_id and status["status"] == "completed"
    assert [s["slice_no"] for s in status["slices"]] == list(range(6))
    times = [s["from_time"] for s in status["slices"] if s["from_time"] is not None]
    assert len(times) >= 5 and all(datetime.fromisoformat(t) for t in times)
    rate = status["processed_count"] / status["elapsed_seconds"]
    assert status["events_per_second"] == pytest.approx(rate)

    lines = ok(replay(settings, "status", job_id, columns=80)).splitlines()
    # the summary: the same rate as --json's, with separators
    assert f"at {status['events_per_second']:,.0f} events/s" in lines[0]
    header = next(i for i, line in enumerate(lines) if line.startswith("slice"))
    table = lines[header : header + 1 + 6]
    assert max(len(line) for line in table) <= 80
    for n, line in enumerate(table[1:]):  # one line per slice: no row wrapped
        assert line.split()[:2] == [str(n), "completed"]
        assert " .. " in line


def test_a_running_job_has_an_eta_in_status_and_its_json(
    settings: Settings, workers: list[WorkerProcess], coordinator: Coordinator
) -> None:
    # 0.25 s a batch and at most 1,000 events/s: 12 s for the 12,000 events, cancelled before
    job_id = coordinator.submit("slow_noop", slices=2, max_events_per_second=1000)
    try:
        job = _until_running(coordinator, job_id)
        assert job["eta_seconds"] is not None and job["eta_seconds"] > 0
        status = json.loads(ok(replay(settings, "status", job_id, "--json")))
        assert status["status"] == "running" and status["eta_seconds"] > 0
        summary = ok(replay(settings, "status", job_id)).splitlines()[0]
        assert "running for" in summary and ", ETA " in summary
    finally:
        coordinator.cancel(job_id)
    cancelled = json.loads(ok(replay(settings, "status", job_id, "--json")))
    assert cancelled["eta_seconds"] is None


def _until_running(coordinator: Coordinator, job_id: str) -> dict[str, Any]:
    """The job once it has processed a batch and has events left."""
    for _ in range(400):
        job = coordinator.get(job_id)
        if job["status"] == "running" and 0 < job["processed_count"] < job["total_events"]:
            return job
        assert job["status"] in ("pending", "running"), job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not get going")


def test_parked_json_lists_the_parked_events(
    settings: Settings, coordinator: Coordinator, conn: db.Connection
) -> None:
    poisoned = conn.execute(
        "SELECT event_id::text AS e FROM event ORDER BY aggregate_id, sequence_num"
        " OFFSET 300 LIMIT 1"
    ).fetchone()["e"]
    conn.execute("INSERT INTO poison_rule (event_id) VALUES (%s)", (poisoned,))
    job_id = coordinator.submit("poisonable_summary", slices=2, on_error="park")
    assert coordinator.wait(job_id, timeout=120)["status"] == "completed"
    parked = json.loads(ok(replay(settings, "parked", job_id, "--json")))
    assert [p["event_id"] for p in parked] == [poisoned]
    assert parked[0]["resolved_at"] is None and poisoned in parked[0]["error"]
    text = ok(replay(settings, "parked", job_id))
    assert poisoned in text and "1 parked event(s), 1 unresolved" in text
