"""The PostgreSQL ``event`` table as a source: the first implementation of ``Source``.

Frozen scope: the planning transaction's snapshot. Each event records the transaction that
appended it (``event.txid``) and a job reads only events visible in its snapshot
(``pg_visible_in_snapshot``), which, unlike a cut-off timestamp or sequence, cannot miss a
transaction that started before planning and committed after. Slices are ranges of aggregate ids
(read in ``(aggregate_id, sequence_num)`` order) or of ``occurred_at`` (read in ``(occurred_at,
event_id)`` order), with keyset pagination after the checkpoint: never OFFSET, never all in
memory. The statements are the named queries of ``shared/queries/events.sql``; their WHERE
clauses are assembled from constant SQL fragments only, and every value travels as a
query parameter (``shared.sources.event_sql``). ``select_events`` is the one SELECT of events:
slice batches (``shared.sources.event_reader``), events by id, an aggregate's stream
(``shared.aggregates``) and live processing (``NEW_EVENTS``) compose it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any, ClassVar
from uuid import UUID

from shared.archive import staging
from shared.archive.wanted import Wanted
from shared.db import Connection, sql
from shared.errors import SourceLost
from shared.handlers import Event
from shared.scope import Scope, SliceBounds
from shared.slicing import PlannedSlice, SliceBy, time_fractions, time_slices
from shared.sources.event_reader import EventTableReader
from shared.sources.event_sql import (
    AGG_ORDER,
    BY_ID,
    EVENT_TABLE,
    EVENTS_BY_ID,
    NEW_EVENTS,
    QUERIES,
    STREAM,
    STREAM_RANGE,
    Frozen,
    select_events,
    stream,
    unfreeze,
    where,
    where_clause,
)  # fmt: skip
from shared.sources.interface import Checkpoint, SliceReader, Source

# The reader, the vocabulary and the frozen scope are this source's: importable from here.
__all__ = [
    "EVENTS_BY_ID", "NEW_EVENTS", "STREAM", "EventTableReader", "Frozen", "PostgresSource",
    "plan_by_aggregate", "plan_by_time", "select_events", "stream", "unfreeze", "where",
]  # fmt: skip


class PostgresSource(Source):
    """The ``event`` table of the jobs' own database (see the module's docstring)."""

    name: ClassVar[str] = "postgres"
    slice_by: ClassVar[tuple[SliceBy, ...]] = (SliceBy.AGGREGATE, SliceBy.TIME)
    coverage: ClassVar[bool] = True
    progress: ClassVar[bool] = True
    reader_class: ClassVar[type[SliceReader]] = EventTableReader

    def freeze(self, conn: Connection) -> str:
        row = conn.execute(QUERIES["current_snapshot"]).fetchone()
        assert row is not None
        return str(row["s"])

    def prepare(self, conn: Connection, scope: Scope, frozen: str) -> str:
        """Count the archived events of ``scope`` per aggregate (``shared.archive.staging``),
        in the planning's snapshot: planning then counts both tiers as one. A catch-up's starts
        and time slices need their keys too: ``_archived_keys``."""
        staging.stage_counts(conn, _wanted(scope))
        if scope.aggregate_id is not None:  # a reset forgets its archived events' markers too
            _archived_keys(conn, scope)
        return frozen

    def missing_event_types(self, conn: Connection, event_types: tuple[str, ...]) -> list[str]:
        rows = conn.execute(QUERIES["missing_event_types"], (list(event_types),)).fetchall()
        return [r["t"] for r in rows]

    def known_event_types(self, conn: Connection, limit: int = 30) -> list[str]:
        rows = conn.execute(QUERIES["known_event_types"], (limit,)).fetchall()
        return [r["event_type"] for r in rows]

    def narrow(
        self,
        conn: Connection,
        scope: Scope,
        frozen: str,
        slice_by: SliceBy,
        handler_name: str,
        job_id: UUID,
    ) -> str:
        """A catch-up sliced by aggregate covers, of each aggregate, the events after the
        handler's watermark as it stands now (0011_catch_up_starts), and only the aggregates with
        some: the aggregates it is up to date on are not read. When the handler is caught up to
        a snapshot (0012_caught_up), only the aggregates of events committed since are visited."""
        if slice_by is not SliceBy.AGGREGATE:
            return frozen
        params = {"job_id": job_id, "handler": handler_name}
        row = conn.execute(QUERIES["caught_up"], params).fetchone()
        since = row["caught_up"] if row is not None and scope.aggregate_id is None else None
        # No visibility condition: planning's snapshot is the frozen one (``freeze`` is its
        # first statement), and without it the counts can be answered from the index alone.
        conds, scope_params = where(scope, None)
        scoped = unfreeze(frozen)
        _archived_keys(conn, scope)
        if since is not None:
            counted = QUERIES["counted_since_caught_up"]
        else:
            one = scope.aggregate_id is not None
            starts = QUERIES["starts_of_one_aggregate" if one else "starts_of_every_aggregate"]
            counted = f"{starts}\n{QUERIES['count_after_starts']}"
        events = staging.planned(conn)
        query = sql.SQL(QUERIES["freeze_starts"]).format(
            counted=sql.SQL(counted).format(where=where_clause(conds), events=events)
        )
        conn.execute(query, {**params, **scope_params, "since": since})
        return str(replace(scoped, starts=job_id, since=since))

    def count(self, conn: Connection, scope: Scope, frozen: str) -> int:
        scoped = unfreeze(frozen)
        if scoped.starts is not None:
            row = conn.execute(QUERIES["count_starts"], {"starts": scoped.starts}).fetchone()
            return int(row["n"]) if row else 0
        conds, params = where(scope, scoped.snapshot)
        counting = "count_with_archived" if staging.counted(conn) else "count"
        query = sql.SQL(QUERIES[counting]).format(where=where_clause(conds), events=EVENT_TABLE)
        row = conn.execute(query, params).fetchone()
        return int(row["n"]) if row else 0

    def plan(
        self, conn: Connection, scope: Scope, frozen: str, slice_by: SliceBy, slices: int
    ) -> list[PlannedSlice]:
        scoped = unfreeze(frozen)
        if slice_by is SliceBy.TIME:
            _archived_keys(conn, scope)
            return plan_by_time(conn, scope, scoped.snapshot, slices, staging.planned(conn))
        if scoped.starts is not None:
            counts = sql.SQL(QUERIES["count_per_start"])
            query = sql.SQL(QUERIES["plan_by_aggregate"]).format(per_aggregate=counts)
            rows = conn.execute(query, {"starts": scoped.starts, "slices": slices})
            return _aggregate_ranges(rows.fetchall())
        return plan_by_aggregate(conn, scope, scoped.snapshot, slices, staging.counted(conn))

    def events(self, conn: Connection, event_ids: Sequence[UUID | str]) -> list[Event]:
        ids = [str(e) for e in event_ids]
        rows: list[Any] = conn.execute(EVENTS_BY_ID, {"event_ids": ids}).fetchall()
        return rows

    def reread(
        self, conn: Connection, scope: Scope, parked: Sequence[Mapping[str, Any]]
    ) -> list[Event]:
        """By id; a parked event archived since it was parked, from the archive (found by
        its aggregate)."""
        found = self.events(conn, [p["event_id"] for p in parked])
        have = {str(e["event_id"]) for e in found}
        for p in parked:
            if str(p["event_id"]) in have:
                continue
            if not p.get("aggregate_id"):  # parked before 0009 kept it: nowhere to look
                raise SourceLost(f"event {p['event_id']} is no longer in the event table")
            found += _archived_by_id(conn, p["aggregate_id"], [p["event_id"]])
        return sorted(found, key=lambda e: (e["aggregate_id"], e["sequence_num"]))

    def describe_checkpoint(self, checkpoint: Checkpoint | None) -> str:
        if checkpoint is None:
            return "start"
        if "aggregate_id" in checkpoint:
            return f"after {checkpoint['aggregate_id']} #{checkpoint['sequence_num']}"
        return f"after {checkpoint['occurred_at']} ({checkpoint['event_id']})"


def stream_with_archive(conn: Connection, aggregate_id: str, after: int, upto: int) -> list[Event]:
    """``stream`` from the event table and the archive as one."""
    params = {"aggregate_id": aggregate_id, "after": after, "upto": upto}
    return _with_archive(conn, aggregate_id, STREAM_RANGE, params)


def _with_archive(
    conn: Connection, aggregate_id: str, cond: sql.Composable, params: dict[str, Any]
) -> list[Event]:
    """The events of one aggregate that ``cond`` picks, from the event table and the archive
    as one: its archived events staged for the read, which fails as a serialization failure if
    events move between the tiers meanwhile."""
    staged = staging.stage(conn, Wanted(aggregate_id=aggregate_id), staging.ONE)
    guarded = sql.SQL(" AND ").join([cond, staging.GUARD])
    query = select_events(guarded, AGG_ORDER, events=staging.relation(staged))
    rows: list[Any] = conn.execute(query, {**params, **staging.params(staged)}).fetchall()
    staging.release(conn, staged)
    return rows


def _wanted(scope: Scope) -> Wanted:
    """What of the archive a scope covers."""
    return Wanted(
        aggregate_id=scope.aggregate_id, from_time=scope.from_time, to_time=scope.to_time,
        event_types=scope.event_types,
    )  # fmt: skip


def _archived_keys(conn: Connection, scope: Scope) -> None:
    """Stage the keys of the scope's archived events, once, if planning counted some: a
    catch-up's starts and time slices need their positions and times."""
    if staging.counted(conn) and not staging.keys_staged(conn):
        staging.stage_keys(conn, _wanted(scope))


