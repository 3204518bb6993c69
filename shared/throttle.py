"""A job's speed limit across all its workers: a token bucket in Redis.

Each slice reserves its next batch's events before reading it and sleeps until the reservation
is due. Reservations may take the bucket below zero, so waiting callers queue up in time and the
job as a whole keeps to its rate however many workers share it. The clock is Redis's (TIME), not
the workers', so skewed machines cannot cheat. Without Redis the limit is not enforced (logged):
throttling protects other traffic, it is not a correctness mechanism.
"""

from __future__ import annotations

import logging
import time

import redis

log = logging.getLogger(__name__)

# KEYS[1] bucket; ARGV rate (events/s), wanted events, burst (events). Returns seconds to wait.
_RESERVE = """
local rate = tonumber(ARGV[1])
local want = tonumber(ARGV[2])
local burst = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1])
local ts = tonumber(state[2])
if tokens == nil then tokens = burst; ts = now end
tokens = math.min(burst, tokens + (now - ts) * rate) - want
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('EXPIRE', KEYS[1], 3600)
if tokens >= 0 then return '0' end
return tostring(-tokens / rate)
"""

#: a batch holds about this much of a second's worth of events when throttled
BATCH_SECONDS = 0.1
#: the bucket holds at most this much of a second's worth (the burst after a pause)
BURST_SECONDS = 0.2


class Throttle:
    def __init__(self, client: redis.Redis) -> None:
        self._redis = client
        self._reserve = client.register_script(_RESERVE)

    @classmethod
    def from_url(cls, url: str) -> Throttle:
        return cls(redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5))

    def wait_for(self, job_id: str, events: int, rate: float) -> float:
        """Reserve ``events`` at ``rate`` events/s for the job; sleep until they are due.
        Returns the seconds slept."""
        try:
            wait = float(
                self._reserve(
                    keys=[f"replay:throttle:{job_id}"], args=[rate, events, rate * BURST_SECONDS]
                )
            )
        except redis.RedisError as exc:
            log.warning("throttle of job %s unavailable, not enforced: %s", job_id, exc)
            return 0.0
        if wait > 0:
            time.sleep(wait)
        return wait

    def close(self) -> None:
        self._redis.close()


def batch_limit(rate: float, batch_size: int) -> int:
    """Events per batch under a limit: about BATCH_SECONDS' worth, so the rate is smooth."""
    return max(1, min(batch_size, int(rate * BATCH_SECONDS)))
