"""Idempotency: PostgreSQL is the truth, Redis a flushable cache in front of it.

* What a handler processed is said per aggregate where it can be: ``handler_progress`` holds,
  for an aggregate of the event table, the watermark up to which every event was processed
  (its events are processed as a prefix 1..n in the common case), and ``processed_event`` a
  marker only for what the watermark cannot say (an event processed beyond a gap, or of a
  source other than the event table). ``replay_processed(handler, event_id)`` in SQL (and the
  view ``processed``) answers "has H processed E?" from both and from the last full rebuild.
* ``claim_in_order`` (events of the event table) and ``claim`` (any other) decide, in the
  batch's transaction and under a lock, which events of a batch were not processed before: only
  those reach the handler. The record of it and the handler's effect commit together or not at
  all, so "processed" always means "applied".
* ``ProcessedCache`` answers "already processed?" for a whole batch in one Redis round trip, so a
  catch-up replay over events that were processed long ago does not have to touch the marker
  table. A key's value is the handler's cache epoch (``handler_state.cache_epoch``); a rebuild
  bumps the epoch in PostgreSQL, which turns every older key into a miss without having to reach
  Redis. Losing Redis (flush, restart, outage) only costs speed, never correctness.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence, Set
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

import redis

from shared import queries
from shared.db import Connection, sql
from shared.handlers import Event

log = logging.getLogger(__name__)

QUERIES = queries.load("idempotency")


def claim(conn: Connection, handler_name: str, event_ids: Sequence[UUID]) -> set[UUID]:
    """Mark ``event_ids`` processed by ``handler_name``; return those that were not already."""
    if not event_ids:
        return set()
    params = {"handler": handler_name, "event_ids": list(event_ids)}
    rows = conn.execute(QUERIES["claim"], params, binary=True).fetchall()
    return {r["event_id"] for r in rows}


def claim_in_order(
    conn: Connection, handler_name: str, events: Sequence[Event], known: Set[UUID]
) -> set[UUID]:
    """``claim`` for events of the event table: the events of ``events`` not processed before
    (those the caller hands to the handler), recorded as processed. An event that continues its
    aggregate's prefix moves the watermark (markers it moves over are deleted: the watermark
    says them now); one beyond a gap gets a marker. ``known``: events known as processed (by the
    handler's last full rebuild, or the cache): never claimed, but the watermark moves over
    them. The batch's progress rows are locked first, so concurrent batches of one aggregate
    (live processing beside a replay) decide one after the other."""
    if not events:
        return set()
    rows = conn.execute(
        QUERIES["lock_progress"],
        {"handler": handler_name, "aggregates": sorted({e["aggregate_id"] for e in events})},
    ).fetchall()
    progress = {r["aggregate_id"]: (r["watermark"], r["marked_max"]) for r in rows}
    maybe_marked = [
        e["event_id"] for e in events
        if e["event_id"] not in known
        and progress[e["aggregate_id"]][0] < e["sequence_num"] <= progress[e["aggregate_id"]][1]
    ]  # fmt: skip
    marked: set[UUID] = set()
    if maybe_marked:
        params = {"handler": handler_name, "event_ids": maybe_marked}
        marked = {r["event_id"] for r in conn.execute(QUERIES["marked"], params, binary=True)}
    step = _Progress(progress, known | marked)
    for e in sorted(events, key=lambda e: (e["aggregate_id"], e["sequence_num"])):
        step.take(e, e["event_id"] in marked)
    step.record(conn, handler_name)
    return step.claimed


@dataclass
class _Progress:
    """What ``claim_in_order`` decides, event by event in per-aggregate order."""

    #: aggregate -> (watermark, marked_max) as locked, then as they become
    progress: dict[str, tuple[int, int]]
    #: events processed before this batch
    done: Set[UUID]
    claimed: set[UUID] = field(default_factory=set)
    to_mark: list[UUID] = field(default_factory=list)
    absorbed: list[UUID] = field(default_factory=list)
    moved: set[str] = field(default_factory=set)

    def take(self, e: Mapping[str, Any], marked: bool) -> None:
        aggregate, seq, event_id = e["aggregate_id"], e["sequence_num"], e["event_id"]
        watermark, marked_max = self.progress[aggregate]
        if seq <= watermark or event_id in self.claimed:
            return  # processed before (or twice in the batch)
        new = event_id not in self.done
        if new:
            self.claimed.add(event_id)
        if seq == watermark + 1:  # continues the prefix
            self.progress[aggregate] = (seq, marked_max)
            self.moved.add(aggregate)
            if marked:
                self.absorbed.append(event_id)
        elif new:  # beyond a gap: only a marker can say it
            self.to_mark.append(event_id)
            self.progress[aggregate] = (watermark, max(marked_max, seq))
            self.moved.add(aggregate)

    def record(self, conn: Connection, handler_name: str) -> None:
        if self.to_mark:
            conn.execute(
                QUERIES["mark"], {"handler": handler_name, "event_ids": self.to_mark}, binary=True
            )
        if self.absorbed:
            conn.execute(
                QUERIES["unmark"], {"handler": handler_name, "event_ids": self.absorbed},
                binary=True,
            )  # fmt: skip
        if self.moved:
            moved = sorted(self.moved)
            conn.execute(
                QUERIES["advance_progress"],
                {"handler": handler_name, "aggregates": moved,
                 "watermarks": [self.progress[a][0] for a in moved],
                 "marked": [self.progress[a][1] for a in moved]},
            )  # fmt: skip


def fold_in_order(
    conn: Connection,
    handler_name: str,
    batch: sql.Composable,
    params: Mapping[str, Any],
    *,
    covered: bool,
    fold_sql: str,
) -> tuple[int, Mapping[str, Any] | None]:
    """Apply a batch of the event table with the handler's set-based fold (no event reaches
    Python; ``batch`` is its SELECT in aggregate order, with a ``_covered`` column if
    ``covered``), if for every aggregate the batch holds exactly the events right after its
    watermark (no gap, none marked or covered: all of them new); the watermarks move to the
    batch's last event of each, and no marker is written. Returns the batch's size and its last
    event ((0, None): empty). Raises ``NotInOrder`` when the batch is not so; the caller must
    roll the transaction back, and the batch goes through ``claim_in_order``."""
    query = sql.SQL(QUERIES["fold_in_order"]).format(
        batch=batch, covered=sql.SQL("_covered" if covered else "false"), fold=sql.SQL(fold_sql)
    )
    row = conn.execute(query, {**params, "handler": handler_name}).fetchone()
    if row is None:
        return 0, None
    if not row["ok"]:
        raise NotInOrder(f"a batch of {handler_name!r} does not continue its watermarks")
    return int(row["n"]), row


class NotInOrder(Exception):
    """A batch that ``fold_in_order`` cannot apply (its transaction must be rolled back)."""


def clear_markers(conn: Connection, handler_name: str, aggregate_id: str | None) -> int:
    """Forget what ``handler_name`` processed (of one aggregate, or all): its markers, its
    progress per aggregate and what it was caught up to; bump its cache epoch."""
    params = {"handler": handler_name, "aggregate_id": aggregate_id}
    whole = aggregate_id is None
    cur = conn.execute(QUERIES["clear_markers" if whole else "clear_aggregate_markers"], params)
    conn.execute(QUERIES["clear_progress" if whole else "clear_aggregate_progress"], params)
    bump_epoch(conn, handler_name)
    return cur.rowcount


def bump_epoch(conn: Connection, handler_name: str) -> str:
    """Give the handler a new cache epoch: every cached marker of an older one becomes a miss,
    and it is caught up to nothing (0012_caught_up)."""
    row = conn.execute(QUERIES["bump_epoch"], {"handler": handler_name}).fetchone()
    assert row is not None
    return str(row["cache_epoch"])


def current_epoch(conn: Connection, handler_name: str) -> str:
    """The handler's cache epoch (created on first use)."""
    params = {"handler": handler_name}
    row = conn.execute(QUERIES["current_epoch"], params).fetchone()
    if row is not None:
        return str(row["cache_epoch"])
    row = conn.execute(QUERIES["create_state"], params).fetchone()
    assert row is not None
    return str(row["cache_epoch"])


