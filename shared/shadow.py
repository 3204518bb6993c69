"""Shadow rebuilds (issue 16): a handler's state rebuilt beside the live one, compared, then
swapped in.

``submit_replay(consumer, reset=True, shadow=True)`` plans a full rebuild whose slices write
copies of the handler's tables (``handler.tables``) in a schema of the job's own
(``replay_shadow_<job>``): the batch's transaction puts that schema first on its search path, so
the handler's SQL, unchanged, writes the copies, while the live tables keep serving reads and
live processing keeps writing them. The shadow's bookkeeping (progress, markers, its rebuild's
coverage, a live position) is kept under a handler name of its own, its *ledger*
(``shadow:<job>``), so nothing the live handler processed is touched.

Phases (``replay_shadow.phase``): ``rebuilding`` while the job runs; ``catching_up`` once its
slices are done, while the events committed since the job's snapshot are applied to the shadow
(a live step of the ledger, in the shadow schema); ``ready`` after that: the two sides describe
the same events, up to what was committed since.
"""

from __future__ import annotations

import copy
import enum
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from shared import idempotency, live, queries
from shared.db import Connection, sql
from shared.errors import InvalidJobState, InvalidRequest
from shared.handlers import IdempotentEventHandler, Registry
from shared.jobs import Status

log = logging.getLogger(__name__)

QUERIES = queries.load("shadow")


class Phase(enum.StrEnum):
    REBUILDING = "rebuilding"
    CATCHING_UP = "catching_up"
    READY = "ready"
    CUT_OVER = "cut_over"
    ROLLED_BACK = "rolled_back"
    DISCARDED = "discarded"
    FAILED = "failed"


def ledger(job_id: UUID) -> str:
    """The handler name the shadow's bookkeeping is kept under."""
    return f"shadow:{job_id}"


@dataclass(frozen=True)
class Shadow:
    job_id: UUID
    consumer: str
    shadow_schema: str
    old_schema: str
    live_schema: str
    tables: tuple[str, ...]
    phase: Phase

    @property
    def ledger(self) -> str:
        return ledger(self.job_id)

    @classmethod
    def of(cls, row: Any) -> Shadow:
        return cls(
            row["job_id"], row["consumer"], row["shadow_schema"], row["old_schema"],
            row["live_schema"], tuple(row["tables"]), Phase(row["phase"]),
        )  # fmt: skip


def tables_of(handler: IdempotentEventHandler) -> tuple[str, ...]:
    """The tables a handler declares (``tables``), or ``InvalidRequest``."""
    tables = tuple(getattr(handler, "tables", ()) or ())
    if not tables or not all(isinstance(t, str) and t for t in tables):
        raise InvalidRequest(
            f"handler {handler.name!r} declares no tables: a shadow rebuild copies the tables a"
            " handler names in its `tables` attribute (e.g. tables = ('order_summary',))"
        )
    return tables


def prepare(
    conn: Connection, job_id: UUID, handler: IdempotentEventHandler, snapshot: str
) -> Shadow:
    """At planning, in its transaction: the shadow schema with an empty copy of each of the
    handler's tables (columns, defaults, constraints, indexes), the ledger's rebuild (its
    coverage: ``snapshot``) and live position, and the shadow's row. Raises ``InvalidRequest``
    for a handler without tables, and ``InvalidJobState`` if the consumer has a shadow that is
    not discarded."""
    tables = tables_of(handler)
    row = conn.execute(QUERIES["open_shadow"], {"consumer": handler.name}).fetchone()
    if row is not None:
        raise InvalidJobState(
            f"consumer {handler.name!r} has a shadow rebuild ({row['job_id']}, {row['phase']}):"
            f" `replay discard {row['job_id']}` first"
        )
    live_schema = _live_schema(conn, handler.name, tables)
    hex_id = job_id.hex
    shadow = Shadow(
        job_id, handler.name, f"replay_shadow_{hex_id}", f"replay_old_{hex_id}", live_schema,
        tables, Phase.REBUILDING,
    )  # fmt: skip
    conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(shadow.shadow_schema)))
    for table in tables:
        conn.execute(
            sql.SQL("CREATE TABLE {} (LIKE {} INCLUDING ALL)").format(
                sql.Identifier(shadow.shadow_schema, table), sql.Identifier(live_schema, table)
            )
        )
    idempotency.current_epoch(conn, shadow.ledger)  # its state row
    idempotency.start_rebuild(conn, shadow.ledger, job_id, snapshot)
    conn.execute(QUERIES["start_position"], {"ledger": shadow.ledger, "snapshot": snapshot})
    conn.execute(
        QUERIES["insert_shadow"],
        {
            "job_id": job_id, "consumer": handler.name, "shadow_schema": shadow.shadow_schema,
            "old_schema": shadow.old_schema, "live_schema": live_schema, "tables": list(tables),
        },
    )  # fmt: skip
    return shadow


