"""What a worker process needs to run slices and live steps: built once per process, after the
fork (a forked child never reuses its parent's connections)."""

from __future__ import annotations

import os
from dataclasses import dataclass

from shared import db
from shared.handlers import Registry, load_registry
from shared.idempotency import ProcessedCache
from shared.settings import Settings
from shared.throttle import Throttle


@dataclass
class Context:
    """What a worker process needs to run slices: built once per process (after the fork)."""

    settings: Settings
    pool: db.Pool
    registry: Registry
    cache: ProcessedCache
    throttle: Throttle

    @classmethod
    def create(cls, settings: Settings) -> Context:
        return cls(
            settings=settings,
            pool=db.make_pool(settings, max_size=2),
            registry=load_registry(settings.handler_modules),
            cache=ProcessedCache.from_url(settings.redis_url, settings.cache_ttl_seconds),
            throttle=Throttle.from_url(settings.redis_url),
        )

    def close(self) -> None:
        self.pool.close()
        self.cache.close()
        self.throttle.close()


_context: tuple[int, Context] | None = None


def process_context(settings: Settings) -> Context:
    """This process's Context, created on first use; a forked child never reuses its parent's
    connections (they are not safe to share across processes)."""
    global _context
    if _context is None or _context[0] != os.getpid():
        _context = (os.getpid(), Context.create(settings))
    return _context[1]
