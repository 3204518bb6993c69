"""The synthetic data generator and the settings, without services."""

from __future__ import annotations

import pytest

from shared import seed, store
from shared.errors import ConfigurationError, InvalidSeed
from shared.settings import Settings


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
    with pytest.raises(InvalidSeed):
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
