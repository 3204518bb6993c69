"""A look into the Redis broker: which task ids still have a message, queued or unacknowledged.

The reconciler uses it to tell a slice that waits its turn in the queue from one whose message
vanished (Redis restarted without persistence, FLUSHALL). It knows kombu's Redis layout: a queue
is a list of JSON messages under the queue's name, and messages delivered but not yet acknowledged
sit in the ``unacked`` hash. For any other broker it answers None ("cannot tell").
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable

import redis

log = logging.getLogger(__name__)

UNACKED_KEY = "unacked"
_SCAN_CHUNK = 1000


def task_ids_with_messages(broker_url: str, queues: Iterable[str]) -> set[str] | None:
    """Task ids that have a message in ``queues`` or among the unacknowledged ones."""
    if not broker_url.startswith(("redis://", "rediss://", "unix://")):
        return None
    ids: set[str] = set()
    try:
        with redis.Redis.from_url(broker_url, socket_timeout=10) as client:
            for queue in queues:
                length = int(client.llen(queue))
                for start in range(0, length, _SCAN_CHUNK):
                    for raw in client.lrange(queue, start, start + _SCAN_CHUNK - 1):
                        ids.update(_task_id(raw))
            for raw in client.hvals(UNACKED_KEY):
                try:
                    envelope = json.loads(raw)
                except ValueError:
                    continue
                if isinstance(envelope, list) and envelope:
                    ids.update(_task_id(json.dumps(envelope[0])))
    except redis.RedisError as exc:
        log.warning("cannot look into the broker: %s", exc)
        return None
    return ids


def _task_id(raw: bytes | str) -> set[str]:
    try:
        message = json.loads(raw)
        task_id = message["headers"]["id"]
    except (ValueError, KeyError, TypeError):
        return set()
    return {task_id} if isinstance(task_id, str) else set()
