"""Settings: one frozen object built from the environment, once, by an entry point.

Nothing in this project reads ``os.environ`` at import time; ``Settings.from_env()`` is called by
``main()`` of the CLI and by the Celery app's lazy configuration, and the result is passed down.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from urllib.parse import parse_qs, unquote, urlsplit, urlunsplit

from shared.errors import ConfigurationError

DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/replay"
DEFAULT_BROKER_URL = "redis://127.0.0.1:6379/0"
DEFAULT_RESULT_BACKEND = "redis://127.0.0.1:6379/1"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/2"

# A Redis broker redelivers a message that has not been acknowledged within this many seconds.
# With acks_late, a slice task is acknowledged only when it ends, so this must exceed the longest
# slice can run, or a slice still running is handed to a second worker (harmless for correctness,
# the checkpoint compare-and-set stops the loser, but wasted work). 6 hours covers a slice of tens
# of millions of events at the measured rates; raise it with REPLAY_VISIBILITY_TIMEOUT_SECONDS.
DEFAULT_VISIBILITY_TIMEOUT_SECONDS = 6 * 3600
DEFAULT_BATCH_SIZE = 1000
DEFAULT_CACHE_TTL_SECONDS = 7 * 24 * 3600
# A running slice writes a heartbeat this often; the reconciler (run every RECONCILE seconds by
# the scheduler's beat) re-dispatches a slice whose heartbeat is older than STALE seconds.
DEFAULT_HEARTBEAT_SECONDS = 10
DEFAULT_STALE_SECONDS = 60
DEFAULT_RECONCILE_SECONDS = 15
# Chord bookkeeping lives in the result backend: if it expires while a job runs, the chord
# callback can never fire. Refused below a day or below the visibility timeout.
DEFAULT_RESULT_EXPIRES_SECONDS = 7 * 24 * 3600
MIN_RESULT_EXPIRES_SECONDS = 24 * 3600

# The URL schemes each service accepts, checked when the settings are built so that a typo is one
# line naming the variable, not a driver's traceback quoting the URL (issue 11). The broker may be
# any of kombu's transports we configure (Redis; AMQP needs no options of ours, and the
# reconciler's queue inspection answers "cannot tell" for it). The result backend must be Redis:
# chords, task progress and `close_app` rely on it. REPLAY_REDIS_URL is read by redis-py itself.
DATABASE_SCHEMES = ("postgresql", "postgres")
BROKER_SCHEMES = ("redis", "rediss", "redis+socket", "amqp", "amqps", "pyamqp")
RESULT_BACKEND_SCHEMES = ("redis", "rediss", "redis+socket")
REDIS_SCHEMES = ("redis", "rediss", "unix")
RESULT_BACKEND_ENV = "CELERY_RESULT_BACKEND"


def _int(env: Mapping[str, str], name: str, default: int, minimum: int = 1) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigurationError(f"{name} must be an integer, got {raw!r}") from None
    if value < minimum:
        raise ConfigurationError(f"{name} must be at least {minimum}, got {value}")
    return value


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigurationError(f"{name} must be a number, got {raw!r}") from None
    if not value > 0:
        raise ConfigurationError(f"{name} must be positive, got {raw!r}")
    return value


@dataclass(frozen=True)
class Settings:
    database_url: str = DEFAULT_DATABASE_URL
    broker_url: str = DEFAULT_BROKER_URL
    result_backend: str = DEFAULT_RESULT_BACKEND
    redis_url: str = DEFAULT_REDIS_URL
    handler_modules: tuple[str, ...] = ()
    queue: str = "replay"
    live_queue: str = "live"
    batch_size: int = DEFAULT_BATCH_SIZE
    visibility_timeout_seconds: int = DEFAULT_VISIBILITY_TIMEOUT_SECONDS
    cache_ttl_seconds: int = DEFAULT_CACHE_TTL_SECONDS
    heartbeat_seconds: float = DEFAULT_HEARTBEAT_SECONDS
    stale_seconds: float = DEFAULT_STALE_SECONDS
    reconcile_seconds: float = DEFAULT_RECONCILE_SECONDS
    result_expires_seconds: int = DEFAULT_RESULT_EXPIRES_SECONDS
    control_queue: str = "control"
    #: full rebuilds use a handler's set-based SQL fold where it has one (REPLAY_SQL_FOLDS=0: off)
    sql_folds: bool = True
    #: > 0: beat sends a live step to the live queue this often (the Celery-driven live consumer)
    live_beat_seconds: float = 0.0
    #: where `replay archive` writes segments (a filesystem URL); None: <REPLAY_HOME>/archive
    archive_url: str | None = None

    def __post_init__(self) -> None:
        check_url("REPLAY_DATABASE_URL", self.database_url, DATABASE_SCHEMES, host=True)
        check_url("CELERY_BROKER_URL", self.broker_url, BROKER_SCHEMES)
        check_url(RESULT_BACKEND_ENV, self.result_backend, RESULT_BACKEND_SCHEMES)
        check_url("REPLAY_REDIS_URL", self.redis_url, REDIS_SCHEMES)
        if self.stale_seconds < 3 * self.heartbeat_seconds:
            raise ConfigurationError(
                f"REPLAY_STALE_SECONDS ({self.stale_seconds:g}) must be at least three heartbeats"
                f" (REPLAY_HEARTBEAT_SECONDS={self.heartbeat_seconds:g}), or live slices would"
                " be taken for dead"
            )
        floor = max(MIN_RESULT_EXPIRES_SECONDS, self.visibility_timeout_seconds)
        if self.result_expires_seconds < floor:
            raise ConfigurationError(
                f"REPLAY_RESULT_EXPIRES_SECONDS ({self.result_expires_seconds}) must be at least"
                f" {floor} (a day, and the visibility timeout): results that expire while a job"
                " runs silently lose its chord callback"
            )

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        modules = tuple(
            m.strip() for m in env.get("REPLAY_HANDLER_MODULES", "").split(",") if m.strip()
        )
        return cls(
            database_url=env.get("REPLAY_DATABASE_URL") or DEFAULT_DATABASE_URL,
            broker_url=env.get("CELERY_BROKER_URL") or DEFAULT_BROKER_URL,
            result_backend=env.get("CELERY_RESULT_BACKEND") or DEFAULT_RESULT_BACKEND,
            redis_url=env.get("REPLAY_REDIS_URL") or DEFAULT_REDIS_URL,
            handler_modules=modules,
            queue=env.get("REPLAY_QUEUE") or "replay",
            live_queue=env.get("REPLAY_LIVE_QUEUE") or "live",
            batch_size=_int(env, "REPLAY_BATCH_SIZE", DEFAULT_BATCH_SIZE),
            visibility_timeout_seconds=_int(
                env, "REPLAY_VISIBILITY_TIMEOUT_SECONDS", DEFAULT_VISIBILITY_TIMEOUT_SECONDS
            ),
            cache_ttl_seconds=_int(env, "REPLAY_CACHE_TTL_SECONDS", DEFAULT_CACHE_TTL_SECONDS),
            heartbeat_seconds=_float(env, "REPLAY_HEARTBEAT_SECONDS", DEFAULT_HEARTBEAT_SECONDS),
            stale_seconds=_float(env, "REPLAY_STALE_SECONDS", DEFAULT_STALE_SECONDS),
            reconcile_seconds=_float(env, "REPLAY_RECONCILE_SECONDS", DEFAULT_RECONCILE_SECONDS),
            result_expires_seconds=_int(
                env, "REPLAY_RESULT_EXPIRES_SECONDS", DEFAULT_RESULT_EXPIRES_SECONDS
            ),
            control_queue=env.get("REPLAY_CONTROL_QUEUE") or "control",
            sql_folds=env.get("REPLAY_SQL_FOLDS", "1").strip().lower() not in ("0", "false", "no"),
            live_beat_seconds=0.0
            if (env.get("REPLAY_LIVE_BEAT_SECONDS") or "0").strip() in ("0", "0.0")
            else _float(env, "REPLAY_LIVE_BEAT_SECONDS", 0.0),
            archive_url=env.get("REPLAY_ARCHIVE_URL") or None,
        )

    def with_database(self, name: str) -> Settings:
        """The same settings pointed at another database on the same server."""
        return replace(self, database_url=replace_database(self.database_url, name))

    @property
    def database_name(self) -> str:
        return urlsplit(self.database_url).path.lstrip("/") or "postgres"

    def as_env(self) -> dict[str, str]:
        """The environment variables that reproduce these settings in a child process."""
        return {
            "REPLAY_DATABASE_URL": self.database_url,
            "CELERY_BROKER_URL": self.broker_url,
            "CELERY_RESULT_BACKEND": self.result_backend,
            "REPLAY_REDIS_URL": self.redis_url,
            "REPLAY_HANDLER_MODULES": ",".join(self.handler_modules),
            "REPLAY_QUEUE": self.queue,
            "REPLAY_LIVE_QUEUE": self.live_queue,
            "REPLAY_BATCH_SIZE": str(self.batch_size),
            "REPLAY_VISIBILITY_TIMEOUT_SECONDS": str(self.visibility_timeout_seconds),
            "REPLAY_CACHE_TTL_SECONDS": str(self.cache_ttl_seconds),
            "REPLAY_HEARTBEAT_SECONDS": str(self.heartbeat_seconds),
            "REPLAY_STALE_SECONDS": str(self.stale_seconds),
            "REPLAY_RECONCILE_SECONDS": str(self.reconcile_seconds),
            "REPLAY_RESULT_EXPIRES_SECONDS": str(self.result_expires_seconds),
            "REPLAY_CONTROL_QUEUE": self.control_queue,
            "REPLAY_SQL_FOLDS": "1" if self.sql_folds else "0",
            "REPLAY_LIVE_BEAT_SECONDS": str(self.live_beat_seconds),
            **({"REPLAY_ARCHIVE_URL": self.archive_url} if self.archive_url else {}),
        }


def replace_database(url: str, name: str) -> str:
    """``url`` with its database name replaced by ``name``."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))


