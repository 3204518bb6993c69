"""``replay demo`` and ``replay bench`` drop only databases they created (issue 11, item 6)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from scheduler import scratch
from shared import db
from shared.errors import InvalidRequest
from shared.settings import Settings
from tests.support import ROOT, count

pytestmark = pytest.mark.integration


@pytest.fixture
def admin(settings: Settings) -> Iterator[db.Connection]:
    with db.connect(settings.with_database("postgres")) as conn:
        yield conn


@pytest.fixture
def foreign(settings: Settings, admin: db.Connection) -> Iterator[str]:
    """A database someone else made, whose name happens to end in ``_demo``."""
    name = f"{settings.database_name}_theirs_demo"
    db.drop_database(settings, name)
    admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield name
    finally:
        db.drop_database(settings, name)


def exists(admin: db.Connection, name: str) -> bool:
    return count(admin, "SELECT count(*) FROM pg_database WHERE datname = %s", (name,)) == 1


@pytest.mark.parametrize(
    "name",
    ["{db}", "{db}_prod", "postgres", "{db}_demo_backup"],
    ids=["configured", "no-suffix", "postgres", "suffix-not-last"],
)
def test_a_name_without_the_suffix_is_refused(
    settings: Settings, admin: db.Connection, name: str
) -> None:
    target = name.format(db=settings.database_name)
    with pytest.raises(InvalidRequest, match="--force"):
        scratch.check_droppable(settings, target, "_demo")


def test_an_existing_database_we_did_not_create_is_refused_and_kept(
    settings: Settings, admin: db.Connection, foreign: str
) -> None:
    with pytest.raises(InvalidRequest, match="did not create"):
        scratch.recreate(settings, foreign, "_demo")
    assert exists(admin, foreign)


def test_a_database_we_created_is_recreated_and_force_takes_any(
    settings: Settings, admin: db.Connection, foreign: str
) -> None:
    name = f"{settings.database_name}_ours_demo"
    try:
        target = scratch.recreate(settings, name, "_demo")
        with db.connect(target) as conn:
            conn.execute("INSERT INTO poison_rule (event_id) VALUES (gen_random_uuid())")
        target = scratch.recreate(settings, name, "_demo")  # ours: dropped and made afresh
        with db.connect(target) as conn:
            assert count(conn, "SELECT count(*) FROM poison_rule") == 0
        scratch.recreate(settings, foreign, "_demo", force=True)
        scratch.check_droppable(settings, foreign, "_demo")  # now marked as ours
    finally:
        db.drop_database(settings, name)


def test_the_demo_command_refuses_with_one_line_and_exit_2(
    settings: Settings, admin: db.Connection, foreign: str
) -> None:
    for database in (foreign, settings.database_name):
        proc = subprocess.run(
            [sys.executable, "-m", "scheduler.cli", "demo", "--aggregates", "10",
             "--events-per-aggregate", "2", "--database", database],
            env={**os.environ, **settings.as_env(), "PYTHONPATH": str(ROOT)},
            capture_output=True, text=True, timeout=60, cwd=ROOT,
        )  # fmt: skip
        assert proc.returncode == 2, proc.stdout + proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and "refusing to drop database" in lines[0], proc.stderr
        assert exists(admin, database)