@dataclass(frozen=True)
class Rebuild:
    """A handler's latest full rebuild: the events visible in ``snapshot`` are its own."""

    job_id: str
    snapshot: str
    completed: bool


def start_rebuild(conn: Connection, handler_name: str, job_id: UUID, snapshot: str) -> None:
    """Record that a full rebuild took over every event visible in ``snapshot`` (in the
    planning transaction, after the markers were cleared)."""
    params = {"job_id": job_id, "snapshot": snapshot, "handler": handler_name}
    conn.execute(QUERIES["start_rebuild"], params)


def latest_rebuild(conn: Connection, handler_name: str) -> Rebuild | None:
    row = conn.execute(QUERIES["latest_rebuild"], {"handler": handler_name}).fetchone()
    if row is None:
        return None
    return Rebuild(row["job_id"], row["snapshot"], row["rebuild_completed"])


def covered(conn: Connection, handler_name: str, event_ids: Sequence[UUID]) -> set[UUID]:
    """The events that belong to the handler's latest full rebuild (visible in its snapshot):
    processed if it completed, to be processed by it if not. Never to be claimed elsewhere."""
    if not event_ids:
        return set()
    params = {"handler": handler_name, "event_ids": list(event_ids)}
    rows = conn.execute(QUERIES["covered"], params).fetchall()
    return {r["event_id"] for r in rows}


def cache_key(handler_name: str, event_id: UUID | str) -> str:
    return f"processed:{handler_name}:{event_id}"


class ProcessedCache:
    """The Redis cache of processed markers. Every method degrades to "nothing cached" when Redis
    is unreachable: the database claim decides anyway."""

    def __init__(self, client: redis.Redis, ttl_seconds: int) -> None:
        self._redis = client
        self._ttl = ttl_seconds

    @classmethod
    def from_url(cls, url: str, ttl_seconds: int) -> ProcessedCache:
        client = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
        return cls(client, ttl_seconds)

    def seen(self, handler_name: str, epoch: str, event_ids: Sequence[UUID]) -> set[UUID]:
        """The events of ``event_ids`` that the cache knows as processed in ``epoch``."""
        if not event_ids:
            return set()
        try:
            values: list[bytes | None] = self._redis.mget(  # type: ignore[assignment]
                [cache_key(handler_name, e) for e in event_ids]
            )
        except redis.RedisError as exc:
            log.warning("idempotency cache unreachable, asking PostgreSQL only: %s", exc)
            return set()
        want = epoch.encode()
        return {e for e, v in zip(event_ids, values, strict=True) if v == want}

    def mark(self, handler_name: str, epoch: str, event_ids: Sequence[UUID]) -> None:
        """Remember ``event_ids`` as processed in ``epoch`` (call after the commit)."""
        if not event_ids:
            return
        try:
            pipe = self._redis.pipeline(transaction=False)
            for e in event_ids:
                pipe.set(cache_key(handler_name, e), epoch, ex=self._ttl)
            pipe.execute()
        except redis.RedisError as exc:
            log.warning(
                "idempotency cache unreachable, not caching %d markers: %s", len(event_ids), exc
            )

    def close(self) -> None:
        self._redis.close()
