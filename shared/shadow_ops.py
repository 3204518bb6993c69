"""What an operator does with a ready shadow (issue 16): cut it over, roll the cutover back, or
discard what is left. See ``shared.shadow`` for the phases.

A **cutover** is one transaction: the consumer's live processing is held off (its batches take a
lock that the cutover takes exclusively); the shadow catches up with every event committed so
far; each live table moves to the job's old schema and its shadow copy takes its place; the
ledgers follow (the live handler's bookkeeping is kept as ``old:<job>``, the shadow's becomes the
handler's, with a new cache epoch). Readers wait for the swap's locks and then read the new
tables: never an empty or half-built one. Live processing then goes on against the new tables
with their bookkeeping: an event committed during the swap is applied to the new side once.

A **rollback** is the same swap back, after catching the old tables up with what was committed
since the cutover. A **discard** drops the side that is not live (the shadow, or after a cutover
the old tables) with its bookkeeping.
"""

from __future__ import annotations

from uuid import UUID

from shared import idempotency, jobs, queries
from shared.db import Connection, sql
from shared.errors import InvalidJobState, NotFound
from shared.handlers import Registry
from shared.jobs import Status
from shared.shadow import Phase, Shadow, catch_up, ledger, set_phase

QUERIES = queries.load("shadow")


def old_ledger(job_id: UUID) -> str:
    """The handler name the live handler's bookkeeping is kept under after a cutover."""
    return f"old:{job_id}"


def _locked(conn: Connection, job_id: UUID, allowed: tuple[Phase, ...], verb: str) -> Shadow:
    row = conn.execute(QUERIES["lock_shadow"], {"job_id": job_id}).fetchone()
    if row is None:
        raise NotFound(f"job {job_id} is not a shadow rebuild (replay submit --reset --shadow)")
    found = Shadow.of(row)
    if found.phase not in allowed:
        raise InvalidJobState(
            f"cannot {verb} job {job_id}: its shadow is {found.phase.value.replace('_', ' ')}"
            f" (it must be {' or '.join(p.value.replace('_', ' ') for p in allowed)})"
        )
    return found


def _no_job_running(conn: Connection, found: Shadow, verb: str) -> None:
    """A swap under a running job of the consumer would let it apply, under the new
    bookkeeping, what it planned with the old one: refused until it ends. A planning or a
    resume in progress is waited for (and new ones wait for the swap)."""
    conn.execute(QUERIES["hold_planning_off"], {"consumer": found.consumer})
    conn.execute(QUERIES["lock_consumer"], {"consumer": found.consumer})
    active = jobs.active_job_id(conn, found.consumer)
    if active is not None:
        raise InvalidJobState(
            f"cannot {verb} job {found.job_id}: consumer {found.consumer!r} has a job running"
            f" ({active}); wait for it or `replay cancel {active}`, then {verb} again"
        )


def cutover(conn: Connection, registry: Registry, job_id: UUID) -> Phase:
    """Swap the ready shadow in (see the module's docstring); returns the new phase."""
    with conn.transaction():
        found = _locked(conn, job_id, (Phase.READY, Phase.ROLLED_BACK), "cut over")
        _no_job_running(conn, found, "cut over")
        handler = registry.get(found.consumer)
        conn.execute(QUERIES["pause_live"], {"consumer": found.consumer})
        catch_up(conn, handler, found)
        old = old_ledger(job_id)
        conn.execute(QUERIES["live_position"], {"ledger": old, "consumer": found.consumer})
        conn.execute(QUERIES["drop_position"], {"ledger": found.ledger})
        _rename(conn, found.consumer, old)
        _rename(conn, found.ledger, found.consumer)
        idempotency.bump_epoch(conn, found.consumer)
        set_phase(conn, job_id, Phase.CUT_OVER)
        # last: the tables' locks, which readers wait on, are held only for the swap itself
        _swap(conn, found, out_to=found.old_schema, in_from=found.shadow_schema)
    return Phase.CUT_OVER


