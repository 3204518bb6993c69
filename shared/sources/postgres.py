"""The PostgreSQL ``event`` table as a source: the first implementation of ``Source``.

Frozen scope: the planning transaction's snapshot. Each event records the transaction that
appended it (``event.txid``) and a job reads only events visible in its snapshot
(``pg_visible_in_snapshot``), which, unlike a cut-off timestamp or sequence, cannot miss a
transaction that started before planning and committed after. Slices are ranges of aggregate ids
(read in ``(aggregate_id, sequence_num)`` order) or of ``occurred_at`` (read in ``(occurred_at,
event_id)`` order), with keyset pagination after the checkpoint: never OFFSET, never all in
memory. The statements are the named queries of ``shared/queries/events.sql``; their WHERE
clauses are assembled from the constant SQL fragments below only, and every value travels as a
query parameter. ``select_events`` is the one SELECT of events: slice batches, events by id, an
aggregate's stream (``shared.aggregates``) and live processing (``NEW_EVENTS``) compose it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar
from uuid import UUID

from shared import queries
from shared.db import Connection, sql
from shared.handlers import Event
from shared.scope import EVENT_COLUMNS, Scope, SliceBounds
from shared.slicing import PlannedSlice, SliceBy, time_fractions, time_slices
from shared.sources.interface import Batch, Checkpoint, Folded, SliceReader, Source

QUERIES = queries.load("events")

# The conditions and orders below are composed into the queries of events.sql ({where},
# {order}): which of them apply depends on the scope, the slice and the checkpoint, so they are
# SQL constants here rather than named queries. Every value travels as a query parameter.
_VISIBLE = sql.SQL("pg_visible_in_snapshot(txid, %(snapshot)s::pg_snapshot)")
_AGGREGATE = sql.SQL("aggregate_id = %(aggregate_id)s")
_FROM_TIME = sql.SQL("occurred_at >= %(from_time)s")
_TO_TIME = sql.SQL("occurred_at < %(to_time)s")
_EVENT_TYPES = sql.SQL("event_type = ANY(%(event_types)s::text[])")
# Keyset pagination of a slice: each batch starts strictly after the checkpoint, in index order.
_AGG_START = sql.SQL("aggregate_id >= %(first_aggregate)s")
_AGG_AFTER = sql.SQL("(aggregate_id, sequence_num) > (%(after_aggregate)s, %(after_sequence)s)")
_AGG_END = sql.SQL("aggregate_id <= %(last_aggregate)s")
_TIME_START = sql.SQL("occurred_at >= %(slice_from)s")
_TIME_AFTER = sql.SQL("(occurred_at, event_id) > (%(after_time)s, %(after_event)s)")
_TIME_END = sql.SQL("occurred_at < %(slice_to)s")
_AGG_ORDER = sql.SQL("ORDER BY aggregate_id, sequence_num")
_TIME_ORDER = sql.SQL("ORDER BY occurred_at, event_id")
_AGG_LAST = sql.SQL("ORDER BY aggregate_id DESC, sequence_num DESC")
_TIME_LAST = sql.SQL("ORDER BY occurred_at DESC, event_id DESC")
_LIMIT = sql.SQL("LIMIT %(limit)s")
_COVERED = sql.SQL("pg_visible_in_snapshot(txid, %(covered)s::pg_snapshot) AS _covered")
_BY_ID = sql.SQL("event_id = ANY(%(event_ids)s::uuid[])")
_STREAM = sql.SQL(
    "aggregate_id = %(aggregate_id)s AND sequence_num > %(after)s AND sequence_num <= %(upto)s"
)
# Committed after snapshot prev and visible in snapshot now (0005_live.sql says why a snapshot,
# not a sequence, is a live position).
# A catch-up's range of starts in a slice (select_after_starts): what _AGG_START/_AGG_AFTER and
# _AGG_END say of its events, said of replay_start's aggregates so the others are not visited.
_STARTS_FROM = sql.SQL("s.aggregate_id >= %(first_aggregate)s")
_STARTS_AFTER = sql.SQL("s.aggregate_id >= %(after_aggregate)s")
_STARTS_END = sql.SQL("s.aggregate_id <= %(last_aggregate)s")
#: what a catch-up planned from progress adds to its frozen scope (the snapshot): the job whose
#: replay_start rows it reads after (0011_catch_up_starts), and, when it was planned from what
#: the handler was caught up to, that snapshot: it reads only the events committed since
#: (0012_caught_up)
_AFTER_PROGRESS = " after the progress kept for job "
_NEW_SINCE = ", new since "
#: (in select_after_starts: s is the start)
_NEW = sql.SQL("(s.read_all OR NOT pg_visible_in_snapshot(txid, %(since)s::pg_snapshot))")
_COMMITTED_BETWEEN = sql.SQL(
    "txid >= pg_snapshot_xmin(%(prev)s::pg_snapshot)"
    " AND NOT pg_visible_in_snapshot(txid, %(prev)s::pg_snapshot)"
    " AND pg_visible_in_snapshot(txid, %(now)s::pg_snapshot)"
)


def select_events(
    where: sql.Composable, order: sql.Composable, columns: sql.Composable = EVENT_COLUMNS
) -> sql.Composed:
    """The one SELECT of the event table's events (``select_events`` of events.sql): the
    ``Event`` columns (or ``columns``) of the events ``where`` picks, in ``order``."""
    return sql.SQL(QUERIES["select_events"]).format(columns=columns, where=where, order=order)


#: events by id (%(event_ids)s), in per-aggregate order
EVENTS_BY_ID = select_events(_BY_ID, _AGG_ORDER)
#: one aggregate's events (%(aggregate_id)s) with %(after)s < sequence_num <= %(upto)s, in order
STREAM = select_events(_STREAM, _AGG_ORDER)
#: live processing (shared/live.py): the events committed after snapshot %(prev)s and visible
#: in snapshot %(now)s, in per-aggregate order
NEW_EVENTS = select_events(_COMMITTED_BETWEEN, _AGG_ORDER)


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
        since = "" if self.since is None else f"{_NEW_SINCE}{self.since}"
        return f"{self.snapshot}{_AFTER_PROGRESS}{self.starts}{since}"


def unfreeze(frozen: str) -> Frozen:
    """The frozen scope that ``str(Frozen)`` wrote."""
    snapshot, _, rest = frozen.partition(_AFTER_PROGRESS)
    job, _, since = rest.partition(_NEW_SINCE)
    return Frozen(snapshot, UUID(job) if job else None, since or None)


def where(scope: Scope, snapshot: str | None) -> tuple[list[sql.Composable], dict[str, Any]]:
    """The conditions and parameters that select ``scope`` (at ``snapshot`` if given)."""
    conds: list[sql.Composable] = []
    params: dict[str, Any] = {}
    if snapshot is not None:
        conds.append(_VISIBLE)
        params["snapshot"] = snapshot
    if scope.aggregate_id is not None:
        conds.append(_AGGREGATE)
        params["aggregate_id"] = scope.aggregate_id
    if scope.from_time is not None:
        conds.append(_FROM_TIME)
        params["from_time"] = scope.from_time
    if scope.to_time is not None:
        conds.append(_TO_TIME)
        params["to_time"] = scope.to_time
    if scope.event_types:
        conds.append(_EVENT_TYPES)
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


@dataclass
class EventTableReader(SliceReader):
    """Reads one slice of a job's scope in batches, after a checkpoint; with ``covered``, each
    event comes with ``_covered``: visible in that snapshot or not."""

    can_fold: ClassVar[bool] = True

    _base: tuple[list[sql.Composable], dict[str, Any]] = field(init=False, repr=False)
    _starts: UUID | None = field(init=False, repr=False)

    def __post_init__(self) -> None:
        frozen = unfreeze(self.frozen)
        self._starts = frozen.starts
        conds, params = where(self.scope, frozen.snapshot)
        if frozen.since is not None:
            conds.append(_NEW)
            params["since"] = frozen.since
        self._base = conds, params

    def read(self, conn: Connection, checkpoint: Checkpoint | None, limit: int) -> Batch:
        query, params = self.query(checkpoint, limit)
        # binary: uuids, timestamps and integers arrive without text parsing
        rows: list[Any] = conn.execute(query, params, binary=True).fetchall()
        covered: set[UUID] = set()
        if self.covered is not None:
            for row in rows:
                if row.pop("_covered"):
                    covered.add(row["event_id"])
        events: list[Event] = rows
        return Batch(events, covered)

    def query(
        self, checkpoint: Checkpoint | None, limit: int | None = None
    ) -> tuple[sql.Composed, dict[str, Any]]:
        """The SELECT of the next batch after ``checkpoint``, and its parameters."""
        conds, base_params = self._base
        conds = list(conds)
        params = dict(base_params, limit=limit or self.batch_size)
        b = self.bounds
        if not b.by_time:
            if checkpoint is None:
                conds.append(_AGG_START)
                params["first_aggregate"] = b.first_aggregate
            else:
                conds.append(_AGG_AFTER)
                params["after_aggregate"] = checkpoint["aggregate_id"]
                params["after_sequence"] = checkpoint["sequence_num"]
            conds.append(_AGG_END)
            params["last_aggregate"] = b.last_aggregate
            order = _AGG_ORDER
        else:
            if checkpoint is None:
                if b.from_time is not None:
                    conds.append(_TIME_START)
                    params["slice_from"] = b.from_time
            else:
                conds.append(_TIME_AFTER)
                params["after_time"] = datetime.fromisoformat(checkpoint["occurred_at"])
                params["after_event"] = UUID(checkpoint["event_id"])
            if b.to_time is not None:
                conds.append(_TIME_END)
                params["slice_to"] = b.to_time
            order = _TIME_ORDER
        cols: sql.Composable = EVENT_COLUMNS
        if self.covered is not None:
            cols = sql.SQL(", ").join([EVENT_COLUMNS, _COVERED])
            params["covered"] = self.covered
        if self._starts is not None and not b.by_time:
            return self._after_starts(conds, cols, params, checkpoint)
        limited = sql.SQL(" ").join([order, _LIMIT])
        return select_events(where_clause(conds), limited, cols), params

    def _after_starts(
        self,
        conds: list[sql.Composable],
        cols: sql.Composable,
        params: dict[str, Any],
        checkpoint: Checkpoint | None,
    ) -> tuple[sql.Composed, dict[str, Any]]:
        """``query`` for a catch-up planned from progress: the same conditions, read only after
        each aggregate's start, and only for aggregates with one (``select_after_starts``)."""
        first = _STARTS_FROM if checkpoint is None else _STARTS_AFTER
        query = sql.SQL(QUERIES["select_after_starts"]).format(
            columns=cols, where=where_clause(conds), first=first, last=_STARTS_END
        )
        return query, {**params, "starts": self._starts}

    def fold(
        self, conn: Connection, checkpoint: Checkpoint | None, fold_sql: str, limit: int
    ) -> Folded | None:
        """The next batch as a relation named ``batch`` for a handler's set-based fold (a
        data-modifying statement, which PostgreSQL runs to completion), returning the batch's
        last event (its position) and the batch's size; None when the slice is done."""
        batch, params = self.query(checkpoint, limit)
        last = _TIME_LAST if self.bounds.by_time else _AGG_LAST
        query = sql.SQL(QUERIES["fold_batch"]).format(
            batch=batch, fold=sql.SQL(fold_sql), last=last
        )
        row = conn.execute(query, params).fetchone()
        return None if row is None else Folded(int(row["n"]), row)

    def checkpoint_after(self, event: Mapping[str, Any]) -> Checkpoint:
        if not self.bounds.by_time:
            return {"aggregate_id": event["aggregate_id"], "sequence_num": event["sequence_num"]}
        return {"occurred_at": event["occurred_at"].isoformat(), "event_id": str(event["event_id"])}


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
        if since is not None:
            counted = QUERIES["counted_since_caught_up"]
        else:
            one = scope.aggregate_id is not None
            starts = QUERIES["starts_of_one_aggregate" if one else "starts_of_every_aggregate"]
            counted = f"{starts}\n{QUERIES['count_after_starts']}"
        query = sql.SQL(QUERIES["freeze_starts"]).format(
            counted=sql.SQL(counted).format(where=where_clause(conds))
        )
        conn.execute(query, {**params, **scope_params, "since": since})
        return str(Frozen(frozen, job_id, since))

    def count(self, conn: Connection, scope: Scope, frozen: str) -> int:
        starts = unfreeze(frozen).starts
        if starts is not None:
            row = conn.execute(QUERIES["count_starts"], {"starts": starts}).fetchone()
            return int(row["n"]) if row else 0
        conds, params = where(scope, frozen)
        query = sql.SQL(QUERIES["count"]).format(where=where_clause(conds))
        row = conn.execute(query, params).fetchone()
        return int(row["n"]) if row else 0

    def plan(
        self, conn: Connection, scope: Scope, frozen: str, slice_by: SliceBy, slices: int
    ) -> list[PlannedSlice]:
        scoped = unfreeze(frozen)
        if slice_by is SliceBy.TIME:
            return plan_by_time(conn, scope, scoped.snapshot, slices)
        if scoped.starts is not None:
            counts = sql.SQL(QUERIES["count_per_start"])
            query = sql.SQL(QUERIES["plan_by_aggregate"]).format(per_aggregate=counts)
            rows = conn.execute(query, {"starts": scoped.starts, "slices": slices})
            return _aggregate_ranges(rows.fetchall())
        return plan_by_aggregate(conn, scope, scoped.snapshot, slices)

    def events(self, conn: Connection, event_ids: Sequence[UUID | str]) -> list[Event]:
        ids = [str(e) for e in event_ids]
        rows: list[Any] = conn.execute(EVENTS_BY_ID, {"event_ids": ids}).fetchall()
        return rows

    def describe_checkpoint(self, checkpoint: Checkpoint | None) -> str:
        if checkpoint is None:
            return "start"
        if "aggregate_id" in checkpoint:
            return f"after {checkpoint['aggregate_id']} #{checkpoint['sequence_num']}"
        return f"after {checkpoint['occurred_at']} ({checkpoint['event_id']})"


def plan_by_aggregate(
    conn: Connection, scope: Scope, snapshot: str, slices: int
) -> list[PlannedSlice]:
    conds, params = where(scope, snapshot)
    counts = sql.SQL(QUERIES["count_per_aggregate"]).format(where=where_clause(conds))
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


def plan_by_time(conn: Connection, scope: Scope, snapshot: str, slices: int) -> list[PlannedSlice]:
    conds, params = where(scope, snapshot)
    cond = where_clause(conds)
    bounds: list[datetime] = []
    if slices > 1:
        row = conn.execute(
            sql.SQL(QUERIES["time_quantiles"]).format(where=cond),
            {**params, "fractions": time_fractions(slices)},
        ).fetchone()
        # Many events at one instant can make quantiles repeat; a boundary only counts once.
        bounds = sorted({q for q in (row["q"] if row and row["q"] else []) if q is not None})
    rows = conn.execute(
        sql.SQL(QUERIES["count_by_time_bucket"]).format(where=cond), {**params, "bounds": bounds}
    ).fetchall()
    return time_slices(bounds, {int(r["bucket"]): int(r["n"]) for r in rows})
