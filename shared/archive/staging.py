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

import threading
from collections import OrderedDict
from dataclasses import dataclass, replace
from typing import Any

from shared import queries
from shared.archive.stores import open_store
from shared.archive.wanted import Wanted
from shared.db import Connection, sql
from shared.errors import SourceLost, SourceUnavailable

QUERIES = queries.load("archive")

#: what a planning needs of an archived event: its position, time, type and txid
KEY_COLUMNS = ("event_id", "aggregate_id", "sequence_num", "occurred_at", "event_type", "txid")
COPY_COUNTS = "COPY replay_archived_counts (aggregate_id, n) FROM STDIN (FORMAT binary)"
_EVENT = sql.SQL("event")


@dataclass(frozen=True)
class Staged:
    """What was staged: the archive's generation it was read at, and how many events."""

    generation: int
    events: int
    #: the temporary table (``SLICE`` or ``ONE``)
    table: str = "replay_archived"


#: a slice's staged events; one aggregate's (a load, a parked event), which a snapshot pass
#: reads on a slice's connection while the slice's are staged
SLICE, ONE = "replay_archived", "replay_archived_one"


def stage(conn: Connection, wanted: Wanted, table: str = SLICE) -> Staged:
    """Copy the archived events that ``wanted`` picks into ``pg_temp.<table>`` (the event
    table's columns), replacing what it held. A segment that is missing or corrupted raises
    ``SourceLost`` naming it; nothing is staged then."""
    name = sql.Identifier(table)
    conn.execute(sql.SQL(QUERIES["drop_staged"]).format(table=name))
    generation, listed = _segments(conn, wanted)
    if not listed:
        return Staged(generation, 0, table)
    wanted = _collated(conn, wanted)
    conn.execute(sql.SQL(QUERIES["create_staged"]).format(table=name))
    staged = _copy(conn, listed, wanted, table)
    # No ANALYZE (a sixth of the staging's time): the batches walk the index whatever the
    # statistics say, ordered reads with a LIMIT being what it serves.
    conn.execute(sql.SQL(QUERIES["index_staged"]).format(table=name))
    return Staged(generation, staged, table)


def stage_keys(conn: Connection, wanted: Wanted) -> Staged:
    """For a planning, in its transaction: what it counts of the archived events that
    ``wanted`` picks, in ``pg_temp.replay_archived_keys`` (dropped at commit); ``planned``
    reads it with the event table."""
    generation, listed = _segments(conn, wanted)
    if not listed:
        return Staged(generation, 0)
    conn.execute(QUERIES["create_staged_keys"])
    keys = replace(wanted, columns=KEY_COLUMNS)
    staged = _copy(conn, listed, keys, "replay_archived_keys")
    conn.execute(QUERIES["index_staged_keys"])
    conn.execute(QUERIES["analyze_staged_keys"])
    return Staged(generation, staged)


def stage_counts(conn: Connection, wanted: Wanted) -> Staged:
    """For a planning, in its transaction: the archived events that ``wanted`` picks, counted
    per aggregate from the segments' aggregate column, in ``pg_temp.replay_archived_counts``
    (dropped at commit): what cutting a scope into slices of exact counts needs. A planning
    that needs more (a catch-up's starts, time slices) stages the keys too (``stage_keys``)."""
    from shared.archive import pgcopy, segments  # pyarrow: only where there is an archive

    generation, listed = _segments(conn, wanted)
    parts = [segments.read(_verified(conn, seg), replace(wanted, columns=("aggregate_id",)))
             for seg in listed]  # fmt: skip
    parts = [p for p in parts if p.num_rows]
    if not parts:
        return Staged(generation, 0)
    import pyarrow as pa
    import pyarrow.compute as pc

    counts = pa.concat_tables(parts).group_by("aggregate_id").aggregate([("aggregate_id", "count")])
    counts = counts.rename_columns(["aggregate_id", "n"])
    conn.execute(QUERIES["create_staged_counts"])
    with conn.cursor() as cur, cur.copy(COPY_COUNTS) as out:
        for chunk in pgcopy.encode(counts, ("aggregate_id", "n")):
            out.write(chunk)
    return Staged(generation, int(pc.sum(counts["n"]).as_py()))


def keys_staged(conn: Connection) -> bool:
    """Whether this planning staged the keys of archived events (``stage_keys``)."""
    row = conn.execute(QUERIES["staged"]).fetchone()
    return bool(row and row["staged"])


def counted(conn: Connection) -> bool:
    """Whether this planning counted archived events (``stage_counts``)."""
    row = conn.execute(QUERIES["counted"]).fetchone()
    return bool(row and row["counted"])


def _segments(conn: Connection, wanted: Wanted) -> tuple[int, list[Any]]:
    params: dict[str, Any] = {
        "first_aggregate": wanted.aggregate_id or wanted.first_aggregate,
        "last_aggregate": wanted.aggregate_id or wanted.last_aggregate,
        "from_time": wanted.from_time, "to_time": wanted.to_time,
        "event_types": list(wanted.event_types) or None,
    }  # fmt: skip
    rows = conn.execute(QUERIES["segments"], params).fetchall()
    return int(rows[0]["generation"]), [r for r in rows if r["segment_id"] is not None]


def moved(conn: Connection, staged: Staged) -> bool:
    """Whether events moved between the tiers since ``staged`` was staged."""
    return _generation(conn) != staged.generation


