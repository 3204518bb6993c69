"""What a user sees of a replay in Flower: a real Flower process, started with the project's
configuration (authentication required), beside the real workers, read through its HTTP API.

A running slice is labelled (its job, its number, its bounds, its size) and its processed count
grows; a failed slice, and the job's finalization, are FAILURE with the error line; searching the
job id finds the job's slices; Terminate on a running slice cancels its job instead of killing
the process.
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from local.workers import WorkerProcess
from scheduler.coordinator import Coordinator
from shared import db
from shared.settings import Settings
from tests.integration.test_flower_auth import free_port
from tests.support import ROOT, WORKER_ENV

pytestmark = pytest.mark.integration

AUTH = "replay:flower-secret"
CONFIG = ROOT / "scheduler" / "flowerconfig.py"


class Flower:
    def __init__(self, port: int) -> None:
        self.port = port

    def get(self, path: str, **query: Any) -> Any:
        url = f"http://127.0.0.1:{self.port}{path}"
        if query:
            url += "?" + urllib.parse.urlencode(query)
        request = urllib.request.Request(url)
        request.add_header("Authorization", "Basic " + base64.b64encode(AUTH.encode()).decode())
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    def post(self, path: str, **query: Any) -> Any:
        url = f"http://127.0.0.1:{self.port}{path}?" + urllib.parse.urlencode(query)
        request = urllib.request.Request(url, data=b"", method="POST")
        request.add_header("Authorization", "Basic " + base64.b64encode(AUTH.encode()).decode())
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    def tasks(self, **query: Any) -> dict[str, dict[str, Any]]:
        result: dict[str, dict[str, Any]] = self.get("/api/tasks", **query)
        return result

    def until(self, what: str, find: Callable[[], Any], timeout: float = 60) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = find()
            if found:
                return found
            time.sleep(0.2)
        raise AssertionError(f"Flower did not show {what} within {timeout} s")


@pytest.fixture(scope="module")
def flower(
    settings: Settings, workers: list[WorkerProcess], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Flower]:
    """Flower as the README starts it (`replay flower`): the project's configuration."""
    port = free_port()
    home = tmp_path_factory.mktemp("flower")
    env = {**os.environ, **settings.as_env(), **WORKER_ENV, "FLOWER_BASIC_AUTH": AUTH,
           "FLOWER_DB": str(home / "flower.db")}  # fmt: skip
    log = open(home / "flower.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "scheduler.cli", "flower", f"--port={port}"],
        env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    f = Flower(port)
    try:
        f.until("its API", lambda: _answers(f, proc), timeout=30)
        # Flower learns of tasks from events: wait until it sees the workers.
        f.until("the workers", lambda: len(f.get("/api/workers", refresh="true")) >= 2)
        yield f
    finally:
        proc.terminate()
        proc.wait(timeout=15)
        log.close()


def _answers(f: Flower, proc: subprocess.Popen[bytes]) -> bool:
    assert proc.poll() is None, "flower exited"
    try:
        f.get("/api/workers")
        return True
    except (OSError, urllib.error.HTTPError):
        return False


@pytest.mark.parametrize("how", ["replay flower", "celery flower --conf"])
def test_flower_refuses_to_start_without_a_password(
    settings: Settings, tmp_path: Path, how: str
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWER_")}
    env.update({**settings.as_env(), **WORKER_ENV, "FLOWER_DB": str(tmp_path / "f.db")})
    port = f"--port={free_port()}"
    command = {
        "replay flower": [sys.executable, "-m", "scheduler.cli", "flower", port],
        "celery flower --conf": [sys.executable, "-m", "celery", "-A", "worker", "flower",
                                 f"--conf={CONFIG}", port],
    }[how]  # fmt: skip
    done = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert "FLOWER_BASIC_AUTH" in done.stderr
    assert not (tmp_path / "f.db").exists()


def _slices(flower: Flower, job_id: str, count: int = 0) -> dict[str, dict[str, Any]]:
    """The job's slice tasks that Flower knows (none unless there are ``count``, if given)."""
    found = {k: t for k, t in flower.tasks(search=job_id).items() if t["name"] == "replay.slice"}
    return found if not count or len(found) == count else {}


PROGRESS = re.compile(r"^([\d,]+)/([\d,]+) events")


def _processed(task: dict[str, Any]) -> int:
    m = PROGRESS.match(str(task.get("result") or ""))
    return int(m.group(1).replace(",", "")) if m else -1


def test_a_running_slice_is_labelled_and_its_progress_grows(
    flower: Flower, coordinator: Coordinator
) -> None:
    job_id = coordinator.submit("slow_summary", slices=2, max_events_per_second=2000)
    try:
        found = flower.until("two labelled slices", lambda: _slices(flower, job_id, count=2))
        labels = sorted(t["args"] for t in found.values())
        # e.g. "slice 0 of 2 · 6,000 events · aggregates order-7-0000000 … order-8-0000009 ·
        # job 9417c1d2-…": the counts add up to the job's
        pattern = re.compile(
            rf"^slice (\d) of 2 · ([\d,]+) events · aggregates \S+ … \S+ · job {job_id}$"
        )
        matches = [pattern.match(label) for label in labels]
        assert all(matches), labels
        assert [m.group(1) for m in matches if m] == ["0", "1"]
        total = coordinator.get(job_id)["total_events"]
        assert sum(int(m.group(2).replace(",", "")) for m in matches if m) == total

        def running() -> tuple[str, int] | None:
            for task_id, t in _slices(flower, job_id).items():
                if t["state"] == "PROGRESS" and _processed(t) > 0:
                    return task_id, _processed(t)
            return None

        task_id, first = flower.until("a slice's progress", running)
        info = flower.until(
            "the count growing", lambda: (t := flower.get(f"/api/task/info/{task_id}"))
            and _processed(t) > first and t
        )  # fmt: skip
        assert "events/s" in info["result"]
        assert info["args"].startswith("slice ") and info["args"].endswith(f"job {job_id}")
    finally:
        coordinator.cancel(job_id)


def test_a_failed_slice_and_its_job_are_failure_in_flower(
    flower: Flower, coordinator: Coordinator, conn: db.Connection
) -> None:
    poisoned = conn.execute(
        "SELECT event_id FROM event ORDER BY aggregate_id, sequence_num OFFSET 500 LIMIT 1"
    ).fetchone()["event_id"]
    conn.execute("INSERT INTO poison_rule (event_id) VALUES (%s)", (poisoned,))
    job_id = coordinator.submit("poisonable_summary", slices=2, on_error="fail")
    assert coordinator.wait(job_id, timeout=120)["status"] == "failed"

    def failed() -> list[dict[str, Any]]:
        return [t for t in flower.tasks(search=job_id, state="FAILURE").values()]

    tasks = flower.until(
        "the slice and the finalization FAILURE", lambda: len(failed()) >= 2 and failed()
    )
    by_name = {t["name"]: t for t in tasks}
    assert set(by_name) == {"replay.slice", "replay.finalize"}
    for t in tasks:
        assert f"on event {poisoned}" in t["exception"]
        assert "Poisoned" in t["exception"]
    assert f"slice 0 of job {job_id} failed" in by_name["replay.slice"]["exception"]
    assert f"job {job_id} failed" in by_name["replay.finalize"]["exception"]
    # its last progress line (an ETA) does not outlive it
    assert by_name["replay.slice"]["result"].startswith("failed"), by_name["replay.slice"]
    # The other slice completed: SUCCESS, with its counts.
    states = sorted(t["state"] for t in _slices(flower, job_id).values())
    assert states == ["FAILURE", "SUCCESS"]


def test_terminate_on_a_running_slice_cancels_its_job(
    flower: Flower, coordinator: Coordinator, workers: list[WorkerProcess]
) -> None:
    job_id = coordinator.submit("slow_summary", slices=2, max_events_per_second=2000)

    # A slice that has committed a batch: terminating one still before its first batch would
    # cancel the job with nothing processed, which is right but not what this test is about.
    def running() -> str | None:
        for task_id, t in _slices(flower, job_id).items():
            if t["state"] == "PROGRESS" and _processed(t) > 0:
                return task_id
        return None

    task_id = flower.until("a slice's progress", running)
    flower.post(f"/api/task/revoke/{task_id}", terminate="true")
    job = coordinator.wait(job_id, timeout=30)
    assert job["status"] == "cancelled"
    # Nothing was killed: both workers are alive, and the slice ended at a batch boundary with
    # its count kept (resumable).
    assert all(w.alive() for w in workers)
    assert 0 < job["processed_count"] < job["total_events"]


def test_a_shadow_rebuilds_phases_show_in_flower(
    flower: Flower, coordinator: Coordinator, conn: db.Connection
) -> None:
    """What operators do to a shadow outside any task shows beside its slices: searching the
    job id finds each phase it went through, and the finalization's catch-up."""
    job_id = coordinator.submit("order_summary", reset=True, shadow=True, slices=2)
    assert coordinator.wait(job_id, timeout=120)["shadow_phase"] == "ready"
    coordinator.cutover(job_id)
    coordinator.rollback(job_id)
    coordinator.discard(job_id)
    changes = ("rebuilding", "cut_over", "rolled_back", "discarded")

    def announced() -> dict[str, dict[str, Any]]:
        found = {
            t["args"]: t
            for t in flower.tasks(search=job_id, state="SUCCESS").values()
            if t["name"] == "replay.shadow"
        }
        return found if len(found) == len(changes) else {}

    found = flower.until("the shadow's phases", announced)
    assert set(found) == {f"job {job_id} · shadow {c.replace('_', ' ')}" for c in changes}
    for phase in changes:
        assert (
            f"'shadow_phase': '{phase}'"
            in found[f"job {job_id} · shadow {phase.replace('_', ' ')}"]["result"]
        )
    finalize = [t for t in flower.tasks(search=job_id).values() if t["name"] == "replay.finalize"]
    assert any("'shadow_phase': 'ready'" in str(t["result"]) for t in finalize), finalize
