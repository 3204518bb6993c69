"""Reading one slice of the event table: ``EventTableReader`` (see ``shared.sources.postgres``).

A slice reads the archive as part of the event table: ``open`` stages the archived events of
its range (``shared.archive.staging``), and every batch reads both as one, through the guard
that fails it if events moved between the tiers since (the slice is then retried, staging
again)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar
from uuid import UUID

from shared.archive import staging
from shared.archive.wanted import Wanted
from shared.db import Connection, sql
from shared.handlers import Event
from shared.scope import EVENT_COLUMNS
from shared.sources.event_sql import (
    AGG_AFTER,
    AGG_END,
    AGG_LAST,
    AGG_ORDER,
    AGG_START,
    COVERED,
    LIMIT,
    NEW,
    QUERIES,
    STARTS_AFTER,
    STARTS_END,
    STARTS_FROM,
    TIME_AFTER,
    TIME_END,
    TIME_LAST,
    TIME_ORDER,
    TIME_START,
    select_events,
    unfreeze,
    where,
    where_clause,
)  # fmt: skip
from shared.sources.interface import Batch, Checkpoint, Folded, SliceReader

log = logging.getLogger(__name__)


@dataclass
class EventTableReader(SliceReader):
    """Reads one slice of a job's scope in batches, after a checkpoint; with ``covered``, each
    event comes with ``_covered``: visible in that snapshot or not."""

    can_fold: ClassVar[bool] = True

    _base: tuple[list[sql.Composable], dict[str, Any]] = field(init=False, repr=False)
    _starts: UUID | None = field(init=False, repr=False)
    #: the archived events of the slice, once ``open`` staged them
    _staged: staging.Staged | None = field(init=False, repr=False, default=None)

    def __post_init__(self) -> None:
        frozen = unfreeze(self.frozen)
        self._starts = frozen.starts
        conds, params = where(self.scope, frozen.snapshot)
        if frozen.since is not None:
            conds.append(NEW)
            params["since"] = frozen.since
        self._base = conds, params

    def open(self, conn: Connection) -> None:
        """Stage the archived events of the slice (none: its batches still check that none
        were archived since)."""
        b, scope = self.bounds, self.scope
        wanted = Wanted(
            first_aggregate=b.first_aggregate, last_aggregate=b.last_aggregate,
            aggregate_id=scope.aggregate_id,
            from_time=max((t for t in (scope.from_time, b.from_time) if t), default=None),
            to_time=min((t for t in (scope.to_time, b.to_time) if t), default=None),
            event_types=scope.event_types,
        )  # fmt: skip
        self._staged = staging.stage(conn, wanted)

    def stale(self, conn: Connection) -> bool:
        return self._staged is not None and staging.moved(conn, self._staged)

    def close(self, conn: Connection) -> None:
        staged, self._staged = self._staged, None
        if staged is not None and staged.events:
            try:
                staging.release(conn, staged)
            except Exception as exc:  # best effort: the table goes with the session anyway
                log.warning("could not drop the staged archived events: %s", exc)

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
        params.update(staging.params(self._staged))
        b = self.bounds
        if not b.by_time:
            if checkpoint is None:
                conds.append(AGG_START)
                params["first_aggregate"] = b.first_aggregate
            else:
                conds.append(AGG_AFTER)
                params["after_aggregate"] = checkpoint["aggregate_id"]
                params["after_sequence"] = checkpoint["sequence_num"]
            conds.append(AGG_END)
            params["last_aggregate"] = b.last_aggregate
            order = AGG_ORDER
        else:
            if checkpoint is None:
                if b.from_time is not None:
                    conds.append(TIME_START)
                    params["slice_from"] = b.from_time
            else:
                conds.append(TIME_AFTER)
                params["after_time"] = datetime.fromisoformat(checkpoint["occurred_at"])
                params["after_event"] = UUID(checkpoint["event_id"])
            if b.to_time is not None:
                conds.append(TIME_END)
                params["slice_to"] = b.to_time
            order = TIME_ORDER
        cols: sql.Composable = EVENT_COLUMNS
        if self.covered is not None:
            cols = sql.SQL(", ").join([EVENT_COLUMNS, COVERED])
            params["covered"] = self.covered
        if self._starts is not None and not b.by_time:
            return self._after_starts(conds, cols, params, checkpoint)
        if self._staged is not None:
            conds.append(staging.GUARD)
        limited = sql.SQL(" ").join([order, LIMIT])
        return select_events(where_clause(conds), limited, cols, self._events()), params

    def _events(self) -> sql.Composable:
        return staging.relation(self._staged)

    def _after_starts(
        self,
        conds: list[sql.Composable],
        cols: sql.Composable,
        params: dict[str, Any],
        checkpoint: Checkpoint | None,
    ) -> tuple[sql.Composed, dict[str, Any]]:
        """``query`` for a catch-up planned from progress: the same conditions, read only after
        each aggregate's start, and only for aggregates with one (``select_after_starts``)."""
        first = STARTS_FROM if checkpoint is None else STARTS_AFTER
        query = sql.SQL(QUERIES["select_after_starts"]).format(
            columns=cols, where=where_clause(conds), first=first, last=STARTS_END,
            events=self._events(),
            # once, for the batch: in the lateral read it would run for every start
            guard=staging.GUARD if self._staged is not None else sql.SQL("TRUE"),
        )  # fmt: skip
        return query, {**params, "starts": self._starts}

    def fold(
        self, conn: Connection, checkpoint: Checkpoint | None, fold_sql: str, limit: int
    ) -> Folded | None:
        """The next batch as a relation named ``batch`` for a handler's set-based fold (a
        data-modifying statement, which PostgreSQL runs to completion), returning the batch's
        last event (its position) and the batch's size; None when the slice is done."""
        batch, params = self.query(checkpoint, limit)
        last = TIME_LAST if self.bounds.by_time else AGG_LAST
        query = sql.SQL(QUERIES["fold_batch"]).format(
            batch=batch, fold=sql.SQL(fold_sql), last=last
        )
        row = conn.execute(query, params).fetchone()
        return None if row is None else Folded(int(row["n"]), row)

    def checkpoint_after(self, event: Mapping[str, Any]) -> Checkpoint:
        if not self.bounds.by_time:
            return {"aggregate_id": event["aggregate_id"], "sequence_num": event["sequence_num"]}
        return {"occurred_at": event["occurred_at"].isoformat(), "event_id": str(event["event_id"])}
