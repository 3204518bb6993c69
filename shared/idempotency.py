"""Idempotency: ``processed_event`` is the truth, Redis a flushable cache in front of it.

* ``claim`` inserts the markers of a batch in one statement, in the batch's transaction, and
  returns the events that were not processed before: only those reach the handler. A marker and
  the handler's effect commit together or not at all, so "processed" always means "applied".
* ``ProcessedCache`` answers "already processed?" for a whole batch in one Redis round trip, so a
  catch-up replay over events that were processed long ago does not have to touch the marker
  table. A key's value is the handler's cache epoch (``handler_state.cache_epoch``); a rebuild
  bumps the epoch in PostgreSQL, which turns every older key into a miss without having to reach
  Redis. Losing Redis (flush, restart, outage) only costs speed, never correctness.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from uuid import UUID

import redis

from shared import queries
from shared.db import Connection

log = logging.getLogger(__name__)

QUERIES = queries.load("idempotency")


def claim(conn: Connection, handler_name: str, event_ids: Sequence[UUID]) -> set[UUID]:
    """Mark ``event_ids`` processed by ``handler_name``; return those that were not already."""
    if not event_ids:
        return set()
    params = {"handler": handler_name, "event_ids": list(event_ids)}
    rows = conn.execute(QUERIES["claim"], params, binary=True).fetchall()
    return {r["event_id"] for r in rows}


def clear_markers(conn: Connection, handler_name: str, aggregate_id: str | None) -> int:
    """Forget what ``handler_name`` processed (of one aggregate, or all); bump its cache epoch."""
    params = {"handler": handler_name, "aggregate_id": aggregate_id}
    query = "clear_markers" if aggregate_id is None else "clear_aggregate_markers"
    cur = conn.execute(QUERIES[query], params)
    bump_epoch(conn, handler_name)
    return cur.rowcount


def bump_epoch(conn: Connection, handler_name: str) -> str:
    """Give the handler a new cache epoch: every cached marker of an older one becomes a miss."""
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
