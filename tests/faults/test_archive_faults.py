"""The archive under faults (issue 17): a run SIGKILLed at three points of a segment's move
leaves every event in exactly one tier and the next run completes; an archive run beside a
running replay job, which still completes with the exact read model."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from examples.orders.verify import verify_order_summary
from scheduler.coordinator import Coordinator
from shared.archive import mover, segments
from shared.archive.stores import open_store
from shared.db import Connection
from shared.settings import Settings
from tests.faults.conftest import TOTAL, Cluster
from tests.integration.test_flower_auth import free_port
from tests.support import ROOT, WORKER_ENV, count

pytestmark = pytest.mark.faults

CUTOFF = datetime(2026, 4, 1, tzinfo=UTC)


@pytest.fixture
def store_url(conn: Connection, tmp_path: Path) -> Iterator[str]:
    url = f"file://{tmp_path}/archive"
    try:
        yield url
    finally:
        mover.unarchive(conn)
        assert count(conn, "SELECT count(*) FROM event") == TOTAL


def archived_ids(conn: Connection) -> list[Any]:
    ids: list[Any] = []
    for seg in conn.execute("SELECT url, path FROM archive_segment").fetchall():
        data = open_store(seg["url"]).get(seg["path"])
        table = segments.read(data, segments.Wanted(columns=("event_id",)))
        ids += table["event_id"].to_pylist()
    return ids


def each_event_in_one_tier(conn: Connection) -> None:
    archived = archived_ids(conn)
    assert len(set(archived)) == len(archived)
    hot = count(conn, "SELECT count(*) FROM event")
    assert hot + len(archived) == TOTAL
    both = count(conn, "SELECT count(*) FROM event WHERE event_id::text = ANY(%s)", (archived,))
    assert both == 0


@pytest.mark.parametrize("point", ["after-file", "after-verify", "in-commit"])
def test_an_archive_killed_mid_move_leaves_each_event_in_one_tier(
    settings: Settings, conn: Connection, store_url: str, point: str
) -> None:
    killed = subprocess.run(
        [sys.executable, "-m", "tests.faults.archive_killer", point, store_url, CUTOFF.isoformat()],
        env={**WORKER_ENV, **settings.as_env(), "PATH": "/usr/bin:/bin"}, cwd=ROOT,
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert killed.returncode == -9, killed.stderr
    each_event_in_one_tier(conn)
    assert count(conn, "SELECT count(*) FROM archive_segment") == 0  # the first move died
    store = open_store(store_url)
    assert [p for p in store.list("segments") if p.endswith(".parquet")], "no orphan file"
    report = mover.archive(conn, store_url, CUTOFF, segment_events=5_000)
    assert report.orphans_removed == 1
    listed = {r["path"] for r in conn.execute("SELECT path FROM archive_segment")}
    assert set(store.list("segments")) == listed
    each_event_in_one_tier(conn)
    assert count(conn, "SELECT count(*) FROM event WHERE occurred_at < %s", (CUTOFF,)) == count(
        conn, "SELECT count(DISTINCT aggregate_id) FROM event WHERE occurred_at < %s", (CUTOFF,)
    )  # what stays of the old events: only each aggregate's newest, where it is that old


def test_an_archive_beside_a_running_replay_job(
    cluster: Cluster, coordinator: Coordinator, conn: Connection, store_url: str
) -> None:
    cluster.start_worker()
    cluster.start_worker()
    job_id = coordinator.submit("order_summary", reset=True, slices=8,
                                max_events_per_second=20_000)  # fmt: skip
    deadline = time.monotonic() + 60
    while coordinator.get(job_id)["processed_count"] < 10_000 and time.monotonic() < deadline:
        time.sleep(0.2)
    report = mover.archive(conn, store_url, CUTOFF, segment_events=10_000)
    assert report.events > 0
    assert coordinator.get(job_id)["status"] == "running"  # the moves happened under it
    job = coordinator.wait(job_id, timeout=180)
    assert job["status"] == "completed", job["error"]
    assert job["processed_count"] == job["total_events"] == TOTAL
    # the slices staged the archive again in place, none through a retry of its task
    logs = "".join(w.log_path.read_text() for w in cluster.workers if w.log_path)
    assert "reads again" in logs and "retry: Retry in" not in logs
    mover.unarchive(conn)  # verify_order_summary folds the event table
    assert verify_order_summary(conn).ok


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """moto's S3 server on 127.0.0.1 (the ecosystem's standard S3 test endpoint), a bucket in
    it, and the AWS environment that points the archive's S3 client at it."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    env = {
        "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
    }  # fmt: skip
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    import fsspec

    fsspec.filesystem("s3", skip_instance_cache=True).mkdir("replay-archive")
    try:
        yield env
    finally:
        server.stop()


def test_an_archive_on_s3_and_a_replay_through_it(
    cluster: Cluster, coordinator: Coordinator, conn: Connection, s3: dict[str, str]
) -> None:
    url = "s3://replay-archive/events"
    try:
        report = mover.archive(conn, url, CUTOFF, segment_events=20_000)
        assert report.events > 0 and report.url == url
        assert count(conn, "SELECT count(*) FROM archive_segment WHERE url = %s", (url,)) == (
            report.segments
        )
        cluster.start_worker(env=s3)
        cluster.start_worker(env=s3)
        job = coordinator.wait(coordinator.submit("order_summary", reset=True, slices=8),
                               timeout=180)  # fmt: skip
        assert job["status"] == "completed", job["error"]
        assert job["processed_count"] == job["total_events"] == TOTAL
    finally:
        mover.unarchive(conn)
    assert count(conn, "SELECT count(*) FROM event") == TOTAL
    assert verify_order_summary(conn).ok
    assert open_store(url).list("segments") == []