def _archived_by_id(conn: Connection, aggregate_id: str, event_ids: Sequence[Any]) -> list[Event]:
    return _with_archive(conn, aggregate_id, BY_ID, {"event_ids": [str(e) for e in event_ids]})


def plan_by_aggregate(
    conn: Connection, scope: Scope, snapshot: str, slices: int, archived: bool = False
) -> list[PlannedSlice]:
    """Slices of about equal counts; ``archived``: with the archived events that planning
    counted (``staging.stage_counts``)."""
    conds, params = where(scope, snapshot)
    counting = "count_per_aggregate_with_archived" if archived else "count_per_aggregate"
    counts = sql.SQL(QUERIES[counting]).format(where=where_clause(conds), events=EVENT_TABLE)
    query = sql.SQL(QUERIES["plan_by_aggregate"]).format(per_aggregate=counts)
    rows = conn.execute(query, {**params, "slices": slices}).fetchall()
    return _aggregate_ranges(rows)


def _aggregate_ranges(rows: Sequence[Mapping[str, Any]]) -> list[PlannedSlice]:
    return [
        PlannedSlice(
            slice_no=i,
            bounds=SliceBounds(
                first_aggregate=r["first_aggregate"], last_aggregate=r["last_aggregate"]
            ),
            total_events=int(r["events"]),
        )
        for i, r in enumerate(rows)
    ]


def plan_by_time(
    conn: Connection,
    scope: Scope,
    snapshot: str,
    slices: int,
    events: sql.Composable = EVENT_TABLE,
) -> list[PlannedSlice]:
    conds, params = where(scope, snapshot)
    cond = where_clause(conds)
    bounds: list[datetime] = []
    if slices > 1:
        row = conn.execute(
            sql.SQL(QUERIES["time_quantiles"]).format(where=cond, events=events),
            {**params, "fractions": time_fractions(slices)},
        ).fetchone()
        # Many events at one instant can make quantiles repeat; a boundary only counts once.
        bounds = sorted({q for q in (row["q"] if row and row["q"] else []) if q is not None})
    rows = conn.execute(
        sql.SQL(QUERIES["count_by_time_bucket"]).format(where=cond, events=events),
        {**params, "bounds": bounds},
    ).fetchall()
    return time_slices(bounds, {int(r["bucket"]): int(r["n"]) for r in rows})
