"""A look into the Redis broker: which task ids still wait in a queue.

The reconciler uses it to tell a pending slice that waits its turn from one whose message is gone:
vanished (Redis restarted without persistence, FLUSHALL), or delivered to a worker that died before
starting it (the message then sits among the unacknowledged until the visibility timeout, hours
away). It knows kombu's Redis layout: a queue is a list of JSON messages under the queue's name.
For any other broker it answers None ("cannot tell").
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable

import redis

log = logging.getLogger(__name__)

_SCAN_CHUNK = 1000


def queued_task_ids(broker_url: str, queues: Iterable[str]) -> set[str] | None:
    """Task ids that have a message waiting in ``queues`` (not yet delivered to a worker)."""
    if not broker_url.startswith(("redis://", "rediss://", "unix://")):
        return None
    ids: set[str] = set()
    try:
        with redis.Redis.from_url(broker_url, socket_timeout=10) as client:
            for queue in queues:
                length = int(client.llen(queue))
                for start in range(0, length, _SCAN_CHUNK):
                    for raw in client.lrange(queue, start, start + _SCAN_CHUNK - 1):
                        task_id = _task_id(raw)
                        if task_id:
                            ids.add(task_id)
    except redis.RedisError as exc:
        log.warning("cannot look into the broker: %s", exc)
        return None
    return ids


def _task_id(raw: bytes | str) -> str | None:
    try:
        task_id = json.loads(raw)["headers"]["id"]
    except (ValueError, KeyError, TypeError):
        return None
    return task_id if isinstance(task_id, str) else None
