"""The synthetic data generator and the settings, without services."""

from __future__ import annotations

import pytest

from examples.orders import seed
from shared import store
from shared.errors import ConfigurationError, InvalidRequest
from shared.settings import Settings, redact


def test_same_seed_same_events_other_seed_other_events() -> None:
    a = list(seed.generate(20, 10, seed=3))
    assert a == list(seed.generate(20, 10, seed=3))
    assert a != list(seed.generate(20, 10, seed=4))
    assert len(a) == 200


def test_orders_start_placed_and_mostly_end_shipped() -> None:
    rows = [line.rstrip("\n").split("\t") for line in seed.generate(200, 8, seed=1)]
    firsts = [r for r in rows if r[6] == "1"]
    lasts = [r for r in rows if r[6] == "8"]
    assert {r[3] for r in firsts} == {"OrderPlaced"}
    shipped = sum(r[3] == "OrderShipped" for r in lasts)
    assert 0.7 < shipped / len(lasts) < 0.95


def test_copy_lines_escape_what_copy_would_misread() -> None:
    line = store.format_copy_line(
        seed.uuid.UUID(int=1), "a\tb", "Order", "T", '{"x": "back\\\\slash\\n"}', "{}", 1,
        seed.DEFAULT_START,
    )  # fmt: skip
    fields = line.rstrip("\n").split("\t")
    assert len(fields) == 8
    assert fields[1] == "a\\tb"
    assert fields[4] == '{"x": "back\\\\\\\\slash\\\\n"}'


@pytest.mark.parametrize(("a", "m"), [(0, 5), (5, 0), (-1, 5), (10**6, 10**6)])
def test_seed_refuses_senseless_sizes(a: int, m: int) -> None:
    with pytest.raises(InvalidRequest):
        seed.validate(a, m)


def test_settings_from_the_environment() -> None:
    s = Settings.from_env(
        {"REPLAY_DATABASE_URL": "postgresql://u:secret@db:5432/x",
         "REPLAY_HANDLER_MODULES": "a.b, c ,", "REPLAY_BATCH_SIZE": "500"}
    )  # fmt: skip
    assert s.database_name == "x"
    assert s.handler_modules == ("a.b", "c")
    assert s.batch_size == 500
    assert s.broker_url == "redis://127.0.0.1:6379/0"
    assert Settings.from_env(s.as_env()) == s
    assert s.with_database("y").database_url == "postgresql://u:secret@db:5432/y"


def test_settings_refuse_a_bad_number() -> None:
    with pytest.raises(ConfigurationError, match="REPLAY_BATCH_SIZE"):
        Settings.from_env({"REPLAY_BATCH_SIZE": "lots"})
    with pytest.raises(ConfigurationError):
        Settings.from_env({"REPLAY_BATCH_SIZE": "0"})


SECRET = "S3cr3tPW"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("postgresql://u:S3cr3tPW@db:5432/x", "postgresql://u:***@db:5432/x"),
        ("redis://:S3cr3tPW@127.0.0.1:6379/0", "redis://:***@127.0.0.1:6379/0"),
        ("amqp://guest:S3cr3tPW@rabbit//", "amqp://guest:***@rabbit//"),
        # psycopg's conninfo parser quotes the whole string in its message
        (
            'missing "=" after "mysql://u:S3cr3tPW@h/db" in connection info string',
            'missing "=" after "mysql://u:***@h/db" in connection info string',
        ),
        ("postgresql//user:S3cr3tPW@host/db", "postgresql//user:***@host/db"),
        ("postgresql:/user:S3cr3tPW@host/db", "postgresql:***@host/db"),
        ("user:S3cr3tPW@host", "user:***@host"),
        ("postgresql://u:S3cr3tPW", "postgresql://u:***"),  # no host: the "port" is the secret
        ("at postgresql://u:S3cr3tPW/db: refused", "at postgresql://u:***/db: refused"),
        # a password holding '@', ':' or '//' unescaped: masked up to the last '@'
        ("postgresql://u:p@ss:S3cr3tPW@h/db", "postgresql://u:***@h/db"),
        ("u:a//b@S3cr3tPW@h", "u:***@h"),
        ("host=h password=S3cr3tPW dbname=x", "host=h password=*** dbname=x"),
        ("host=h password = 'S3cr3t PW' dbname=x", "host=h password = *** dbname=x"),
        ("postgresql://u@h/db?password=S3cr3tPW&sslmode=off", "postgresql://u@h/db?password=***&sslmode=off"),
        # nothing secret: unchanged
        ("postgresql://postgres@127.0.0.1:5432/replay", None),
        ("postgresql://h1:5432,h2:5433/db", None),
        ("postgresql://u@[::1]:5432/db", None),
        ("Error 111 connecting to 127.0.0.1:6399. Connection refused.", None),
        ("mail ops@example.com at 12:30", None),
    ],
)  # fmt: skip
def test_redact_masks_every_shape_of_password(text: str, expected: str | None) -> None:
    redacted = redact(text)
    assert redacted == (text if expected is None else expected)
    assert "S3cr3t" not in redacted