def _live_schema(conn: Connection, consumer: str, tables: tuple[str, ...]) -> str:
    schemas: set[str] = set()
    for table in tables:
        row = conn.execute(QUERIES["table_schema"], {"table": table}).fetchone()
        if row is None:
            raise InvalidRequest(
                f"handler {consumer!r} declares table {table!r}, which does not exist"
            )
        schemas.add(row["schema"])
    if len(schemas) != 1:
        names = ", ".join(sorted(schemas))
        raise InvalidRequest(
            f"handler {consumer!r} declares tables in several schemas ({names}): a shadow"
            " rebuild swaps one schema's tables"
        )
    return schemas.pop()


def find(conn: Connection, job_id: UUID) -> Shadow | None:
    row = conn.execute(QUERIES["shadow"], {"job_id": job_id}).fetchone()
    return None if row is None else Shadow.of(row)


def in_shadow(
    handler: IdempotentEventHandler, shadow: Shadow, name: str | None = None
) -> IdempotentEventHandler:
    """The handler as the shadow's slices and catch-ups run it: the same code under the
    shadow's ledger name (or ``name``: its bookkeeping), never a live handler."""
    attributes = {"name": name or shadow.ledger, "live": False}
    twin_class = type(f"{type(handler).__name__}InShadow", (type(handler),), attributes)
    twin = copy.copy(handler)
    twin.__class__ = twin_class
    return twin


def check_writable(shadow: Shadow) -> None:
    """A shadow's job writes its tables only while it is being built (or its parked events
    retried before a cutover): once cut over, rolled back or discarded its schema is not its
    own, and writing through a search path without it would write the live tables."""
    if shadow.phase not in (Phase.REBUILDING, Phase.CATCHING_UP, Phase.READY):
        phase = shadow.phase.value.replace("_", " ")
        raise InvalidJobState(
            f"job {shadow.job_id} is a shadow rebuild that is {phase}: its tables are not its own"
            " to write; submit a new one"
        )


def enter(conn: Connection, shadow: Shadow) -> None:
    """In the current transaction, unqualified names resolve to the shadow's tables first."""
    conn.execute(QUERIES["enter"], {"schema": shadow.shadow_schema})


def catch_up(
    conn: Connection, handler: IdempotentEventHandler, shadow: Shadow, name: str | None = None
) -> int:
    """Apply to the shadow, exactly once each, the events committed since its last catch-up (at
    first: since the job's snapshot): a live step of its ledger (or ``name``), in the shadow
    schema. Returns how many events it saw."""
    twin = in_shadow(handler, shadow, name)
    with conn.transaction():
        enter(conn, shadow)
        return live.step(conn, twin, is_replay=True).events


def settle(
    conn: Connection,
    registry: Registry,
    job_id: UUID,
    on_catch_up: Callable[[], None] | None = None,
) -> Phase | None:
    """Once the shadow's job has completed: catch the shadow up (calling ``on_catch_up``
    first) and make it ready (idempotent: the finalization and the reconciler both call it).
    None if the job is not a shadow's."""
    with conn.transaction():
        row = conn.execute(QUERIES["lock_shadow"], {"job_id": job_id}).fetchone()
        if row is None:
            return None
        shadow = Shadow.of(row)
        if shadow.phase not in (Phase.REBUILDING, Phase.CATCHING_UP):
            return shadow.phase
        if row["job_status"] != Status.COMPLETED:
            return shadow.phase
        set_phase(conn, job_id, Phase.CATCHING_UP)
    if on_catch_up is not None:
        on_catch_up()
    seen = catch_up(conn, registry.get(shadow.consumer), shadow)
    with conn.transaction():
        row = conn.execute(QUERIES["lock_shadow"], {"job_id": job_id}).fetchone()
        if row is None or row["phase"] != Phase.CATCHING_UP:  # discarded meanwhile
            return None if row is None else Phase(row["phase"])
        set_phase(conn, job_id, Phase.READY)
    log.info("shadow of job %s is ready (%d events caught up)", job_id, seen)
    return Phase.READY


def unsettled(conn: Connection) -> list[UUID]:
    """The shadows whose job completed but which are not ready yet."""
    rows = conn.execute(QUERIES["unsettled"], {"done": Status.COMPLETED})
    return [r["job_id"] for r in rows]


def set_phase(conn: Connection, job_id: UUID, phase: Phase) -> None:
    conn.execute(QUERIES["set_phase"], {"job_id": job_id, "phase": phase})
