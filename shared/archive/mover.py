"""Moving events between the tiers: ``archive`` (event table -> segments) and ``unarchive``
(back), each segment in one crash-safe step.

Archive, per segment of up to ``segment_events`` events in aggregate order:

1. its events are read (COPY, as CSV) and written as a Parquet file to the store;
2. the file is read back and verified (checksum and count);
3. one transaction deletes exactly those events from the event table, lists the segment in
   ``archive_segment`` and bumps the archive's generation (see 0014_archive).

A crash before 3 commits leaves the events in the event table and, at worst, a file no row
lists: an orphan, which the next run deletes before it writes anything. A crash after leaves
them in the archive only. Either way each event is in exactly one tier. Runs take an advisory
lock (one at a time); the move's transaction takes row locks on the events it deletes (which
nothing else writes: events are immutable) and ROW EXCLUSIVE on the event table, which blocks
neither appends nor reads, for the length of one DELETE of a segment's events; replays and live
processing never wait for it.

Unarchive, per segment: read and verify the file, then one transaction copies its events back
(with their own txid and times), deletes the segment's row and bumps the generation; the file
is deleted after the commit (a crash before that leaves an orphan for the next run).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.compute as pc

from shared import queries
from shared.archive import pgcopy, segments
from shared.archive.stores import SEGMENTS, Store, check_writable, open_store
from shared.archive.wanted import SEGMENT_EVENTS
from shared.db import Connection, sql
from shared.errors import InvalidJobState, InvalidRequest, SourceLost

log = logging.getLogger(__name__)
QUERIES = queries.load("archive")


Progress = Callable[[str], None]


@dataclass
class MoveReport:
    """What a run moved."""

    url: str
    segments: int = 0
    events: int = 0
    bytes: int = 0
    orphans_removed: int = 0
    seconds: float = 0.0
    segment_ids: list[str] = field(default_factory=list)


@contextmanager
def _exclusive(conn: Connection) -> Iterator[None]:
    row = conn.execute(QUERIES["lock_archive"]).fetchone()
    if not (row and row["locked"]):
        raise InvalidJobState("another archive or unarchive run is in progress; try again later")
    try:
        yield
    finally:
        conn.execute(QUERIES["unlock_archive"])


def sweep_orphans(conn: Connection) -> int:
    """Delete the files that a run which crashed was writing or deleting (``archive_pending``,
    0014_archive), and forget them; returns how many. Only under the run lock. A file no row
    names is never touched."""
    removed = 0
    for row in conn.execute(QUERIES["noted_files"]).fetchall():
        store = open_store(row["url"])
        store.delete(row["path"])
        conn.execute(QUERIES["forget_file"], {"segment_id": row["segment_id"]})
        removed += 1
        log.info("removed orphan archive file %s/%s", row["url"], row["path"])
    return removed


def archive(
    settings_conn: Connection,
    url: str,
    before: datetime,
    *,
    segment_events: int = SEGMENT_EVENTS,
    progress: Progress | None = None,
) -> MoveReport:
    """Move the events older than ``before`` into segments at ``url`` (see the module)."""
    conn = settings_conn
    if before.tzinfo is None:
        raise InvalidRequest("the archive cut-off needs a time zone (e.g. 2025-01-01T00:00Z)")
    row = conn.execute(QUERIES["now"]).fetchone()
    assert row is not None
    if before > row["now"]:
        raise InvalidRequest(
            f"the archive cut-off {before.isoformat()} is in the future: only events older than"
            " a past moment can be archived"
        )
    if segment_events < 1:
        raise InvalidRequest("segment_events must be positive")
    store = open_store(url)
    check_writable(store)
    report = MoveReport(store.url)
    started = time.perf_counter()
    with _exclusive(conn):
        report.orphans_removed = sweep_orphans(conn)
        row = conn.execute(QUERIES["oldest"], {"before": before}).fetchone()
        month = None if row is None or row["oldest"] is None else _month(row["oldest"])
        while month is not None and month < before:
            upto = min(_next_month(month), before)
            _archive_month(conn, store, month, upto, before, segment_events, report, progress)
            month = _next_month(month)
        if report.events:
            conn.execute(QUERIES["analyze_events"])
    report.seconds = time.perf_counter() - started
    return report


def _month(at: datetime) -> datetime:
    return at.astimezone(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def _next_month(month: datetime) -> datetime:
    return month.replace(year=month.year + month.month // 12, month=month.month % 12 + 1)


def _archive_month(
    conn: Connection,
    store: Store,
    month: datetime,
    upto: datetime,
    before: datetime,
    segment_events: int,
    report: MoveReport,
    progress: Progress | None,
) -> None:
    """The events of ``[month, upto)``, in segments of the month's folder: a replay of a time
    range reads only the months it covers, a slice only the segments of its aggregates."""
    after = ("", 0)
    while True:
        table = _export(conn, month, upto, after, segment_events)
        if table.num_rows == 0:
            return
        segment_id, size = _move(conn, store, table, before, f"{month:%Y-%m}")
        report.segments += 1
        report.events += table.num_rows
        report.bytes += size
        report.segment_ids.append(segment_id)
        after = (table["aggregate_id"][-1].as_py(), table["sequence_num"][-1].as_py())
        if progress is not None:
            progress(f"{month:%Y-%m}: segment {report.segments}, {report.events:,} events archived")


def _export(
    conn: Connection, since: datetime, before: datetime, after: tuple[str, int], limit: int
) -> pa.Table:
    query = sql.SQL(QUERIES["export_chunk"]).format(
        columns=sql.SQL(segments.EXPORT_COLUMNS), since=sql.Literal(since),
        before=sql.Literal(before),
        after_aggregate=sql.Literal(after[0]), after_sequence=sql.Literal(after[1]),
        limit=sql.Literal(limit),
    )  # fmt: skip
    chunks: list[bytes] = []
    with conn.cursor() as cur, cur.copy(query) as copy:
        for data in copy:
            chunks.append(bytes(data))
    return segments.from_csv(b"".join(chunks))


def _move(
    conn: Connection, store: Store, table: pa.Table, before: datetime, folder: str
) -> tuple[str, int]:
    """One segment: write, read back and verify, then the move's transaction."""
    segment_id = uuid.uuid4()
    path = f"{SEGMENTS}/{folder}/{segment_id}.parquet"
    written = segments.write(table)
    conn.execute(QUERIES["note_file"], {"segment_id": segment_id, "url": store.url, "path": path})
    store.put(path, written.data)
    segments.verify(f"{segment_id} ({store.url}/{path})", store.get(path), written.sha256,
                    written.events)  # fmt: skip
    ids = table["event_id"].to_pylist()
    types = sorted(pc.unique(table["event_type"]).to_pylist())
    with conn.transaction():
        deleted = conn.execute(
            QUERIES["delete_archived"], {"event_ids": ids, "before": before}
        ).rowcount
        if deleted != written.events:
            raise SourceLost(
                f"archive segment {segment_id}: {deleted} of its {written.events} events were"
                " in the event table when it was committed; nothing moved"
            )
        conn.execute(QUERIES["forget_caught_up"], {"max_txid": written.max_txid})
        conn.execute(QUERIES["forget_catches_up_to"], {"max_txid": written.max_txid})
        conn.execute(QUERIES["insert_segment"], {
            "segment_id": segment_id, "url": store.url, "path": path,
            "first_aggregate": written.first_aggregate, "last_aggregate": written.last_aggregate,
            "first_time": written.first_time, "last_time": written.last_time,
            "events": written.events, "event_types": types, "bytes": len(written.data),
            "sha256": written.sha256, "max_txid": written.max_txid, "before": before,
        })  # fmt: skip
        conn.execute(QUERIES["forget_file"], {"segment_id": segment_id})
        conn.execute(QUERIES["bump_generation"])
    log.info("archived %d events into %s/%s", written.events, store.url, path)
    return str(segment_id), len(written.data)