def check_url(name: str, url: str, schemes: tuple[str, ...], *, host: bool = False) -> None:
    """Raise ``ConfigurationError`` unless ``url`` is a URL of one of ``schemes`` (with a host,
    when ``host``) that its driver can parse. The message names the variable and at most the
    URL's scheme: never the value, which may hold a password in any shape."""
    expected = ", ".join(f"{scheme}://" for scheme in schemes[:-1]) + f" or {schemes[-1]}://"
    if any(c.isspace() or not c.isprintable() for c in url):
        raise ConfigurationError(f"{name} must be a URL without spaces or control characters")
    try:
        parts = urlsplit(url)
    except ValueError:  # an unbalanced '[' of an IPv6 host
        raise ConfigurationError(f"{name} must be a {expected} URL that parses") from None
    scheme = parts.scheme.lower()
    if "://" not in url or scheme not in schemes:
        got = f"one starting with {scheme + '://'!r}" if "://" in url and scheme else "no scheme"
        raise ConfigurationError(f"{name} must be a {expected} URL, got {got}")
    if _BAD_PERCENT.search(url):
        # libpq's message for it quotes the raw token, password and all (issue 11 review).
        raise ConfigurationError(
            f"{name} has a '%' that is not a percent-escape (%XX, not %00); write a '%' in a"
            " password as %25"
        )
    try:
        if "," not in parts.netloc:  # libpq's multi-host form (h1:5432,h2:5433) has no one port
            parts.port  # noqa: B018 - parsed for its ValueError
    except ValueError:
        raise ConfigurationError(
            f"{name} has a port that is not a number (0-65535); a password that holds ':',"
            " '@' or '/' must be percent-encoded"
        ) from None
    if host and not (parts.hostname or parse_qs(parts.query).get("host")):
        raise ConfigurationError(
            f"{name} must name a host: {schemes[0]}://user:password@host:5432/database"
        )
    if scheme == "rediss" and "ssl_cert_reqs=" not in parts.query and name == RESULT_BACKEND_ENV:
        # Celery's result backend refuses a rediss:// URL without it, in a traceback.
        raise ConfigurationError(
            f"{name} is a rediss:// URL without ssl_cert_reqs (add ?ssl_cert_reqs=required)"
        )