def rollback(conn: Connection, registry: Registry, job_id: UUID) -> Phase:
    """Swap the previous tables back in, caught up with what was committed since the
    cutover; the rebuilt ones go back to the shadow schema (ready to cut over again, or to
    discard)."""
    with conn.transaction():
        found = _locked(conn, job_id, (Phase.CUT_OVER,), "roll back")
        _no_job_running(conn, found, "roll back")
        handler = registry.get(found.consumer)
        conn.execute(QUERIES["pause_live"], {"consumer": found.consumer})
        old = old_ledger(job_id)
        previous = Shadow(
            job_id, found.consumer, found.old_schema, found.old_schema, found.live_schema,
            found.tables, found.phase,
        )  # fmt: skip
        catch_up(conn, handler, previous, old)
        conn.execute(QUERIES["live_position"], {"ledger": found.ledger, "consumer": found.consumer})
        conn.execute(QUERIES["drop_position"], {"ledger": old})
        _rename(conn, found.consumer, found.ledger)
        _rename(conn, old, found.consumer)
        idempotency.bump_epoch(conn, found.consumer)
        set_phase(conn, job_id, Phase.ROLLED_BACK)
        _swap(conn, found, out_to=found.shadow_schema, in_from=found.old_schema)
        conn.execute(sql.SQL("DROP SCHEMA {}").format(sql.Identifier(found.old_schema)))
    return Phase.ROLLED_BACK


def discard(conn: Connection, job_id: UUID) -> Phase:
    """Drop the side that is not live, with its bookkeeping: the shadow (never cut over, or
    rolled back), or after a cutover the previous tables. Live is left as it is."""
    with conn.transaction():
        allowed = (Phase.REBUILDING, Phase.CATCHING_UP, Phase.READY, Phase.ROLLED_BACK,
                   Phase.CUT_OVER)  # fmt: skip
        found = _locked(conn, job_id, allowed, "discard")
        row = conn.execute(QUERIES["shadow"], {"job_id": job_id}).fetchone()
        assert row is not None
        if found.phase is Phase.REBUILDING and not Status(row["job_status"]).final:
            raise InvalidJobState(
                f"cannot discard job {job_id} while it runs: `replay cancel {job_id}` first"
            )
        # after a cutover: the previous tables (the shadow schema is empty); otherwise the shadow
        gone = old_ledger(job_id) if found.phase is Phase.CUT_OVER else ledger(job_id)
        for schema in (found.old_schema, found.shadow_schema):
            drop = sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema))
            conn.execute(drop)
        conn.execute(QUERIES["forget_ledger"], {"ledger": gone})
        set_phase(conn, job_id, Phase.DISCARDED)
    return Phase.DISCARDED


def _swap(conn: Connection, found: Shadow, *, out_to: str, in_from: str) -> None:
    """Each live table to schema ``out_to``, and its counterpart from ``in_from`` in its
    place (``out_to`` is created if missing)."""
    conn.execute(QUERIES["lock_timeout"])
    conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(out_to)))
    for table in found.tables:
        owned = conn.execute(
            QUERIES["owned_sequences"], {"schema": found.live_schema, "table": table}
        ).fetchall()
        for seq in owned:  # unowned, it stays where it is when the table moves
            conn.execute(
                sql.SQL("ALTER SEQUENCE {} OWNED BY NONE").format(sql.SQL(seq["sequence"]))
            )
        conn.execute(
            sql.SQL("ALTER TABLE {} SET SCHEMA {}").format(
                sql.Identifier(found.live_schema, table), sql.Identifier(out_to)
            )
        )
        conn.execute(
            sql.SQL("ALTER TABLE {} SET SCHEMA {}").format(
                sql.Identifier(in_from, table), sql.Identifier(found.live_schema)
            )
        )
        for seq in owned:  # the sequence belongs to the table that went live
            conn.execute(
                sql.SQL("ALTER SEQUENCE {} OWNED BY {}").format(
                    sql.SQL(seq["sequence"]),
                    sql.Identifier(found.live_schema, table, seq["column_name"]),
                )
            )


def _rename(conn: Connection, old: str, new: str) -> None:
    conn.execute(QUERIES["rename_ledger"], {"from": old, "to": new})
