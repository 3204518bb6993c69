"""The database connections of the scheduler side: one pool per database URL and process,
shared by every ``Coordinator`` of that URL (the module-level API's included).

Issue 13: a new connection per call made ``scheduler.load_aggregate`` of a snapshotted order
cost 7.7 ms against 0.8 ms on a held connection, and every ``get_job`` poll of a wait paid the
same. A pool is made on first use, kept while a coordinator of its URL is open and for the life
of the process, and closed at exit (``atexit``: no "pool not closed" warning, no thread left
behind). A forked child never uses its parent's pools (their connections are the parent's
sockets): it makes its own on first use, and leaves the parent's alone, neither used nor closed.
"""

from __future__ import annotations

import atexit
import os
import threading
from dataclasses import dataclass

from shared import db
from shared.settings import Settings

#: connections of one pool at most: the threads of one program that call the API at once
MAX_CONNECTIONS = 4
#: a connection idle longer than this is checked (a round trip) before a call gets it; one used
#: more recently is not (a call of the API is often well under a millisecond)
CHECK_IDLE_AFTER_SECONDS = 5.0


@dataclass
class _Held:
    pool: db.Pool
    users: int  # open coordinators of the URL; the process's own hold counts as one


_lock = threading.Lock()
_pools: dict[str, _Held] = {}
_pid = os.getpid()


def acquire(settings: Settings) -> db.Pool:
    """The pool of ``settings.database_url`` in this process, made if it has none yet; the
    caller holds it until ``release``. Raises ``DatabaseUnavailable`` (or
    ``ConfigurationError``) if the server cannot be reached with that URL."""
    url = settings.database_url
    with _lock:
        _forget_if_forked()
        held = _pools.get(url)
        if held is None:
            held = _pools[url] = _Held(
                db.make_pool(
                    settings, max_size=MAX_CONNECTIONS, check_idle_after=CHECK_IDLE_AFTER_SECONDS
                ),
                0,
            )
        held.users += 1
        return held.pool


def release(pool: db.Pool) -> None:
    """Give back a pool of ``acquire``; the last holder closes it (a scratch database's pool is
    closed when its coordinator is, before the database is dropped)."""
    with _lock:
        _forget_if_forked()  # then a pool of the parent's is not found: not ours to close
        for url, held in list(_pools.items()):
            if held.pool is pool:
                held.users -= 1
                if held.users <= 0:
                    del _pools[url]
                    held.pool.close()
                return


def close_all() -> None:
    """Close this process's pools (run at exit; the module-level API makes new ones if it is
    called again)."""
    with _lock:
        _forget_if_forked()
        held = list(_pools.values())
        _pools.clear()
    for h in held:
        h.pool.close()


def open_urls() -> list[str]:
    """The database URLs this process holds a pool of (passwords included: not for printing)."""
    with _lock:
        _forget_if_forked()
        return list(_pools)


def _forget_if_forked() -> None:
    """In a forked child, drop the parent's pools without touching them: closing one would end
    the parent's sessions (the sockets are shared). Called with ``_lock`` held."""
    global _pid
    if os.getpid() != _pid:
        _pid = os.getpid()
        _pools.clear()


def _after_fork_in_child() -> None:
    # A thread of the parent may have held the lock at the fork: the child's is a new one.
    global _lock
    _lock = threading.Lock()
    with _lock:
        _forget_if_forked()


os.register_at_fork(after_in_child=_after_fork_in_child)
atexit.register(close_all)