def unarchive(
    conn: Connection,
    from_time: datetime | None = None,
    to_time: datetime | None = None,
    *,
    progress: Progress | None = None,
) -> MoveReport:
    """Bring back into the event table every segment holding events in ``[from_time,
    to_time)`` (whole segments: a segment is the unit of a move); None: open."""
    report = MoveReport("")
    started = time.perf_counter()
    with _exclusive(conn):
        report.orphans_removed = sweep_orphans(conn)
        params = {"from_time": from_time, "to_time": to_time}
        listed = conn.execute(QUERIES["segments_in_time"], params).fetchall()
        for seg in listed:
            store = open_store(seg["url"])
            name = f"{seg['segment_id']} ({seg['url']}/{seg['path']})"
            data = store.get(seg["path"])
            segments.verify(name, data, seg["sha256"], seg["events"])
            table = segments.read(data, segments.Wanted())
            with conn.transaction():
                with conn.cursor() as cur, cur.copy(QUERIES["import_events"]) as copy:
                    for chunk in pgcopy.encode(table, segments.COLUMNS):
                        copy.write(chunk)
                conn.execute(QUERIES["drop_segment"], {"segment_id": seg["segment_id"]})
                conn.execute(QUERIES["bump_generation"])
            store.delete(seg["path"])
            conn.execute(QUERIES["forget_file"], {"segment_id": seg["segment_id"]})
            report.segments += 1
            report.events += table.num_rows
            report.bytes += len(data)
            report.segment_ids.append(str(seg["segment_id"]))
            if progress is not None:
                progress(f"segment {report.segments}: {report.events:,} events restored")
        if report.events:
            conn.execute(QUERIES["analyze_events"])
    report.seconds = time.perf_counter() - started
    return report
