"""What a replay job covers, and the SQL that reads it.

A ``Scope`` is the filter of a job (one aggregate, a time range, some event types, combined);
``SliceBounds`` is one slice's part of it. The WHERE clauses are assembled from constant SQL
fragments only; every value travels as a query parameter.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

from psycopg import sql

EVENT_COLUMN_NAMES = (
    "event_id, aggregate_id, aggregate_type, event_type, payload, metadata, sequence_num,"
    " occurred_at"
)
EVENT_COLUMNS = sql.SQL(EVENT_COLUMN_NAMES)

# The frozen scope of a job: only events whose appending transaction had committed when the job
# was planned (see the comment on event.txid in 0001_event_store.sql).
_VISIBLE = sql.SQL("pg_visible_in_snapshot(txid, %(snapshot)s::pg_snapshot)")
_AGGREGATE = sql.SQL("aggregate_id = %(aggregate_id)s")
_FROM_TIME = sql.SQL("occurred_at >= %(from_time)s")
_TO_TIME = sql.SQL("occurred_at < %(to_time)s")
_EVENT_TYPES = sql.SQL("event_type = ANY(%(event_types)s::text[])")


@dataclass(frozen=True)
class Scope:
    """The events a job selects: every filter given must hold (they combine)."""

    aggregate_id: str | None = None
    from_time: datetime | None = None
    to_time: datetime | None = None
    event_types: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "aggregate_id": self.aggregate_id,
            "from_time": self.from_time.isoformat() if self.from_time else None,
            "to_time": self.to_time.isoformat() if self.to_time else None,
            "event_types": list(self.event_types),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Scope:
        return cls(
            aggregate_id=data.get("aggregate_id"),
            from_time=datetime.fromisoformat(data["from_time"]) if data.get("from_time") else None,
            to_time=datetime.fromisoformat(data["to_time"]) if data.get("to_time") else None,
            event_types=tuple(data.get("event_types") or ()),
        )

    def where(self, snapshot: str | None) -> tuple[list[sql.Composable], dict[str, Any]]:
        """The conditions and parameters that select this scope (at ``snapshot`` if given)."""
        conds: list[sql.Composable] = []
        params: dict[str, Any] = {}
        if snapshot is not None:
            conds.append(_VISIBLE)
            params["snapshot"] = snapshot
        if self.aggregate_id is not None:
            conds.append(_AGGREGATE)
            params["aggregate_id"] = self.aggregate_id
        if self.from_time is not None:
            conds.append(_FROM_TIME)
            params["from_time"] = self.from_time
        if self.to_time is not None:
            conds.append(_TO_TIME)
            params["to_time"] = self.to_time
        if self.event_types:
            conds.append(_EVENT_TYPES)
            params["event_types"] = list(self.event_types)
        return conds, params


def where_clause(conds: list[sql.Composable]) -> sql.Composable:
    if not conds:
        return sql.SQL("TRUE")
    return sql.SQL(" AND ").join(conds)


@dataclass(frozen=True)
class SliceBounds:
    """One slice: a range of aggregate ids (inclusive) or of occurred_at ([from, to))."""

    first_aggregate: str | None = None
    last_aggregate: str | None = None
    from_time: datetime | None = None
    to_time: datetime | None = None

    @property
    def by_time(self) -> bool:
        return self.first_aggregate is None and self.last_aggregate is None


# Keyset pagination: each batch starts strictly after the checkpoint, in index order.
_AGG_START = sql.SQL("aggregate_id >= %(first_aggregate)s")
_AGG_AFTER = sql.SQL("(aggregate_id, sequence_num) > (%(after_aggregate)s, %(after_sequence)s)")
_AGG_END = sql.SQL("aggregate_id <= %(last_aggregate)s")
_AGG_ORDER = sql.SQL("ORDER BY aggregate_id, sequence_num")
_TIME_START = sql.SQL("occurred_at >= %(slice_from)s")
_TIME_AFTER = sql.SQL("(occurred_at, event_id) > (%(after_time)s, %(after_event)s)")
_TIME_END = sql.SQL("occurred_at < %(slice_to)s")
_TIME_ORDER = sql.SQL("ORDER BY occurred_at, event_id")
_AGG_LAST = sql.SQL("ORDER BY aggregate_id DESC, sequence_num DESC")
_TIME_LAST = sql.SQL("ORDER BY occurred_at DESC, event_id DESC")
_COVERED = sql.SQL("pg_visible_in_snapshot(txid, %(covered)s::pg_snapshot) AS _covered")


@dataclass(frozen=True)
class SliceReader:
    """Reads one slice of a job's scope in batches, after a checkpoint."""

    scope: Scope
    bounds: SliceBounds
    snapshot: str
    batch_size: int
    #: with a snapshot here, each event comes with ``_covered``: visible in it or not
    covered_snapshot: str | None = None
    _base: tuple[list[sql.Composable], dict[str, Any]] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_base", self.scope.where(self.snapshot))

    def query(
        self, checkpoint: dict[str, Any] | None, limit: int | None = None
    ) -> tuple[sql.Composed, dict[str, Any]]:
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
        if self.covered_snapshot is not None:
            cols = sql.SQL(", ").join([EVENT_COLUMNS, _COVERED])
            params["covered"] = self.covered_snapshot
        query = sql.SQL("SELECT {cols} FROM event WHERE {where} {order} LIMIT %(limit)s").format(
            cols=cols, where=where_clause(conds), order=order
        )
        return query, params

    def fold_query(
        self, checkpoint: dict[str, Any] | None, fold_sql: str, limit: int | None = None
    ) -> tuple[sql.Composed, dict[str, Any]]:
        """The next batch as a relation named ``batch`` for a handler's set-based fold (a
        data-modifying statement, which PostgreSQL runs to completion), returning the batch's
        last event (its position) and the batch's size as ``n``; no row when the slice is done.
        """
        batch, params = self.query(checkpoint, limit)
        last = _TIME_LAST if self.bounds.by_time else _AGG_LAST
        query = sql.SQL(
            "WITH batch AS ({batch}), folded AS ({fold})"
            " SELECT aggregate_id, sequence_num, occurred_at, event_id, count(*) OVER () AS n"
            " FROM batch {last} LIMIT 1"
        ).format(batch=batch, fold=sql.SQL(fold_sql), last=last)
        return query, params

    def checkpoint_after(self, event: Mapping[str, Any]) -> dict[str, Any]:
        """The checkpoint that resumes right after ``event``."""
        if not self.bounds.by_time:
            return {"aggregate_id": event["aggregate_id"], "sequence_num": event["sequence_num"]}
        return {"occurred_at": event["occurred_at"].isoformat(), "event_id": str(event["event_id"])}
