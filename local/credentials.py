"""The embedded stack's secret, and the files that give it to its servers (``local.embedded``).

One random secret per home, in a 0600 file of the home's owner, is the password of both servers.
It reaches them without ever being on a command line (which /proc shows every local user):
PostgreSQL gets it from a 0600 ``--pwfile`` at ``initdb`` (or as a SCRAM verifier on stdin when
an old home is upgraded), Redis from its 0600 config file. Under root these files belong to the
server's unprivileged user, and they are written so that no link planted in a directory that user
can write is ever followed.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import os
import pwd
import re
import secrets
import socket
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

from shared.errors import EmbeddedServerError

SECRET_BYTES = 24  # 48 hex characters: URL-safe as they are
SCRAM_ITERATIONS = 4096  # PostgreSQL's default
#: Redis commands that reconfigure the server, write files where told or load code: off for
#: every client, the password's holder included (Celery, kombu and redis-py use none of them)
REDIS_DISABLED = ("CONFIG", "DEBUG", "MODULE", "SLAVEOF", "REPLICAOF", "ACL")

PG_HBA = """\
# Written by event-replay (local/embedded.py): TCP on loopback only, with the stack's password.
host    all    all    127.0.0.1/32    scram-sha-256
host    all    all    ::1/128         scram-sha-256
"""


def check_reachable(path: Path, owner: pwd.struct_passwd) -> None:
    """Under root: every directory above ``path`` must let ``owner`` through."""
    for parent in path.parents:
        st = parent.stat()
        if st.st_uid == owner.pw_uid or st.st_mode & 0o001:
            continue
        raise EmbeddedServerError(
            f"the embedded servers run as user {owner.pw_name!r} (not root), which cannot"
            f" enter {parent}: chmod o+x {parent}, or set REPLAY_HOME to a directory it can reach"
        )


def own_dir(path: Path, owner: pwd.struct_passwd | None) -> None:
    """Make ``path`` (0700) and, under root, give it and what is in it to ``owner``."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    if owner is None:
        return
    check_reachable(path, owner)
    uid = path.lstat().st_uid
    if uid == owner.pw_uid:
        return
    if uid != os.geteuid():
        raise EmbeddedServerError(f"{path} belongs to another user (uid {uid}); remove it")
    # Ours until now (new, or from before the server ran as its own user): nobody else could
    # have put a link in it, and no link is followed.
    for entry in (path, *path.iterdir()):
        os.chown(entry, owner.pw_uid, owner.pw_gid, follow_symlinks=False)


def write_private(path: Path, text: str, owner: pwd.struct_passwd | None) -> None:
    """Replace ``path`` with a 0600 file of ``owner`` (else ours) holding ``text``. The file is
    made afresh (no link followed, even in a directory the server's user may write) and renamed
    into place, so a reader sees the old content or the new."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as file:
        if owner is not None:
            os.fchown(file.fileno(), owner.pw_uid, owner.pw_gid)
        file.write(text)
    tmp.replace(path)


@contextlib.contextmanager
def password_file(directory: Path, secret: str, owner: pwd.struct_passwd | None) -> Iterator[str]:
    """A 0600 file of ``owner`` holding ``secret``, for ``initdb --pwfile``; removed after."""
    fd, name = tempfile.mkstemp(prefix=".pwfile-", dir=directory)
    try:
        with os.fdopen(fd, "w") as file:
            if owner is not None:
                os.fchown(file.fileno(), owner.pw_uid, owner.pw_gid)
            file.write(secret + "\n")
        yield name
    finally:
        os.unlink(name)


def new_secret(path: Path) -> str:
    """A new random secret, written to ``path`` (0600)."""
    secret = secrets.token_hex(SECRET_BYTES)
    write_private(path, secret + "\n", None)
    return secret


def read_secret(path: Path) -> str | None:
    """The home's secret, None if there is none yet. One that others could read, or that is
    not ours, is refused rather than used."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise EmbeddedServerError(f"cannot read {path}: {exc.strerror}") from exc
    with os.fdopen(fd) as file:
        st = os.fstat(file.fileno())
        text = file.read().strip()
    if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o077:
        raise EmbeddedServerError(
            f"{path} must be a file of this user that only it can read: chmod 600 {path}, or"
            " delete it (the next start makes a new secret)"
        )
    if not re.fullmatch(r"[0-9a-f]{32,}", text):
        raise EmbeddedServerError(f"{path} is not a secret replay wrote; delete it")
    return text


def scram_verifier(password: str) -> str:
    """What PostgreSQL stores for a scram-sha-256 password (RFC 5802, RFC 7677); accepted by
    ``ALTER ROLE ... PASSWORD`` as it is, so the password itself never reaches the server."""
    salt = os.urandom(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, SCRAM_ITERATIONS)
    stored = hashlib.sha256(hmac.digest(salted, b"Client Key", "sha256")).digest()
    server = hmac.digest(salted, b"Server Key", "sha256")
    b64 = [base64.b64encode(part).decode() for part in (salt, stored, server)]
    return f"SCRAM-SHA-256${SCRAM_ITERATIONS}:{b64[0]}${b64[1]}:{b64[2]}"


def redis_config(directory: Path, port: int, secret: str) -> str:
    def quoted(path: Path) -> str:
        return '"' + str(path).replace("\\", "\\\\").replace('"', '\\"') + '"'

    return "\n".join(
        [
            "# Written by event-replay (local/embedded.py) at each start.",
            "bind 127.0.0.1",
            f"port {port}",
            "daemonize yes",
            f"dir {quoted(directory)}",
            f"pidfile {quoted(directory / 'redis.pid')}",
            f"logfile {quoted(directory / 'redis.log')}",
            "appendonly yes",
            'save ""',
            f"requirepass {secret}",
            *(f'rename-command {command} ""' for command in REDIS_DISABLED),
            "",
        ]
    )


def redis_answers(port: int, secret: str) -> bool:
    """True once Redis accepts the secret and answers PING (not while it loads its data)."""
    words = [["AUTH", secret], ["PING"]]
    request = b"".join(
        f"*{len(w)}\r\n".encode() + b"".join(f"${len(x)}\r\n{x}\r\n".encode() for x in w)
        for w in words
    )
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0) as sock:
            sock.sendall(request)
            reply = b""
            while reply.count(b"\r\n") < 2:
                chunk = sock.recv(256)
                if not chunk:
                    break
                reply += chunk
            return reply.startswith(b"+OK\r\n+PONG")
    except OSError:
        return False
