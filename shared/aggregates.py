"""Rebuilding one entity: an aggregate's state folded from its events, with snapshots.

A ``Reducer`` folds the events of one ``aggregate_type`` into a JSON-able state and has a
``version``: change the fold, bump the version, and every older snapshot is ignored. Loading an
aggregate takes the latest usable snapshot at or below the target sequence_num, then folds the
tail in order; it writes a snapshot at every multiple of ``snapshot_every`` it passes, so the
next load reads at most that many events after one. Archived events (``shared.archive``) are
read only when the event table lacks some of the tail.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, cast

from shared import db, queries, store
from shared.db import Connection
from shared.errors import InvalidRequest, NotFound, ReplayError
from shared.handlers import Event, IdempotentEventHandler, handler
from shared.scope import EVENT_COLUMNS
from shared.sources import postgres

log = logging.getLogger(__name__)
QUERIES = queries.load("aggregates")
#: an aggregate's load in one round trip (shared/queries/aggregate_load.sql says what it returns)
LOAD = db.sql.SQL(queries.load("aggregate_load")["load"]).format(columns=EVENT_COLUMNS)
_HEAD_COLUMNS = ("_kind", "_last", "_snapshot_at", "_state")


class Reducer:
    aggregate_type: ClassVar[str] = ""
    version: ClassVar[int] = 1
    snapshot_every: ClassVar[int] = 50

    def initial(self) -> dict[str, Any]:
        raise NotImplementedError

    def apply(self, state: dict[str, Any], event: Event) -> dict[str, Any]:
        raise NotImplementedError

    def readable(self, state: Any) -> bool:
        """Whether a stored state can be used (a corrupted one is ignored)."""
        return isinstance(state, dict) and set(self.initial()) <= set(state)


_REDUCERS: dict[str, Reducer] = {}


def reducer(cls: type[Reducer]) -> type[Reducer]:
    """Class decorator: register a reducer for its aggregate_type, and declare its bulk snapshot
    pass (``replay snapshot --type T``) as a handler, like any other."""
    _REDUCERS[cls.aggregate_type] = cls()
    handler(
        type(
            f"SnapshotHandler{cls.aggregate_type}",
            (SnapshotHandler,),
            {
                "aggregate_type": cls.aggregate_type,
                "name": snapshot_handler_name(cls.aggregate_type),
            },
        )
    )
    return cls


def reducer_for(aggregate_type: str) -> Reducer:
    try:
        return _REDUCERS[aggregate_type]
    except KeyError:
        known = ", ".join(sorted(_REDUCERS)) or "none"
        raise InvalidRequest(
            f"no reducer for aggregate type {aggregate_type!r} (registered: {known})"
        ) from None


@dataclass(frozen=True)
class Loaded:
    aggregate_id: str
    aggregate_type: str
    sequence_num: int
    state: dict[str, Any]
    snapshot_at: int | None  # the snapshot it started from
    events_read: int


def load_aggregate(
    conn: Connection,
    aggregate_id: str,
    at_sequence: int | None = None,
    *,
    use_snapshots: bool = True,
) -> Loaded:
    """The aggregate's state as of ``at_sequence`` (default: its latest event).

    ``InvalidRequest`` for an ``aggregate_id`` the event table cannot hold (not a non-empty
    ``str``, NUL, a lone surrogate, more than 100 characters) or an ``at_sequence`` that is not
    ``None`` or an ``int`` >= 1; ``MalformedEvent`` for an event the reducer cannot apply;
    ``NotFound``, ``InvalidRequest``, ``ReplayError`` as they say.

    One statement reads the head, the newest snapshot and the events after it (``LOAD``); only
    a snapshot the reducer cannot read costs more (``_from_older_snapshot``).
    """
    check_request(aggregate_id, at_sequence)
    params = {
        "aggregate_id": aggregate_id,
        # beyond bigint no event can be: NotFound below, not the driver's out-of-range error
        "at_sequence": None if at_sequence is None else min(at_sequence, store.MAX_SEQUENCE_NUM),
        "kinds": list(_REDUCERS),
        "versions": [r.version for r in _REDUCERS.values()],
        "use_snapshots": use_snapshots,
    }
    rows = conn.execute(LOAD, params).fetchall()
    if not rows:
        raise NotFound(f"no events for aggregate {store.shorten(aggregate_id)}")
    head = rows[0]
    kind, last = head["_kind"], int(head["_last"])
    fold = reducer_for(kind)
    target = last if at_sequence is None else at_sequence
    if not 1 <= target <= last:
        raise NotFound(
            f"aggregate {store.shorten(aggregate_id)} has sequence numbers 1..{last},"
            f" not {store.shorten(target)}"
        )
    events = [_event(row) for row in rows[1:]]
    start, state = 0, fold.initial()
    if head["_snapshot_at"] is not None:
        if fold.readable(head["_state"]):
            start, state = int(head["_snapshot_at"]), head["_state"]
        else:
            start, state, events = _from_older_snapshot(conn, aggregate_id, fold, target)
    if len(events) != target - start:  # older events may be archived: read both tiers
        events = postgres.stream_with_archive(conn, aggregate_id, start, target)
    if len(events) != target - start:
        _raise_gap(conn, aggregate_id, start, target)
    snapshots: list[tuple[int, dict[str, Any]]] = []
    for event in events:
        state = fold.apply(state, event)
        if event["sequence_num"] % fold.snapshot_every == 0:
            snapshots.append((event["sequence_num"], copy.deepcopy(state)))
    if use_snapshots:
        _write_snapshots(conn, aggregate_id, kind, fold.version, snapshots)
    return Loaded(aggregate_id, kind, target, state, start or None, len(events))


def _event(row: dict[str, Any]) -> Event:
    """An event row of ``LOAD`` as the Event mapping: without the head's columns."""
    for key in _HEAD_COLUMNS:
        del row[key]
    return cast(Event, row)


