"""Scratch databases: the ones ``replay demo`` and the benchmarks drop and create again.

Dropping is only safe for a database this project created for that purpose. Two checks, both
before anything is dropped (issue 11: ``replay demo --database X`` used to run ``DROP DATABASE X
WITH (FORCE)`` on whatever X named):

* the name ends in the command's suffix (``_demo``, ``_bench``, ...) and is not the database the
  configuration points at;
* if the database exists, it carries the comment written when this module created it.

``--force`` lifts both, for an operator who knows what the name points at.
"""

from __future__ import annotations

from shared import db, schema
from shared.errors import InvalidRequest
from shared.settings import Settings
from shared.store import shorten

#: written on every scratch database at creation; the proof that dropping it loses nothing
MARK = "event-replay scratch database"


def recreate(settings: Settings, name: str, suffix: str, *, force: bool = False) -> Settings:
    """Drop the scratch database ``name`` if it exists (only if it is one, see above), create
    and migrate it afresh, and mark it. Returns settings pointed at it."""
    check_droppable(settings, name, suffix, force=force)
    db.drop_database(settings, name)
    target = settings.with_database(name)
    # Marked as soon as it exists: a run interrupted while migrating or seeding leaves a
    # database that the next run may still drop.
    db.create_database_if_missing(target)
    db.comment_on_database(settings, name, MARK)
    schema.migrate_all(target)
    return target


def check_droppable(settings: Settings, name: str, suffix: str, *, force: bool = False) -> None:
    """Raise ``InvalidRequest`` unless ``name`` is a scratch database this project created (or
    does not exist yet), or ``force`` is set."""
    if force:
        return
    if not name.endswith(suffix) or name == settings.database_name:
        raise InvalidRequest(
            f"refusing to drop database {shorten(name)}: a scratch database's name ends in"
            f" {suffix!r} and is not REPLAY_DATABASE_URL's; pass --force to drop it anyway"
        )
    comment = db.database_comment(settings, name)
    if comment is not None and comment != MARK:
        raise InvalidRequest(
            f"refusing to drop database {shorten(name)}: it exists and replay did not create it as"
            " a scratch database (or created it before scratch databases were marked); drop it"
            " yourself, or pass --force"
        )
