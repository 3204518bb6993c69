"""The event table's SQL vocabulary, shared by its source (``shared.sources.postgres``), its
slice reader (``shared.sources.event_reader``), live processing and aggregate loading: the
condition fragments and orders composed into the queries of ``shared/queries/events.sql``
(``{where}``, ``{order}``), the one SELECT of events, and the text of a frozen scope.
Every value travels as a query parameter.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from uuid import UUID

from shared import queries
from shared.db import Connection, sql
from shared.handlers import Event
from shared.scope import EVENT_COLUMNS, Scope

QUERIES = queries.load("events")

# The conditions and orders below are composed into the queries of events.sql ({where},
# {order}): which of them apply depends on the scope, the slice and the checkpoint, so they are
# SQL constants here rather than named queries. Every value travels as a query parameter.
VISIBLE = sql.SQL("pg_visible_in_snapshot(txid, %(snapshot)s::pg_snapshot)")
AGGREGATE = sql.SQL("aggregate_id = %(aggregate_id)s")
FROM_TIME = sql.SQL("occurred_at >= %(from_time)s")
TO_TIME = sql.SQL("occurred_at < %(to_time)s")
EVENT_TYPES = sql.SQL("event_type = ANY(%(event_types)s::text[])")
# Keyset pagination of a slice: each batch starts strictly after the checkpoint, in index order.
AGG_START = sql.SQL("aggregate_id >= %(first_aggregate)s")
AGG_AFTER = sql.SQL("(aggregate_id, sequence_num) > (%(after_aggregate)s, %(after_sequence)s)")
AGG_END = sql.SQL("aggregate_id <= %(last_aggregate)s")
TIME_START = sql.SQL("occurred_at >= %(slice_from)s")
TIME_AFTER = sql.SQL("(occurred_at, event_id) > (%(after_time)s, %(after_event)s)")
TIME_END = sql.SQL("occurred_at < %(slice_to)s")
AGG_ORDER = sql.SQL("ORDER BY aggregate_id, sequence_num")
TIME_ORDER = sql.SQL("ORDER BY occurred_at, event_id")
AGG_LAST = sql.SQL("ORDER BY aggregate_id DESC, sequence_num DESC")
TIME_LAST = sql.SQL("ORDER BY occurred_at DESC, event_id DESC")
LIMIT = sql.SQL("LIMIT %(limit)s")
COVERED = sql.SQL("pg_visible_in_snapshot(txid, %(covered)s::pg_snapshot) AS _covered")
BY_ID = sql.SQL("event_id = ANY(%(event_ids)s::uuid[])")
STREAM_RANGE = sql.SQL(
    "aggregate_id = %(aggregate_id)s AND sequence_num > %(after)s AND sequence_num <= %(upto)s"
)
# Committed after snapshot prev and visible in snapshot now (0005_live.sql says why a snapshot,
# not a sequence, is a live position).
# A catch-up's range of starts in a slice (select_after_starts): what AGG_START/AGG_AFTER and
# AGG_END say of its events, said of replay_start's aggregates so the others are not visited.
STARTS_FROM = sql.SQL("s.aggregate_id >= %(first_aggregate)s")
STARTS_AFTER = sql.SQL("s.aggregate_id >= %(after_aggregate)s")
STARTS_END = sql.SQL("s.aggregate_id <= %(last_aggregate)s")
#: what a catch-up planned from progress adds to its frozen scope (the snapshot): the job whose
#: replay_start rows it reads after (0011_catch_up_starts), and, when it was planned from what
#: the handler was caught up to, that snapshot: it reads only the events committed since
#: (0012_caught_up)
AFTER_PROGRESS = " after the progress kept for job "
NEW_SINCE = ", new since "
#: (in select_after_starts: s is the start)
NEW = sql.SQL("(s.read_all OR NOT pg_visible_in_snapshot(txid, %(since)s::pg_snapshot))")
COMMITTED_BETWEEN = sql.SQL(
    "txid >= pg_snapshot_xmin(%(prev)s::pg_snapshot)"
    " AND NOT pg_visible_in_snapshot(txid, %(prev)s::pg_snapshot)"
    " AND pg_visible_in_snapshot(txid, %(now)s::pg_snapshot)"
)


#: where events are read from when no archived events are staged (``staging.relation``)
EVENT_TABLE = sql.SQL("event")


def select_events(
    where: sql.Composable,
    order: sql.Composable,
    columns: sql.Composable = EVENT_COLUMNS,
    events: sql.Composable = EVENT_TABLE,
) -> sql.Composed:
    """The one SELECT of events (``select_events`` of events.sql): the ``Event`` columns (or
    ``columns``) of the events ``where`` picks, in ``order``, from ``events`` (the event
    table, or with the archived events staged: ``shared.archive.staging.relation``)."""
    return sql.SQL(QUERIES["select_events"]).format(
        columns=columns, where=where, order=order, events=events
    )


#: events by id (%(event_ids)s), in per-aggregate order
EVENTS_BY_ID = select_events(BY_ID, AGG_ORDER)
#: one aggregate's events (%(aggregate_id)s) with %(after)s < sequence_num <= %(upto)s, in order
STREAM = select_events(STREAM_RANGE, AGG_ORDER)
#: live processing (shared/live.py): the events committed after snapshot %(prev)s and visible
#: in snapshot %(now)s, in per-aggregate order
NEW_EVENTS = select_events(COMMITTED_BETWEEN, AGG_ORDER)


@dataclass(frozen=True)
class Frozen:
    """A job's frozen scope: the snapshot; for a catch-up planned from progress, the job whose
    starts it reads after, and the snapshot whose events it leaves out, if any."""

    snapshot: str
    starts: UUID | None = None
    since: str | None = None

    def __str__(self) -> str:
        if self.starts is None:
            return self.snapshot
        since = "" if self.since is None else f"{NEW_SINCE}{self.since}"
        return f"{self.snapshot}{AFTER_PROGRESS}{self.starts}{since}"


def unfreeze(frozen: str) -> Frozen:
    """The frozen scope that ``str(Frozen)`` wrote."""
    snapshot, _, rest = frozen.partition(AFTER_PROGRESS)
    job, _, since = rest.partition(NEW_SINCE)
    return Frozen(snapshot, UUID(job) if job else None, since or None)


def where(scope: Scope, snapshot: str | None) -> tuple[list[sql.Composable], dict[str, Any]]:
    """The conditions and parameters that select ``scope`` (at ``snapshot`` if given)."""
    conds: list[sql.Composable] = []
    params: dict[str, Any] = {}
    if snapshot is not None:
        conds.append(VISIBLE)
        params["snapshot"] = snapshot
    if scope.aggregate_id is not None:
        conds.append(AGGREGATE)
        params["aggregate_id"] = scope.aggregate_id
    if scope.from_time is not None:
        conds.append(FROM_TIME)
        params["from_time"] = scope.from_time
    if scope.to_time is not None:
        conds.append(TO_TIME)
        params["to_time"] = scope.to_time
    if scope.event_types:
        conds.append(EVENT_TYPES)
        params["event_types"] = list(scope.event_types)
    return conds, params


def where_clause(conds: list[sql.Composable]) -> sql.Composable:
    if not conds:
        return sql.SQL("TRUE")
    return sql.SQL(" AND ").join(conds)


def stream(conn: Connection, aggregate_id: str, after: int, upto: int) -> list[Event]:
    """The events of one aggregate with ``after < sequence_num <= upto``, in order."""
    params = {"aggregate_id": aggregate_id, "after": after, "upto": upto}
    rows: list[Any] = conn.execute(STREAM, params).fetchall()
    return rows