def _from_older_snapshot(
    conn: Connection, aggregate_id: str, fold: Reducer, target: int
) -> tuple[int, dict[str, Any], list[Event]]:
    """The newest snapshot was unreadable: the latest readable one of a few (else the initial
    state), and the events after it up to ``target``."""
    start, state = 0, fold.initial()
    for snap in conn.execute(
        QUERIES["latest_snapshots"],
        {"aggregate_id": aggregate_id, "version": fold.version, "upto": target},
    ):
        if fold.readable(snap["state"]):
            start, state = int(snap["sequence_num"]), snap["state"]
            break
        log.warning(
            "ignoring an unreadable snapshot of %s at %s", aggregate_id, snap["sequence_num"]
        )
    return start, state, postgres.stream(conn, aggregate_id, start, target)


def check_request(aggregate_id: Any, at_sequence: Any) -> None:
    """``InvalidRequest`` (one line, the id cut short) unless ``load_aggregate`` can look the
    arguments up: checked here rather than met as driver errors (issue 11: NUL or an int id, or
    ``at_sequence='5'``, ended in raw psycopg errors, and ``2.5`` in an ReplayError of nothing)."""
    store.check_text(aggregate_id, "aggregate_id", store.MAX_AGGREGATE_ID)
    if at_sequence is None:
        return
    if isinstance(at_sequence, bool) or not isinstance(at_sequence, int) or at_sequence < 1:
        raise InvalidRequest(
            f"at_sequence must be None or an integer from 1, got {store.shorten(at_sequence)}"
        )


def _write_snapshots(
    conn: Connection, aggregate_id: str, kind: str, version: int,
    snapshots: Iterable[tuple[int, dict[str, Any]]],
) -> None:  # fmt: skip
    rows = [
        {
            "aggregate_id": aggregate_id,
            "aggregate_type": kind,
            "sequence_num": seq,
            "version": version,
            "state": db.Jsonb(state),
        }
        for seq, state in snapshots
    ]
    if rows:
        with conn.cursor() as cur:
            cur.executemany(QUERIES["upsert_snapshot"], rows)


def _raise_gap(conn: Connection, aggregate_id: str, start: int, target: int) -> None:
    missing = [
        int(r["n"])
        for r in conn.execute(
            QUERIES["missing_sequence_nums"],
            {"aggregate_id": aggregate_id, "after": start, "upto": target},
        )
    ]
    raise ReplayError(
        f"aggregate {store.shorten(aggregate_id)} is missing sequence numbers"
        f" {', '.join(map(str, missing))}{' ...' if len(missing) == 20 else ''}"
    )


class SnapshotHandler(IdempotentEventHandler):
    """The bulk snapshot pass of one aggregate type, as a replay job (``replay snapshot --type
    T``): for every aggregate of the type in a batch, a load up to its last event in the batch,
    which writes the snapshots it passes (from the latest one it finds), in the batch's
    transaction."""

    requires_order = True
    live = False
    aggregate_type: ClassVar[str] = ""

    def handle_batch(self, conn: Connection, events: Sequence[Event], *, is_replay: bool) -> None:
        last: dict[str, int] = {}
        for e in events:
            if e["aggregate_type"] == self.aggregate_type:
                last[e["aggregate_id"]] = e["sequence_num"]
        for aggregate_id, sequence_num in last.items():
            load_aggregate(conn, aggregate_id, sequence_num)

    def reset(self, conn: Connection, aggregate_id: str | None) -> None:
        return None  # snapshots are a cache of the events: a new pass overwrites them


def snapshot_handler_name(aggregate_type: str) -> str:
    return f"snapshot_{aggregate_type.lower()}"
