"""Numbered SQL migrations, applied once each, in order, by ``replay migrate``."""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources

from shared import db, queries
from shared.handlers import load_registry
from shared.settings import Settings

MIGRATIONS_PACKAGE = "shared.migrations"
_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
# Any constant works; it only has to be the same for every migrate process.
_MIGRATION_LOCK_KEY = 0x7265706C6179  # "replay"
QUERIES = queries.load("schema")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def migrations() -> list[Migration]:
    """The migration files shipped with the package, in order."""
    found = []
    for entry in resources.files(MIGRATIONS_PACKAGE).iterdir():
        match = _NAME.match(entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise RuntimeError(f"two migrations share a number: {versions}")
    return found


def migrate(settings: Settings) -> list[str]:
    """Create the database if missing and apply every migration not yet applied.

    Safe to run concurrently and repeatedly: an advisory lock serializes migrate processes, and
    each migration commits together with its row in ``schema_migration``. Returns the names of
    the migrations applied by this call (empty when the schema was already current).
    """
    db.create_database_if_missing(settings)
    applied: list[str] = []
    with db.connect(settings) as conn, conn.transaction():
        conn.execute(QUERIES["lock_migrations"], {"key": _MIGRATION_LOCK_KEY})
        conn.execute(QUERIES["create_migration_table"])
        done = {r["version"] for r in conn.execute(QUERIES["applied_migrations"])}
        for migration in migrations():
            if migration.version in done:
                continue
            conn.execute(migration.sql.encode())
            conn.execute(
                QUERIES["record_migration"], {"version": migration.version, "name": migration.name}
            )
            applied.append(f"{migration.version:04d}_{migration.name}")
    return applied


def migrate_all(settings: Settings) -> tuple[list[str], list[str]]:
    """``migrate``, then every registered handler's ``setup`` (its own tables). Returns the
    migrations applied and the handler names."""
    applied = migrate(settings)
    registry = load_registry(settings.handler_modules)
    with db.connect(settings) as conn, conn.transaction():
        # The same lock as the migrations: two `CREATE TABLE IF NOT EXISTS` at once can both
        # miss the table and one then fails on pg_type's unique index.
        conn.execute(QUERIES["lock_migrations"], {"key": _MIGRATION_LOCK_KEY})
        for handler in registry:
            handler.setup(conn)
    return applied, registry.names()