MASK = "***"
# '%' not followed by two hex digits, or an escaped NUL: libpq refuses both, quoting the token.
_BAD_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})|%00")
# psycopg's conninfo form, and a password in a URL's query string: `password=...` up to a space
# or '&', or a quoted value.
_KEYWORD_PASSWORD = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|[^\s&]+)", re.IGNORECASE)
_WORD = re.compile(r"\S+")
# A URL-like word without '@' whose "port" is not a number: `scheme://user:password` (no host).
_BARE_USERINFO = re.compile(r"\b[A-Za-z][\w+.-]*://[^/?#\[:]*:(?P<secret>[^/?#]*)")


def redact(text: str) -> str:
    """``text`` with every password masked, for messages and logs: the password of any URL
    (``scheme://user:password@host``), of malformed ones (``postgresql//user:pw@host``,
    ``user:pw@host``, ``scheme://user:pw`` without a host) and of psycopg's conninfo
    (``password=pw``). Errs towards masking too much: it cannot tell a password from a
    ``a:b@c`` in prose, and masks both."""
    text = _KEYWORD_PASSWORD.sub(lambda m: m.group(1) + MASK, text)
    return _WORD.sub(lambda m: _redact_word(m.group()), text)


def redact_secrets_of(url: str, text: str) -> str:
    """``redact(text)``, and every password of ``url`` masked wherever it appears in ``text``,
    raw or percent-decoded: a driver's message may quote it without anything around it that
    ``redact`` could recognise (libpq: ``invalid percent-encoded token: "p%ZZsecret"``)."""
    secrets: set[str] = set()
    userinfo = url.partition("://")[2].rpartition("@")[0]
    if ":" in userinfo:
        secrets.add(userinfo.partition(":")[2])
    secrets.update(m.group(2).strip("'") for m in _KEYWORD_PASSWORD.finditer(url))
    secrets |= {unquote(secret) for secret in secrets}
    text = redact(text)
    for secret in sorted(secrets, key=len, reverse=True):
        if len(secret) >= 2:
            text = text.replace(secret, MASK)
    return text


def _redact_word(word: str) -> str:
    # The userinfo ends at the LAST '@' (a password may hold an unescaped '@'), and its password
    # starts at the first ':' that is not a scheme's "://" (a password may hold ':' and '//').
    at = word.rfind("@")
    if at < 0:
        bare = _BARE_USERINFO.search(word)
        if bare and not re.fullmatch(r"\d*(,.*)?", bare["secret"]):
            return word[: bare.start("secret")] + MASK + word[bare.end() :]
        return word
    start = 0
    while (colon := word.find(":", start, at)) >= 0:
        if word.startswith("//", colon + 1):
            start = colon + 3
            continue
        return word[: colon + 1] + MASK + word[at:]
    return word
