"""Which PostgreSQL, Redis and Kafka a command uses.

For each of PostgreSQL and Redis, in this order:

1. explicit environment variables: ``REPLAY_DATABASE_URL`` for PostgreSQL; any of
   ``CELERY_BROKER_URL``, ``CELERY_RESULT_BACKEND``, ``REPLAY_REDIS_URL`` for Redis. These are
   used as given, never second-guessed: a deployment that names its servers gets an error when
   they are down, not a silent embedded database;
2. else the local default server, if it answers: 127.0.0.1:5432 and 127.0.0.1:6379, or the
   ``host:port`` in ``REPLAY_LOCAL_POSTGRES`` / ``REPLAY_LOCAL_REDIS``;
3. else the embedded server of ``event-replay[embedded]`` (``local.embedded``), started for the
   command and stopped after it, unless ``replay up`` keeps it running.

Kafka (issue 14), when its client is installed (``event-replay[kafka]``), the same way:
``REPLAY_KAFKA_BOOTSTRAP`` as given; else a broker at ``REPLAY_LOCAL_KAFKA`` (default
127.0.0.1:9092) if it answers; else the embedded tansu that ``replay up`` started in this home, if
it runs. A command never starts a broker for itself: an in-memory broker that stops with the
command would hold nothing. Found nowhere, ``REPLAY_KAFKA_BOOTSTRAP`` stays unset, and the Kafka
source says what to do when a Kafka job is submitted (a command that does not read Kafka is not
held up by it). Probing costs one TCP connect, refused at once on 127.0.0.1 when nothing listens
there; a remote ``REPLAY_LOCAL_KAFKA`` that drops packets costs up to PROBE_TIMEOUT_SECONDS, as a
remote local PostgreSQL or Redis does.

``resolved()`` returns the environment the command should run with, and one line saying what it
chose, e.g. ``PostgreSQL: embedded 16.2 in .replay/pg (127.0.0.1:41011), started · Redis: local
127.0.0.1:6379 · Kafka: embedded tansu (127.0.0.1:20002), reused``: an embedded server is
``started`` by this command or ``reused`` (found running, from ``replay up`` or another command).
The embedded servers ask for their stack's secret: the URLs put in the environment carry it, the
line never does (it names no URL).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import socket
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from local import embedded
from shared.errors import ConfigurationError, EmbeddedServerError, ServiceUnavailable

LOCAL_POSTGRES_ENV = "REPLAY_LOCAL_POSTGRES"
LOCAL_REDIS_ENV = "REPLAY_LOCAL_REDIS"
LOCAL_KAFKA_ENV = "REPLAY_LOCAL_KAFKA"
DEFAULT_LOCAL_POSTGRES = "127.0.0.1:5432"
DEFAULT_LOCAL_REDIS = "127.0.0.1:6379"
DEFAULT_LOCAL_KAFKA = "127.0.0.1:9092"
DATABASE_ENV = "REPLAY_DATABASE_URL"
REDIS_ENV = ("CELERY_BROKER_URL", "CELERY_RESULT_BACKEND", "REPLAY_REDIS_URL")
KAFKA_ENV = embedded.KAFKA_ENV
#: the Kafka client of event-replay[kafka]: without it no Kafka is resolved (nothing could use it)
KAFKA_CLIENT = "confluent_kafka"
PROBE_TIMEOUT_SECONDS = 1.0

WAYS_OUT = (
    f"pip install '{embedded.EXTRA}' to have them started here, or start PostgreSQL and Redis"
    " (docker compose up -d postgres redis) and point REPLAY_DATABASE_URL and CELERY_BROKER_URL"
    " at them"
)


@dataclass(frozen=True)
class Resolution:
    #: the environment to build Settings from: the caller's, plus the URLs that were resolved
    env: dict[str, str]
    #: one line naming what was chosen; empty when everything came from the environment
    line: str
    #: the URLs this resolution added to the caller's environment
    overlay: dict[str, str] = field(default_factory=dict)
    #: the embedded stack this command registered with (released by ``resolved``), if any
    stack: embedded.Stack | None = None
    #: the servers (embedded.POSTGRES, embedded.REDIS) taken from that stack (its Kafka, which
    #: this command neither starts nor stops, is not counted)
    embedded: tuple[str, ...] = ()
    #: filled when ``resolved`` ends: the embedded servers stopped because nobody uses them now
    stopped: list[str] = field(default_factory=list)


@dataclass
class _Probe:
    env: dict[str, str]
    overlay: dict[str, str] = field(default_factory=dict)
    #: server -> what was chosen for it, e.g. "local 127.0.0.1:5432"
    chosen: dict[str, str] = field(default_factory=dict)
    #: server -> the local address that did not answer (left for the embedded one)
    missing: dict[str, str] = field(default_factory=dict)
    stack: embedded.Stack | None = None
    used: tuple[str, ...] = ()

    @property
    def needed(self) -> tuple[str, ...]:
        """The missing servers a command starts for itself when none answers (not Kafka)."""
        return tuple(server for server in self.missing if server in embedded.SERVERS)

    def use(self, stack: embedded.Stack, servers: tuple[str, ...], *, acquired: bool) -> None:
        """Take ``servers`` from ``stack``. ``acquired``: this command asked for them (and
        started those that did not run); the line then says which it started and which it
        found running, e.g. ``embedded 16.2 in .replay/pg (127.0.0.1:41011), reused``."""
        stack_env = stack.env()
        if embedded.POSTGRES in servers:
            self.overlay[DATABASE_ENV] = stack_env[DATABASE_ENV]
        if embedded.REDIS in servers:
            self.overlay.update({name: stack_env[name] for name in REDIS_ENV})
        for server in servers:
            how = ("started" if server in stack.started else "reused") if acquired else ""
            self.chosen[server] = ", ".join(filter(None, (stack.describe(server), how)))
        self.stack, self.used = stack, servers

    def use_kafka(self, port: int, *, acquired: bool) -> None:
        """Take the embedded Kafka that ``replay up`` runs on ``port``; with ``acquired`` (a
        command's line) it says ``reused``: a command never starts it."""
        self.overlay[KAFKA_ENV] = f"127.0.0.1:{port}"
        how = ", reused" if acquired else ""
        self.chosen[embedded.KAFKA] = embedded.describe_kafka(port) + how
        self.missing.pop(embedded.KAFKA, None)

    def resolution(self) -> Resolution:
        line = _line(self.chosen) if self.overlay else ""
        return Resolution(
            {**self.env, **self.overlay}, line, dict(self.overlay), self.stack, self.used
        )


def _probe(env: Mapping[str, str] | None) -> _Probe:
    """Steps 1 and 2 for both servers; what is left for the embedded ones is ``missing``."""
    probe = _Probe(dict(os.environ if env is None else env))
    env = probe.env
    if env.get(DATABASE_ENV):
        probe.chosen[embedded.POSTGRES] = DATABASE_ENV
    else:
        host, port = address(env, LOCAL_POSTGRES_ENV, DEFAULT_LOCAL_POSTGRES)
        if answers(host, port):
            probe.overlay[DATABASE_ENV] = f"postgresql://postgres@{host}:{port}/replay"
            probe.chosen[embedded.POSTGRES] = f"local {host}:{port}"
        else:
            probe.missing[embedded.POSTGRES] = f"{host}:{port}"

    if any(env.get(name) for name in REDIS_ENV):
        probe.chosen[embedded.REDIS] = next(name for name in REDIS_ENV if env.get(name))
    else:
        host, port = address(env, LOCAL_REDIS_ENV, DEFAULT_LOCAL_REDIS)
        if answers(host, port):
            urls = {name: f"redis://{host}:{port}/{db}" for db, name in enumerate(REDIS_ENV)}
            probe.overlay.update(urls)
            probe.chosen[embedded.REDIS] = f"local {host}:{port}"
        else:
            probe.missing[embedded.REDIS] = f"{host}:{port}"

    if kafka_wanted():
        given = configured_kafka(env)
        if given is None:
            host, port = address(env, LOCAL_KAFKA_ENV, DEFAULT_LOCAL_KAFKA)
            probe.missing[embedded.KAFKA] = f"{host}:{port}"
        else:
            how, bootstrap = given
            probe.chosen[embedded.KAFKA] = how
            if bootstrap is not None:
                probe.overlay[KAFKA_ENV] = bootstrap
    return probe


def kafka_wanted() -> bool:
    """Whether Kafka is resolved at all: only with its client installed."""
    try:
        return importlib.util.find_spec(KAFKA_CLIENT) is not None
    except (ImportError, ValueError):
        return False


def configured_kafka(env: Mapping[str, str] | None = None) -> tuple[str, str | None] | None:
    """Steps 1 and 2 for Kafka (what ``replay up`` checks before it starts one): how the broker
    is given, and the ``REPLAY_KAFKA_BOOTSTRAP`` to add for it, e.g. ``("REPLAY_KAFKA_BOOTSTRAP",
    None)`` or ``("local 127.0.0.1:9092", "127.0.0.1:9092")``; None if neither is there."""
    env = os.environ if env is None else env
    if env.get(KAFKA_ENV, "").strip():
        return KAFKA_ENV, None  # used as given, never second-guessed
    host, port = address(env, LOCAL_KAFKA_ENV, DEFAULT_LOCAL_KAFKA)
    if answers(host, port):
        return f"local {host}:{port}", f"{host}:{port}"
    return None


def _embedded_kafka(probe: _Probe, *, acquired: bool) -> None:
    """Step 3 for Kafka: the broker ``replay up`` started (and pinned) in this home, if it runs.
    Never started here (module docstring)."""
    if embedded.KAFKA not in probe.missing:
        return
    found = embedded.binaries()
    home = embedded.home(probe.env)
    if found is None or not (home / "stack.json").exists():
        return
    port = embedded.EmbeddedStack(home, found).pinned_kafka()
    if port is not None:
        probe.use_kafka(port, acquired=acquired)


@contextlib.contextmanager
def _kafka_exported(resolution: Resolution, own: bool) -> Iterator[None]:
    """The Kafka source reads ``REPLAY_KAFKA_BOOTSTRAP`` from this process's environment when a
    job uses it (shared/sources/kafka.py ``bootstrap()``), not from Settings, and the workers a
    command starts inherit that environment: so a broker resolved for a command's own
    environment (``own``) is put there while the command runs."""
    value = resolution.overlay.get(KAFKA_ENV)
    if not own or value is None:
        yield
        return
    before = os.environ.get(KAFKA_ENV)  # unset or empty, or it would not have been resolved
    os.environ[KAFKA_ENV] = value
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(KAFKA_ENV, None)
        else:
            os.environ[KAFKA_ENV] = before


@contextlib.contextmanager
def resolved(env: Mapping[str, str] | None = None) -> Iterator[Resolution]:
    """Resolve both servers, starting embedded ones if needed; those are released on exit (and
    stopped, if no other command uses them and ``replay up`` did not pin them). Kafka is only
    found, never started (module docstring); without ``env`` (this process's environment) the
    broker found is in ``os.environ`` while the block runs (``_kafka_exported``)."""
    probe = _probe(env)
    needed = probe.needed
    if not needed:
        _embedded_kafka(probe, acquired=True)
        direct = probe.resolution()
        with _kafka_exported(direct, env is None):
            yield direct
        return
    found = embedded.binaries()
    if found is None:
        raise ServiceUnavailable(
            f"{_nothing_answers({s: probe.missing[s] for s in needed})}, and the embedded"
            f" servers are not installed: {WAYS_OUT}"
        )
    servers = embedded.EmbeddedStack(embedded.home(probe.env), found)
    resolution = None
    try:
        stack = servers.acquire(needed)
        probe.use(stack, needed, acquired=True)
        _embedded_kafka(probe, acquired=True)
        resolution = probe.resolution()
        with _kafka_exported(resolution, env is None):
            yield resolution
    finally:
        stopped = servers.release()
        if resolution is not None:
            resolution.stopped.extend(stopped)


def discover(env: Mapping[str, str] | None = None) -> Resolution:
    """Resolve the servers without starting anything: for a worker or Flower started by hand
    after ``replay up`` in the same directory. Only a stack that ``up`` pinned is used: one that
    a command started for itself stops when that command ends. A server found nowhere keeps its
    default URL (and Celery's connection retries say so)."""
    probe = _probe(env)
    found = embedded.binaries()
    if probe.needed and found is not None and embedded.home(probe.env).exists():
        try:
            stack, running = embedded.EmbeddedStack(embedded.home(probe.env), found).peek()
        except EmbeddedServerError:
            # A home we cannot read (or whose secret is another user's): no stack to find there.
            stack, running = None, ()
        if stack is not None and stack.pinned:
            probe.use(stack, tuple(s for s in probe.needed if s in running), acquired=False)
    _embedded_kafka(probe, acquired=False)
    return probe.resolution()


def _line(chosen: Mapping[str, str]) -> str:
    return " · ".join(
        f"{embedded.NAMES[server]}: {chosen[server]}" for server in embedded.ALL if server in chosen
    )


def _nothing_answers(missing: Mapping[str, str]) -> str:
    unset = {embedded.POSTGRES: DATABASE_ENV, embedded.REDIS: "CELERY_BROKER_URL"}
    return " and ".join(
        f"no {embedded.NAMES[server]} answers at {where} ({unset[server]} is not set)"
        for server, where in missing.items()
    )


def address(env: Mapping[str, str], name: str, default: str) -> tuple[str, int]:
    """The local server's ``(host, port)``: the ``host:port`` in ``env[name]``, else
    ``default``. A malformed one is a ConfigurationError."""
    raw = env.get(name) or default
    host, sep, port = raw.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigurationError(f"{name} must be host:port, got {raw!r}")
    return host, int(port)


def answers(host: str, port: int) -> bool:
    """Whether something accepts TCP connections at ``host:port`` (within a second)."""
    try:
        with socket.create_connection((host, port), timeout=PROBE_TIMEOUT_SECONDS):
            return True
    except OSError:
        return False