def _generation(conn: Connection) -> int:
    row = conn.execute(QUERIES["generation"]).fetchone()
    return int(row["generation"]) if row else -1


def _collated(conn: Connection, wanted: Wanted) -> Wanted:
    """``wanted``, saying whether its aggregate range may be applied in Arrow."""
    if wanted.first_aggregate is None and wanted.last_aggregate is None:
        return wanted
    row = conn.execute(QUERIES["ids_sort_as_bytes"]).fetchone()
    return replace(wanted, ids_sort_as_bytes=bool(row and row["bytes"]))


def _copy(conn: Connection, listed: list[Any], wanted: Wanted, table: str) -> int:
    from shared.archive import pgcopy, segments  # pyarrow: only where there is an archive

    columns = sql.SQL(", ").join(sql.Identifier(c) for c in wanted.columns)
    copy = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT binary)").format(sql.Identifier(table), columns)
    staged = 0
    for seg in listed:
        part = segments.read(_verified(conn, seg), wanted)
        if part.num_rows:
            with conn.cursor() as cur, cur.copy(copy) as out:
                for chunk in pgcopy.encode(part, wanted.columns):
                    out.write(chunk)
            staged += part.num_rows
    return staged


class _Verified:
    """Segment files this process (a worker's, or a planning's) read and verified, most recent
    last, up to ``limit`` bytes: a worker's slices of one job read the same segments (each a
    month of every aggregate), so only its first slice downloads and checks them. Keyed by the
    archive's generation too: a move between the tiers makes every slice read (and check) its
    segments again. A file kept here is used only while the store still has it at its size
    (``_still_there``): one deleted or cut short is read again, and found missing or corrupted.
    A file whose bytes change in place at the same size goes unnoticed by this process until
    the next move; its copy here is the verified one (the catalogue's SHA-256)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._files: OrderedDict[tuple[Any, ...], bytes] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: tuple[Any, ...]) -> bytes | None:
        with self._lock:
            data = self._files.get(key)
            if data is not None:
                self._files.move_to_end(key)
            return data

    def put(self, key: tuple[Any, ...], data: bytes) -> None:
        if len(data) > self.limit:
            return
        with self._lock:
            replaced = self._files.pop(key, None)
            self._bytes += len(data) - (len(replaced) if replaced is not None else 0)
            self._files[key] = data
            while self._bytes > self.limit:
                self._bytes -= len(self._files.popitem(last=False)[1])


#: at most 64 MiB of segment files kept per process
_VERIFIED = _Verified(64 << 20)


def _verified(conn: Connection, seg: Any) -> bytes:
    key = (seg["segment_id"], seg["sha256"], seg["generation"])
    data = _VERIFIED.get(key)
    if data is not None and _still_there(seg, len(data)):
        return data
    data = _read_verified(conn, seg)
    _VERIFIED.put(key, data)
    return data


def _still_there(seg: Any, size: int) -> bool:
    """Whether the store still has the segment's file at ``size`` bytes (one ``stat``, or one
    HEAD request: not a download)."""
    try:
        return open_store(seg["url"]).size(seg["path"]) == size
    except SourceLost:
        return False


def _read_verified(conn: Connection, seg: Any) -> bytes:
    from shared.archive import segments  # pyarrow: only where there is an archive

    name = f"{seg['segment_id']} ({seg['url']}/{seg['path']})"
    try:
        data = open_store(seg["url"]).get(seg["path"])
    except SourceLost:
        if _generation(conn) != seg["generation"]:  # moved back meanwhile: read again
            raise SourceUnavailable(
                f"archive segment {name} was moved back into the event table while it was"
                " being read; retrying"
            ) from None
        raise SourceLost(f"archive segment {name} is missing") from None
    segments.verify(name, data, seg["sha256"], seg["events"])
    return data


#: the condition that fails a read (a serialization failure) once the archive's generation moved
#: past the staged one (``params``). A condition of the query, not of the event table's side
#: of the union: there PostgreSQL would no longer read that side in index order.
GUARD = sql.SQL("replay_archive_unchanged(%(archive_generation)s)")


def relation(staged: Staged | None) -> sql.Composable:
    """The events to read from, as a FROM item (to be aliased): the event table alone when
    nothing is staged, else the event table and the staged events as one. A reader adds
    ``GUARD`` to its conditions."""
    if staged is None or staged.events == 0:
        return _EVENT
    return sql.SQL("(SELECT * FROM event UNION ALL SELECT * FROM {})").format(
        sql.Identifier("pg_temp", staged.table)
    )


def planned(conn: Connection) -> sql.Composable:
    """What a planning reads from: the event table and the archived events it staged
    (``stage_keys``, in its own snapshot: no guard is needed), else the event table."""
    if not keys_staged(conn):
        return _EVENT
    keys = sql.SQL(", ").join(sql.Identifier(c) for c in KEY_COLUMNS)
    return sql.SQL(
        "(SELECT {keys} FROM event UNION ALL SELECT {keys} FROM pg_temp.replay_archived_keys)"
    ).format(keys=keys)


def params(staged: Staged | None) -> dict[str, Any]:
    """The parameters ``relation`` needs."""
    return {} if staged is None else {"archive_generation": staged.generation}


def release(conn: Connection, staged: Staged) -> None:
    """Drop what was staged (a reader's connection goes back to its pool)."""
    conn.execute(sql.SQL(QUERIES["drop_staged"]).format(table=sql.Identifier(staged.table)))
