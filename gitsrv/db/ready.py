"""Bring the database schema up to date before a command uses it."""

from __future__ import annotations

import logging

from gitsrv.config import Settings
from gitsrv.db import migrate
from gitsrv.db.engine import Database

log = logging.getLogger(__name__)


class SchemaBehindError(RuntimeError):
    pass


def open_database(settings: Settings) -> Database:
    """Open the database, migrating embedded SQLite automatically.

    A server database (PostgreSQL) is never migrated implicitly: when it is
    behind, SchemaBehindError names the command to run.
    """
    database = Database(settings)
    current, head = migrate.pending_revisions(database.engine)
    if current == head:
        return database
    if settings.uses_sqlite:
        log.info("migrating database from revision %s to %s", current, head)
        migrate.upgrade(database.engine)
        return database
    database.dispose()
    raise SchemaBehindError(
        f"database schema is at revision {current or 'none'}, this gitsrv needs {head}: "
        "run `gitsrv db upgrade` with the same GITSRV_DATABASE_URL first"
    )