def test_settings_accept_every_supported_url() -> None:
    s = Settings.from_env(
        {"REPLAY_DATABASE_URL": "postgres:///replay?host=/var/run/postgresql",
         "CELERY_BROKER_URL": "amqp://guest:guest@rabbit:5672//",
         "CELERY_RESULT_BACKEND": "rediss://:pw@cache:6380/1?ssl_cert_reqs=required",
         "REPLAY_REDIS_URL": "unix:///run/redis.sock?db=2"}
    )  # fmt: skip
    assert s.broker_url.startswith("amqp://")
    assert Settings.from_env({"CELERY_BROKER_URL": "redis+socket:///run/redis.sock"})
    assert Settings.from_env({}) == Settings()  # the defaults


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("REPLAY_DATABASE_URL", "notaurl", "postgresql:// or postgres:// URL, got no scheme"),
        ("REPLAY_DATABASE_URL", SECRET, "got no scheme"),
        ("REPLAY_DATABASE_URL", "mysql://u:S3cr3tPW@h/db", "got one starting with 'mysql://'"),
        ("REPLAY_DATABASE_URL", "postgresql//user:S3cr3tPW@host/db", "got no scheme"),
        ("REPLAY_DATABASE_URL", "user:S3cr3tPW@host/db", "got no scheme"),
        ("REPLAY_DATABASE_URL", "host=h password=S3cr3tPW", "without spaces"),
        ("REPLAY_DATABASE_URL", "postgresql://u:S3cr3t PW@h/db", "without spaces"),
        ("REPLAY_DATABASE_URL", "postgresql://u:S3cr3tPW@h/d\x00b", "control characters"),
        ("REPLAY_DATABASE_URL", "postgresql://u:S3cr3tPW", "port that is not a number"),
        ("REPLAY_DATABASE_URL", "postgresql://u:S3cr3tPW@h:x/db", "port that is not a number"),
        ("REPLAY_DATABASE_URL", "postgresql://u:S3cr3tPW@[::1/db", "that parses"),
        ("REPLAY_DATABASE_URL", "postgresql:///replay", "must name a host"),
        ("CELERY_BROKER_URL", "foo://u:S3cr3tPW@x", "got one starting with 'foo://'"),
        ("CELERY_BROKER_URL", "unix:///run/redis.sock", "got one starting with 'unix://'"),
        ("CELERY_RESULT_BACKEND", "rpc://", "redis://, rediss:// or redis+socket:// URL"),
        ("CELERY_RESULT_BACKEND", "db+postgresql://u:S3cr3tPW@h/db", "'db+postgresql://'"),
        ("CELERY_RESULT_BACKEND", "rediss://:S3cr3tPW@h/1", "ssl_cert_reqs"),
        ("REPLAY_REDIS_URL", "http://u:S3cr3tPW@h/", "got one starting with 'http://'"),
    ],
)  # fmt: skip
def test_settings_refuse_a_url_they_cannot_use_without_printing_it(
    name: str, value: str, says: str
) -> None:
    with pytest.raises(ConfigurationError) as caught:
        Settings.from_env({name: value})
    message = str(caught.value)
    assert message.startswith(name) and says in message
    assert "S3cr3t" not in message and "\n" not in message


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("postgresql://u:p%ZZsecretpw@h/db", 'invalid percent-encoded token: "p%ZZsecretpw"'),
        ("postgresql://u@h/db?password=xx%ZZsecretpw", 'token: "xx%ZZsecretpw"'),
        ("postgresql://u:sec%2Fretpw@h/db", "password authentication failed: sec/retpw"),
    ],
)
def test_a_drivers_message_never_shows_the_urls_password(url: str, message: str) -> None:
    from shared.settings import redact_secrets_of

    shown = redact_secrets_of(url, message)
    assert "secretpw" not in shown and "retpw" not in shown, shown
