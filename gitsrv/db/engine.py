"""Database engine and sessions for the configured SQLAlchemy URL."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

from gitsrv.config import Settings


def _configure_sqlite(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    # WAL lets readers continue while one worker writes; the busy timeout makes
    # concurrent writers from several worker processes wait instead of failing.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def make_engine(settings: Settings) -> Engine:
    """Create an engine; for SQLite, create the data folder first."""
    if settings.uses_sqlite:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            settings.database_url, connect_args={"timeout": 30, "check_same_thread": False}
        )
        event.listen(engine, "connect", _configure_sqlite)
        return engine
    return create_engine(settings.database_url, pool_pre_ping=True)


class Database:
    """An engine and its session factory, created once per process."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.engine = make_engine(settings)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)

    def session(self) -> Session:
        return self.sessions()

    def dispose(self) -> None:
        self.engine.dispose()


MIGRATIONS_DIR = Path(__file__).with_name("migrations")
