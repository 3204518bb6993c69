"""The live consumer (`replay live`): concurrent writers, some holding their transactions open,
and a consumer process that is killed and restarted mid-stream. Every event exactly once, in
per-aggregate order."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from local.workers import WorkerProcess
from scheduler.coordinator import Coordinator
from shared import db, store
from shared.db import Connection
from shared.errors import ConcurrencyConflict
from shared.settings import Settings
from tests.folds import fold_order_summary, read_order_summary
from tests.support import ROOT, WORKER_ENV, count, events_where

pytestmark = pytest.mark.integration

WRITERS = 8
SECONDS = float(os.environ.get("REPLAY_LIVE_TEST_SECONDS", "20"))


class Consumer:
    """`replay live --handler live_audit` as a real process."""

    def __init__(self, settings: Settings, log: Path) -> None:
        self.settings, self.log = settings, log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "scheduler.cli", "live", "--handler", "live_audit"],
                env={**os.environ, **self.settings.as_env(), **WORKER_ENV},
                stdout=out, stderr=subprocess.STDOUT, cwd=ROOT,
            )  # fmt: skip

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture
def consumer(settings: Settings, clean: None, tmp_path: Path) -> Iterator[Consumer]:
    c = Consumer(settings, tmp_path / "live.log")
    yield c
    c.stop()


def writer(settings: Settings, n: int, until: float, appended: list[str]) -> None:
    """Appends to its own orders, one to three events at a time; one write in four holds its
    transaction open for a while, so that later transactions commit first."""
    rng = random.Random(n)
    versions: dict[str, int] = {}
    with db.connect(settings) as conn:
        while time.monotonic() < until:
            agg = f"live-{n}-{rng.randrange(5)}"
            events = [store.NewEvent("NoteAdded", {"n": i}) for i in range(rng.randint(1, 3))]
            try:
                with conn.transaction():
                    ids = store.append(
                        conn, agg, "Order", events, expected_version=versions.get(agg, 0)
                    )
                    if rng.random() < 0.25:
                        time.sleep(rng.uniform(0.05, 0.6))  # held open: commits late
            except ConcurrencyConflict:
                continue
            versions[agg] = versions.get(agg, 0) + len(events)
            appended.extend(str(i) for i in ids)


def test_every_appended_event_is_handled_once_in_order_across_a_kill(
    settings: Settings, consumer: Consumer, conn: Connection
) -> None:
    consumer.start()
    deadline = time.monotonic() + 30
    while not count(conn, "SELECT count(*) FROM live_checkpoint WHERE handler_name = 'live_audit'"):
        assert time.monotonic() < deadline, "the consumer did not start"
        time.sleep(0.1)

    appended: list[str] = []
    until = time.monotonic() + SECONDS
    threads = [
        threading.Thread(target=writer, args=(settings, n, until, appended)) for n in range(WRITERS)
    ]
    try:
        for t in threads:
            t.start()
        time.sleep(SECONDS / 2)
        consumer.kill()  # mid-stream, while writers keep going
        time.sleep(1)
        consumer.start()
        for t in threads:
            t.join(SECONDS + 30)

        deadline = time.monotonic() + 60
        while count(conn, "SELECT count(*) FROM live_audit") < len(appended):
            assert time.monotonic() < deadline, "the consumer did not catch up"
            time.sleep(0.2)
        time.sleep(1.5)  # anything extra would show up now

        handled = conn.execute("SELECT event_id::text AS e, is_replay FROM live_audit").fetchall()
        assert sorted(h["e"] for h in handled) == sorted(appended)  # none skipped, none twice
        assert not any(h["is_replay"] for h in handled)
        assert len(appended) > WRITERS * 10
        print(f"\n{len(appended)} events from {WRITERS} writers in {SECONDS:g} s, all handled once")
    finally:
        conn.execute("DELETE FROM event WHERE aggregate_id LIKE 'live-%%'")


def test_live_and_a_concurrent_catch_up_of_the_same_handlers_take_effect_once(
    settings: Settings, workers: list[WorkerProcess], clean: None, conn: Connection,
    tmp_path: Path,
) -> None:  # fmt: skip
    """order_summary and order_notifications followed live while a catch-up replay of
    order_summary runs over history and the new events: the read model equals the fold, and
    the outbox has one row per OrderShipped appended during the test, none for history."""
    live = subprocess.Popen(
        [sys.executable, "-m", "scheduler.cli", "live", "--handler", "order_summary",
         "--handler", "order_notifications"],
        env={**os.environ, **settings.as_env(), **WORKER_ENV},
        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, cwd=ROOT,
    )  # fmt: skip
    coordinator = Coordinator(settings)
    try:
        deadline = time.monotonic() + 30
        while count(conn, "SELECT count(*) FROM live_checkpoint") < 2:
            assert time.monotonic() < deadline, "the consumer did not start"
            time.sleep(0.1)
        shipped: list[str] = []
        job_id = ""
        for n in range(40):  # new orders, some shipped; the first 20 are in the replay's scope too
            if n == 20:
                job_id = coordinator.submit("order_summary", slices=8)
            events = [
                store.NewEvent("OrderPlaced"),
                store.NewEvent("ItemAdded", {"sku": "S", "qty": 2, "price": 9.99}),
            ]
            if n % 2 == 0:
                events += [store.NewEvent("PaymentProcessed"), store.NewEvent("OrderShipped")]
            ids = store.append(conn, f"live-both-{n}", "Order", events, expected_version=0)
            if n % 2 == 0:
                shipped.append(str(ids[-1]))
        assert coordinator.wait(job_id, timeout=120)["status"] == "completed"
        total = count(conn, "SELECT count(*) FROM event")
        deadline = time.monotonic() + 30
        while (
            count(conn, "SELECT count(*) FROM processed WHERE handler_name = 'order_summary'")
            < total
        ):
            assert time.monotonic() < deadline, "live processing did not catch up"
            time.sleep(0.2)

        assert read_order_summary(conn) == fold_order_summary(events_where(conn))
        outbox = conn.execute("SELECT event_id::text AS e FROM email_outbox").fetchall()
        assert sorted(r["e"] for r in outbox) == sorted(shipped)
    finally:
        live.terminate()
        live.wait(10)
        coordinator.close()
        conn.execute("DELETE FROM event WHERE aggregate_id LIKE 'live-both-%%'")


def test_the_celery_driven_live_step(
    settings: Settings, workers: list[WorkerProcess], clean: None, conn: Connection,
    celery_client: Any,
) -> None:  # fmt: skip
    from shared.celeryconf import LIVE_STEP_TASK

    def step() -> dict[str, Any]:
        return celery_client.send_task(  # type: ignore[no-any-return]
            LIVE_STEP_TASK, kwargs={"handlers": ["live_audit"]}, queue=settings.live_queue
        ).get(timeout=60)

    assert step() == {"live_audit": {"events": 0, "applied": 0}}  # starts at the present
    try:
        store.append(conn, "live-step", "Order", [store.NewEvent("OrderPlaced")] * 3,
                     expected_version=0)  # fmt: skip
        assert step() == {"live_audit": {"events": 3, "applied": 3}}
        assert step() == {"live_audit": {"events": 0, "applied": 0}}
        assert count(conn, "SELECT count(*) FROM live_audit WHERE aggregate_id = 'live-step'") == 3
    finally:
        conn.execute("DELETE FROM event WHERE aggregate_id = 'live-step'")
