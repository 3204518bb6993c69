"""A job's speed limit across all its workers: a token bucket in Redis.

Each slice reserves its next batch's events before reading it and waits until the reservation
is due. Reservations may take the bucket below zero, so waiting callers queue up in time and the
job as a whole keeps to its rate however many workers share it. The clock is Redis's (TIME), not
the workers', so skewed machines cannot cheat. Without Redis the limit is not enforced (logged):
throttling protects other traffic, it is not a correctness mechanism.

A limit is at least ``MIN_EVENTS_PER_SECOND`` (1 event/s): requests refuse less, and a worker
that finds less in the database (a row written by hand) applies the minimum instead
(``effective_rate``). A batch is at most a second's worth of events at any allowed rate (one
event at the minimum), so a reservation is due within about a second per reservation queued
ahead of it (one per slice running), never hours.

Nobody waits in one long sleep: ``sleep_until`` sleeps in steps of at most
``WAIT_STEP_SECONDS`` and asks between two steps whether to go on, so the slice loop can stop
for a cancel or a takeover, or stop waiting when the limit is lifted, within a step.

The bucket remembers the rate its reservations were taken at. When the limit changes, its
balance is rescaled to the new rate so that the time already reserved stays the same: the
reservations taken keep their due times, and new ones queue after them at the new rate. (Read
in events at the new rate, a debt taken at 10,000 events/s would last minutes to hours at 1
event/s.)
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable

import redis

log = logging.getLogger(__name__)

# KEYS[1] bucket; ARGV rate (events/s), wanted events, burst (events). Returns seconds to wait.
# A balance taken at another rate is first rescaled to this one (same time reserved, see above).
_RESERVE = """
local rate = tonumber(ARGV[1])
local want = tonumber(ARGV[2])
local burst = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts', 'rate')
local tokens = tonumber(state[1])
local ts = tonumber(state[2])
local was = tonumber(state[3])
if tokens == nil then
  tokens = burst
  ts = now
elseif was ~= nil and was > 0 and was ~= rate then
  tokens = tokens * rate / was
end
tokens = math.min(burst, tokens + (now - ts) * rate) - want
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now), 'rate', ARGV[1])
redis.call('EXPIRE', KEYS[1], 3600)
if tokens >= 0 then return '0' end
return tostring(-tokens / rate)
"""

#: the lowest limit, in events per second (requests refuse less; workers apply at least this)
MIN_EVENTS_PER_SECOND = 1.0
#: a batch holds about this much of a second's worth of events when throttled
BATCH_SECONDS = 0.1
#: the bucket holds at most this much of a second's worth (the burst after a pause)
BURST_SECONDS = 0.2
#: the longest single sleep of a throttled wait, in seconds: between two, the waiter checks
#: whether it must stop (cancel, takeover) or may stop waiting (limit lifted)
WAIT_STEP_SECONDS = 0.5


class Throttle:
    def __init__(self, client: redis.Redis) -> None:
        self._redis = client
        self._reserve = client.register_script(_RESERVE)

    @classmethod
    def from_url(cls, url: str) -> Throttle:
        return cls(redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5))

    def reserve(self, job_id: str, events: int, rate: float) -> float:
        """Reserve ``events`` at ``rate`` events/s (an ``effective_rate``) for the job. Returns
        the seconds until they are due; the caller waits (``sleep_until``), this does not.
        The reservation stands even if the caller stops waiting."""
        try:
            return float(
                self._reserve(
                    keys=[f"replay:throttle:{job_id}"], args=[rate, events, rate * BURST_SECONDS]
                )
            )
        except redis.RedisError as exc:
            log.warning("throttle of job %s unavailable, not enforced: %s", job_id, exc)
            return 0.0

    def close(self) -> None:
        self._redis.close()


def effective_rate(stored: float | None) -> float | None:
    """The limit a worker applies for a job's stored ``max_events_per_second``: None (or
    infinity) is no limit; anything below ``MIN_EVENTS_PER_SECOND``, or NaN, is the minimum,
    so a row that slipped past the request checks cannot put a worker to sleep for hours."""
    if stored is None or stored == math.inf:
        return None
    if not stored >= MIN_EVENTS_PER_SECOND:  # NaN compares false too
        return MIN_EVENTS_PER_SECOND
    return float(stored)


def batch_limit(rate: float, batch_size: int) -> int:
    """Events per batch under a limit: about BATCH_SECONDS' worth, so the rate is smooth."""
    return max(1, min(batch_size, int(rate * BATCH_SECONDS)))


def sleep_until(
    due: float, keep_waiting: Callable[[], bool], step: float = WAIT_STEP_SECONDS
) -> bool:
    """Sleep until ``due`` (a ``time.monotonic()`` instant) in steps of at most ``step``
    seconds, calling ``keep_waiting`` between two steps (not after the last). Returns True when
    ``due`` was reached, False as soon as ``keep_waiting`` returned False; whatever it raises
    ends the wait too."""
    while (left := due - time.monotonic()) > 0:
        time.sleep(min(left, step))
        if due - time.monotonic() > 0 and not keep_waiting():
            return False
    return True
