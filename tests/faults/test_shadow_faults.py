"""Shadow rebuilds through crashes (issue 16): a worker SIGKILLed during the shadow rebuild, and
a cutover killed between its catch-up and its commit; each recovers to a correct cutover."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from scheduler.coordinator import Coordinator
from shared import db, store
from shared.settings import Settings
from tests.faults.conftest import Cluster
from tests.faults.helpers import running
from tests.folds import fold_order_summary, read_order_summary
from tests.support import count, events_where, wait_until

pytestmark = pytest.mark.faults

HANDLER = "order_summary"


def test_a_shadow_rebuild_survives_a_killed_worker_and_a_killed_cutover(
    cluster: Cluster, coordinator: Coordinator, conn: db.Connection, settings: Settings
) -> None:
    cluster.start_scheduler()
    cluster.start_worker()
    cluster.start_worker()
    built = coordinator.wait(coordinator.submit(HANDLER, slices=8), timeout=180)
    assert built["status"] == "completed", built["error"]
    conn.execute("UPDATE order_summary SET total = total + 1 WHERE order_id LIKE '%%1'")

    # 1. A worker SIGKILLed mid-rebuild: the reconciler re-dispatches its slice, the job
    #    completes, and the shadow is caught up and made ready.
    job_id = coordinator.submit(
        HANDLER, reset=True, shadow=True, slices=8, max_events_per_second=20_000
    )
    wait_until(lambda: running(coordinator, job_id, at_least=20_000), 60, "the shadow rebuild")
    cluster.live_workers()[0].kill()
    cluster.start_worker()
    coordinator.throttle(job_id, None)
    job = coordinator.wait(job_id, timeout=240)
    assert job["status"] == "completed", job["error"]
    assert job["shadow_phase"] == "ready"

    # 2. A cutover killed after its catch-up, before its commit (it waits for a table a reader
    #    holds): nothing of it remains, the shadow is still ready, and the next cutover is right.
    version = store.stream_version(conn, "order-21-0000003")
    store.append(
        conn, "order-21-0000003", "Order",
        [store.NewEvent("ItemAdded", {"sku": "k", "qty": 2, "price": "1.00"})],
        expected_version=version,
    )  # fmt: skip
    env = {**os.environ, **settings.as_env()}
    with db.connect(settings) as reader, reader.transaction():
        reader.execute("LOCK TABLE order_summary IN ACCESS SHARE MODE")
        cutover = subprocess.Popen(
            [sys.executable, "-m", "scheduler.cli", "cutover", job_id], env=env,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        waiting = (
            "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation"
            " WHERE c.relname = 'order_summary' AND NOT l.granted"
        )
        wait_until(lambda: count(conn, waiting) > 0, 60, "the cutover at its swap")
        cutover.send_signal(signal.SIGKILL)
        cutover.wait(10)
    assert coordinator.get(job_id)["shadow_phase"] == "ready"
    assert coordinator.cutover(job_id)["shadow_phase"] == "cut_over"
    assert read_order_summary(conn) == fold_order_summary(events_where(conn))
