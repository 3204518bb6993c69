"""Shadow rebuilds (issue 16): a handler rebuilt into copies of its tables while the live ones
keep serving and being written, with real workers."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from examples.orders import seed
from scheduler.coordinator import Coordinator
from shared import context, live, planning
from shared.db import Connection, sql
from shared.errors import InvalidJobState, InvalidRequest
from shared.settings import Settings
from tests.folds import fold_order_summary, read_order_summary
from tests.integration.conftest import events_where
from tests.integration.test_cli_output import ok, replay
from tests.support import append_items, count, items_of

pytestmark = pytest.mark.integration

HANDLER = "order_summary"
LATE = "shadow-late-sku"


@pytest.fixture
def late(conn: Connection) -> Iterator[None]:
    yield
    conn.execute("DELETE FROM event WHERE payload->>'sku' = %s", (LATE,))


def read_shadow(conn: Connection, schema: str) -> dict[str, Any]:
    with conn.transaction():
        conn.execute(sql.SQL("SET LOCAL search_path = {}").format(sql.Identifier(schema)))
        return read_order_summary(conn)


def shadow_schema(conn: Connection, job_id: str) -> str:
    row = conn.execute(
        "SELECT shadow_schema FROM replay_shadow WHERE job_id = %s", (job_id,)
    ).fetchone()
    assert row is not None
    return str(row["shadow_schema"])


def test_a_shadow_rebuild_leaves_the_live_tables_alone_and_catches_up(
    coordinator: Coordinator, conn: Connection, late: None
) -> None:
    first = coordinator.wait(coordinator.submit(HANDLER, slices=4))
    assert first["status"] == "completed"
    # The live read model, corrupted: the repair must not touch it until it is cut over.
    corrupted = conn.execute(
        "UPDATE order_summary SET total = total + 1000"
        " WHERE order_id IN (SELECT order_id FROM order_summary ORDER BY order_id LIMIT 37)"
    ).rowcount
    assert corrupted == 37
    live_before = read_order_summary(conn)
    progress_before = conn.execute(
        "SELECT aggregate_id, watermark FROM handler_progress WHERE handler_name = %s ORDER BY 1",
        (HANDLER,),
    ).fetchall()

    job_id = coordinator.submit(HANDLER, reset=True, shadow=True, slices=4)
    # Events committed after the job's snapshot: the shadow catches up with them once its
    # slices are done.
    append_items(conn, seed.aggregate_id(7, 3), 2, LATE)
    append_items(conn, seed.aggregate_id(7, 8), 1, LATE)
    job = coordinator.wait(job_id, timeout=120)
    assert job["status"] == "completed", job.get("error")
    assert job["shadow_phase"] == "ready"

    schema = shadow_schema(conn, job_id)
    assert read_shadow(conn, schema) == fold_order_summary(events_where(conn))
    # Live: what it was (the corruption included), and its bookkeeping untouched.
    assert read_order_summary(conn) == live_before
    assert (
        conn.execute(
            "SELECT aggregate_id, watermark FROM handler_progress WHERE handler_name = %s"
            " ORDER BY 1",
            (HANDLER,),
        ).fetchall()
        == progress_before
    )
    # The shadow's bookkeeping is its own ledger's.
    ledger = f"shadow:{job_id}"
    assert count(conn, "SELECT count(*) FROM live_checkpoint WHERE handler_name = %s", (ledger,))
    assert (
        count(conn, "SELECT count(*) FROM live_checkpoint WHERE handler_name = %s", (HANDLER,)) == 0
    )

    # One shadow at a time per consumer.
    with pytest.raises(InvalidJobState, match="replay discard"):
        coordinator.submit(HANDLER, reset=True, shadow=True)


@pytest.mark.parametrize(
    ("consumer", "kwargs", "error", "message"),
    [
        (HANDLER, {"reset": True, "shadow": True, "replay_type": "time_range",
                   "from_time": "2026-02-01T00:00:00Z"}, InvalidRequest, "full rebuild"),
        (HANDLER, {"shadow": True}, InvalidRequest, "full rebuild"),
        (HANDLER, {"reset": True, "shadow": "yes"}, InvalidRequest, "true or false"),
        ("order_notifications", {"reset": True, "shadow": True}, InvalidRequest, "no tables"),
    ],
)  # fmt: skip
def test_a_shadow_rebuild_is_refused_for_what_it_cannot_swap(
    coordinator: Coordinator, conn: Connection, consumer: str, kwargs: dict[str, Any],
    error: type[Exception], message: str,
) -> None:  # fmt: skip
    with pytest.raises(error, match=message):
        coordinator.submit(consumer, **kwargs)
    assert count(conn, "SELECT count(*) FROM replay_job") == 0
    assert count(conn, "SELECT count(*) FROM replay_shadow") == 0
    assert (
        count(conn, "SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'replay_shadow_%%'") == 0
    )


def test_diff_cutover_rollback_and_discard(
    coordinator: Coordinator, conn: Connection, ctx: context.Context, late: None
) -> None:
    run = coordinator.wait(coordinator.submit(HANDLER, slices=4))
    assert run["status"] == "completed"
    bad = conn.execute(
        "UPDATE order_summary SET item_count = item_count + 5"
        " WHERE order_id IN (SELECT order_id FROM order_summary ORDER BY order_id LIMIT 37)"
        " RETURNING order_id"
    ).fetchall()
    corrupted = {r["order_id"] for r in bad}
    job_id = coordinator.submit(HANDLER, reset=True, shadow=True, slices=4)
    with pytest.raises(InvalidJobState, match="cannot cut over"):
        coordinator.cutover(job_id)  # not ready yet (or, at the latest, refused as such)
    assert coordinator.wait(job_id, timeout=120)["shadow_phase"] == "ready"

    # An order the shadow has and live does not: an event no live processing applied yet.
    newcomer = seed.aggregate_id(7, 41)  # not among the 37
    append_items(conn, newcomer, 1, LATE)
    report = coordinator.diff(job_id)
    (table,) = report["tables"]
    assert (table["table"], table["key"]) == ("order_summary", ["order_id"])
    assert table["changed"] == 38 and table["only_live"] == table["only_shadow"] == 0
    assert table["changed_columns"] == {"item_count": 38, "total": 1, "version": 1}
    example = table["examples"]["changed"][0]
    assert example["columns"] == ["item_count"]
    assert example["live"]["item_count"] == example["shadow"]["item_count"] + 5
    with pytest.raises(InvalidJobState, match="cannot roll back"):
        coordinator.rollback(job_id)

    live.process_live(ctx, HANDLER, items_of(conn, newcomer, LATE))  # live applies it too
    assert coordinator.cutover(job_id)["shadow_phase"] == "cut_over"
    assert read_order_summary(conn) == fold_order_summary(events_where(conn))
    # Live processing goes on against the new tables, with their bookkeeping: an event the
    # shadow applied is not applied again, a new one is.
    assert not live.process_live(ctx, HANDLER, items_of(conn, newcomer, LATE)).applied
    append_items(conn, newcomer, 2, LATE)
    assert len(live.process_live(ctx, HANDLER, items_of(conn, newcomer, LATE)).applied) == 2
    assert read_order_summary(conn) == fold_order_summary(events_where(conn))

    # Rollback: the previous tables (the corruption included), caught up with what was
    # committed since the cutover, each event once.
    assert coordinator.rollback(job_id)["shadow_phase"] == "rolled_back"
    previous = read_order_summary(conn)
    expected = fold_order_summary(events_where(conn))
    assert {k for k in previous if previous[k] != expected[k]} == corrupted
    assert previous[newcomer] == expected[newcomer]
    append_items(conn, newcomer, 1, LATE)
    assert len(live.process_live(ctx, HANDLER, items_of(conn, newcomer, LATE)).applied) == 1
    assert read_order_summary(conn)[newcomer] == fold_order_summary(events_where(conn))[newcomer]

    schema = shadow_schema(conn, job_id)
    assert coordinator.discard(job_id)["shadow_phase"] == "discarded"
    assert count(conn, "SELECT count(*) FROM pg_namespace WHERE nspname = %s", (schema,)) == 0
    ledgers = "SELECT count(*) FROM handler_state WHERE handler_name LIKE %s"
    assert count(conn, ledgers, (f"%{job_id}",)) == 0
    with pytest.raises(InvalidJobState, match="cannot cut over"):
        coordinator.cutover(job_id)


def test_the_shadow_verbs_from_the_command_line(
    coordinator: Coordinator, conn: Connection, settings: Settings
) -> None:
    assert coordinator.wait(coordinator.submit(HANDLER, slices=2))["status"] == "completed"
    conn.execute("UPDATE order_summary SET status = 'lost' WHERE order_id = %s",
                 (seed.aggregate_id(7, 2),))  # fmt: skip
    out = ok(replay(settings, "submit", HANDLER, "--reset", "--shadow", "--slices", "2", "--wait"))
    job_id = coordinator.list(1)[0]["job_id"]
    assert job_id in out
    assert "shadow rebuild: ready for cutover" in ok(replay(settings, "status", job_id))
    text = ok(replay(settings, "diff", job_id))
    assert "changed 1 (columns: status 1)" in text and seed.aggregate_id(7, 2) in text
    report = json.loads(ok(replay(settings, "diff", job_id, "--json")))
    assert report["tables"][0]["changed"] == 1

    refused = replay(settings, "rollback", job_id)
    assert refused.returncode == 2 and "cannot roll back" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    ok(replay(settings, "cutover", job_id))
    assert read_order_summary(conn) == fold_order_summary(events_where(conn))
    ok(replay(settings, "discard", job_id))
    assert "shadow rebuild: discarded" in ok(replay(settings, "status", job_id))
    plain = coordinator.list(5)[-1]["job_id"]  # the first job: no shadow
    refused = replay(settings, "diff", plain)
    assert refused.returncode == 2 and "not a shadow rebuild" in refused.stderr


def test_a_cutover_waits_for_no_job_of_its_consumer(
    coordinator: Coordinator, conn: Connection, late: None
) -> None:
    job_id = coordinator.submit(HANDLER, reset=True, shadow=True, slices=2)
    assert coordinator.wait(job_id, timeout=120)["shadow_phase"] == "ready"
    append_items(conn, seed.aggregate_id(7, 4), 20, LATE)
    running = coordinator.submit(HANDLER, max_events_per_second=1)  # a slow catch-up of live
    with pytest.raises(InvalidJobState, match="has a job running"):
        coordinator.cutover(job_id)
    coordinator.cancel(running)
    assert coordinator.cutover(job_id)["shadow_phase"] == "cut_over"
    # resuming the cancelled catch-up is fine (it claims under the new bookkeeping); resuming
    # the shadow's own job after a discard is not: its schema is gone
    coordinator.discard(job_id)
    with pytest.raises(InvalidJobState, match="not its own to write"):
        coordinator.resume(job_id)


def test_a_cutover_waits_for_a_catch_up_being_planned(
    coordinator: Coordinator, conn: Connection, late: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A catch-up whose planning took its snapshot before the cutover looked for running jobs,
    and commits after: the cutover waits for it and is refused, instead of swapping the
    bookkeeping the job was planned with from under it."""
    job_id = coordinator.submit(HANDLER, reset=True, shadow=True, slices=2)
    assert coordinator.wait(job_id, timeout=120)["shadow_phase"] == "ready"
    append_items(conn, seed.aggregate_id(7, 5), 20, LATE)
    frozen = threading.Event()
    plain = planning._catches_up_to

    def slow(*args: Any) -> Any:  # inside the planning transaction, after the freeze
        frozen.set()
        time.sleep(2)
        return plain(*args)

    monkeypatch.setattr(planning, "_catches_up_to", slow)
    submitted: list[str] = []
    submit = threading.Thread(
        target=lambda: submitted.append(coordinator.submit(HANDLER, max_events_per_second=1))
    )
    submit.start()
    assert frozen.wait(30)
    with pytest.raises(InvalidJobState, match="has a job running"):
        coordinator.cutover(job_id)
    submit.join(30)
    assert submitted, "the catch-up was not planned"
    assert coordinator.get(job_id)["shadow_phase"] == "ready"
    coordinator.cancel(submitted[0])
    assert coordinator.cutover(job_id)["shadow_phase"] == "cut_over"
