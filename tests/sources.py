"""A second, minimal event source, used only by the tests: a list of event dicts written to a table
of its own, ``test_event_list``, in list order.

It shares nothing with the event table's source but the interface: its frozen scope is the
highest position when the job was planned (the table is locked against writers while planning),
its slices are ranges of aggregate ids counted in Python, and it reads a slice in list order
(``position``), checkpointing the last position read, a value the ``Event`` handed to handlers
does not carry. Per-aggregate order holds because the list holds each aggregate's events in
``sequence_num`` order (what a writer of this source must guarantee). It slices by aggregate
only, has no rebuild coverage and no SQL folds: the runner takes its generic paths.

Registered by ``tests/handlers.py`` (loaded through ``REPLAY_HANDLER_MODULES=tests.handlers``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar
from uuid import UUID

from shared.db import Connection, Jsonb, sql
from shared.handlers import Event
from shared.scope import EVENT_COLUMNS, Scope
from shared.slicing import PlannedSlice, SliceBy, aggregate_slices
from shared.sources import Batch, Checkpoint, SliceReader, Source, source

NAME = "event_list"
TABLE = "test_event_list"


def on_table(text: str, **parts: sql.Composable) -> sql.Composed:
    """``text`` with ``{table}`` this source's table (an identifier, never formatted in)."""
    return sql.SQL(text).format(table=sql.Identifier(TABLE), **parts)


DDL = on_table("""
CREATE TABLE IF NOT EXISTS {table} (
    position       bigserial PRIMARY KEY,
    event_id       uuid        NOT NULL UNIQUE,
    aggregate_id   text        NOT NULL,
    aggregate_type text        NOT NULL,
    event_type     text        NOT NULL,
    payload        jsonb       NOT NULL,
    metadata       jsonb       NOT NULL DEFAULT '{{}}',
    sequence_num   bigint      NOT NULL,
    occurred_at    timestamptz NOT NULL
)
""")


def write(conn: Connection, events: Iterable[Mapping[str, Any]]) -> None:
    """Append ``events`` (dicts with the ``Event`` keys) to the list, in order."""
    conn.execute(DDL)
    with conn.cursor() as cur:
        cur.executemany(
            on_table(
                "INSERT INTO {table} (event_id, aggregate_id, aggregate_type, event_type, payload,"
                " metadata, sequence_num, occurred_at) VALUES (%(event_id)s, %(aggregate_id)s,"
                " %(aggregate_type)s, %(event_type)s, %(payload)s, %(metadata)s, %(sequence_num)s,"
                " %(occurred_at)s)"
            ),
            [
                {**e, "payload": Jsonb(e["payload"]), "metadata": Jsonb(e.get("metadata", {}))}
                for e in events
            ],
        )


def _where(scope: Scope, frozen: str) -> tuple[sql.Composable, dict[str, Any]]:
    conds = [sql.SQL("position <= %(frozen)s")]
    params: dict[str, Any] = {"frozen": int(frozen)}
    for value, cond, key in (
        (scope.aggregate_id, "aggregate_id = %(aggregate_id)s", "aggregate_id"),
        (scope.from_time, "occurred_at >= %(from_time)s", "from_time"),
        (scope.to_time, "occurred_at < %(to_time)s", "to_time"),
        (list(scope.event_types) or None, "event_type = ANY(%(types)s::text[])", "types"),
    ):
        if value is not None:
            conds.append(sql.SQL(cond))
            params[key] = value
    return sql.SQL(" AND ").join(conds), params


@dataclass
class ListReader(SliceReader):
    #: the position of each event of the last batch read: the checkpoint is a position, which
    #: the Event mapping (the same from every source) does not carry
    _positions: dict[UUID, int] = field(default_factory=dict)

    def read(self, conn: Connection, checkpoint: Checkpoint | None, limit: int) -> Batch:
        cond, params = _where(self.scope, self.frozen)
        query = on_table(
            "SELECT position, {cols} FROM {table} WHERE {cond}"
            " AND aggregate_id BETWEEN %(first)s AND %(last)s AND position > %(after)s"
            " ORDER BY position LIMIT %(limit)s",
            cols=EVENT_COLUMNS,
            cond=cond,
        )
        rows: list[Any] = conn.execute(
            query,
            {
                **params,
                "first": self.bounds.first_aggregate,
                "last": self.bounds.last_aggregate,
                "after": checkpoint["position"] if checkpoint else 0,
                "limit": limit,
            },
        ).fetchall()
        self._positions = {r["event_id"]: r.pop("position") for r in rows}
        return Batch(rows)

    def checkpoint_after(self, event: Mapping[str, Any]) -> Checkpoint:
        return {"position": self._positions[event["event_id"]]}


@source
class EventListSource(Source):
    name: ClassVar[str] = NAME
    slice_by: ClassVar[tuple[SliceBy, ...]] = (SliceBy.AGGREGATE,)
    reader_class: ClassVar[type[SliceReader]] = ListReader

    def freeze(self, conn: Connection) -> str:
        # First, before any snapshot is taken, and held until the plan commits: no writer
        # between the freeze and the commit. Positions are taken in order but may commit out of
        # order, and a cut-off must not miss one committing late. (No writer in flight either.)
        conn.execute(on_table("LOCK TABLE {table} IN SHARE MODE"))
        row = conn.execute(
            on_table("SELECT coalesce(max(position), 0) AS p FROM {table}")
        ).fetchone()
        assert row is not None
        return str(row["p"])

    def missing_event_types(self, conn: Connection, event_types: tuple[str, ...]) -> list[str]:
        rows = conn.execute(
            on_table(
                "SELECT t FROM unnest(%s::text[]) AS t WHERE NOT EXISTS"
                " (SELECT 1 FROM {table} WHERE event_type = t) ORDER BY t"
            ),
            (list(event_types),),
        ).fetchall()
        return [r["t"] for r in rows]

    def known_event_types(self, conn: Connection, limit: int = 30) -> list[str]:
        rows = conn.execute(
            on_table("SELECT DISTINCT event_type FROM {table} ORDER BY 1 LIMIT %s"), (limit,)
        ).fetchall()
        return [r["event_type"] for r in rows]

    def count(self, conn: Connection, scope: Scope, frozen: str) -> int:
        cond, params = _where(scope, frozen)
        query = on_table("SELECT count(*) AS n FROM {table} WHERE {cond}", cond=cond)
        row = conn.execute(query, params).fetchone()
        return int(row["n"]) if row else 0

    def plan(
        self, conn: Connection, scope: Scope, frozen: str, slice_by: SliceBy, slices: int
    ) -> list[PlannedSlice]:
        cond, params = _where(scope, frozen)
        query = on_table(
            "SELECT aggregate_id, count(*) AS n FROM {table} WHERE {cond}"
            " GROUP BY aggregate_id ORDER BY aggregate_id",
            cond=cond,
        )
        rows = conn.execute(query, params).fetchall()
        return aggregate_slices([(r["aggregate_id"], int(r["n"])) for r in rows], slices)

    def events(self, conn: Connection, event_ids: Sequence[UUID | str]) -> list[Event]:
        query = on_table(
            "SELECT {cols} FROM {table} WHERE event_id = ANY(%s::uuid[]) ORDER BY position",
            cols=EVENT_COLUMNS,
        )
        rows: list[Any] = conn.execute(query, ([str(e) for e in event_ids],)).fetchall()
        return rows

    def describe_checkpoint(self, checkpoint: Checkpoint | None) -> str:
        return "start" if checkpoint is None else f"after position {checkpoint['position']}"
