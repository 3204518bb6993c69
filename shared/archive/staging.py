"""Reading the archive as if it were part of the event table: the archived events a reader
needs are staged in a temporary table of its connection (``pg_temp.replay_archived``, the event
table's columns), and its queries read ``relation()``: the event table and that table as one.

A planning transaction stages what its scope needs once, in its own snapshot (the catalogue
and the event table agree there). A slice stages its aggregate range when it starts and reads
every batch through ``replay_archive_unchanged(generation)`` (0014_archive): if events moved
between the tiers since, the batch fails as a serialization failure and the slice is retried
from its checkpoint, staging again. Where no segment overlaps, nothing is staged and the
relation is the event table alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from shared import queries
from shared.archive import segments
from shared.archive.stores import Store, open_store
from shared.db import Connection, sql
from shared.errors import SourceLost

QUERIES = queries.load("archive")

#: what a planning needs of an archived event: its identity, position, time, type and txid
PLANNING_COLUMNS = (
    "event_id", "aggregate_id", "aggregate_type", "event_type", "sequence_num", "occurred_at",
    "txid",
)  # fmt: skip
_EVENT = sql.SQL("event")


@dataclass(frozen=True)
class Staged:
    """What was staged: the archive's generation it was read at, and how many events."""

    generation: int
    events: int


def stage(conn: Connection, wanted: segments.Wanted) -> Staged:
    """Copy the archived events that ``wanted`` picks (its columns; the others take the event
    table's defaults) into ``pg_temp.replay_archived``, replacing what it held. A segment that
    is missing or corrupted raises ``SourceLost`` naming it; nothing is staged then."""
    params: dict[str, Any] = {
        "first_aggregate": wanted.aggregate_id or wanted.first_aggregate,
        "last_aggregate": wanted.aggregate_id or wanted.last_aggregate,
        "from_time": wanted.from_time, "to_time": wanted.to_time,
        "event_types": list(wanted.event_types) or None,
    }  # fmt: skip
    rows = conn.execute(QUERIES["segments"], params).fetchall()
    generation = int(rows[0]["generation"])
    listed = [r for r in rows if r["segment_id"] is not None]
    conn.execute(QUERIES["drop_staged"])
    if not listed:
        return Staged(generation, 0)
    conn.execute(QUERIES["create_staged"])
    copy_columns = sql.SQL(", ").join(sql.Identifier(c) for c in wanted.columns)
    copy = sql.SQL("COPY replay_archived ({}) FROM STDIN (FORMAT csv)").format(copy_columns)
    stores: dict[str, Store] = {}
    staged = 0
    for seg in listed:
        store = stores.setdefault(seg["url"], open_store(seg["url"]))
        name = f"{seg['segment_id']} ({seg['url']}/{seg['path']})"
        try:
            data = store.get(seg["path"])
        except SourceLost:
            raise SourceLost(f"archive segment {name} is missing") from None
        segments.verify(name, data, seg["sha256"], seg["events"])
        table = segments.read(data, wanted)
        if table.num_rows:
            with conn.cursor() as cur, cur.copy(copy) as out:
                out.write(segments.to_csv(table, wanted.columns))
            staged += table.num_rows
    conn.execute(QUERIES["index_staged"])
    conn.execute(QUERIES["analyze_staged"])
    return Staged(generation, staged)


def relation(staged: Staged | None, *, guard: bool) -> sql.Composable:
    """The events to read from, as a FROM item (to be aliased): the event table alone when
    nothing is staged (None, or no events); with ``guard`` the read fails (serialization
    failure) once the archive's generation moved past the staged one (parameter
    ``%(archive_generation)s``, see ``params``)."""
    check = sql.SQL(" WHERE replay_archive_unchanged(%(archive_generation)s)")
    if staged is None or (staged.events == 0 and not guard):
        return _EVENT
    hot = sql.SQL("SELECT * FROM event") + (check if guard else sql.SQL(""))
    if staged.events == 0:
        return sql.SQL("({})").format(hot)
    return sql.SQL("({} UNION ALL SELECT * FROM pg_temp.replay_archived)").format(hot)


def planned(conn: Connection) -> sql.Composable:
    """What a planning reads from: the event table and the events it staged, if it staged any
    (in its own snapshot: no guard is needed), else the event table."""
    row = conn.execute(QUERIES["staged"]).fetchone()
    return relation(Staged(0, 1), guard=False) if row and row["staged"] else _EVENT


def params(staged: Staged | None) -> dict[str, Any]:
    """The parameters ``relation`` needs."""
    return {} if staged is None else {"archive_generation": staged.generation}


def release(conn: Connection) -> None:
    """Drop what was staged (a reader's connection goes back to its pool)."""
    conn.execute(QUERIES["drop_staged"])
