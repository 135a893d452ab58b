"""Run the Alembic migrations, once, even when several workers start together."""

from __future__ import annotations

import time
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, create_engine, pool, text

MIGRATIONS = Path(__file__).parent / "migrations"
# Any constant works; it only has to be the same for every agentrun process.
_MIGRATION_LOCK_ID = 0x61676E74
_LOCK_POLL_S = 0.2


def alembic_config(sqlalchemy_url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", sqlalchemy_url.replace("%", "%%"))
    return cfg


def upgrade(sqlalchemy_url: str, revision: str = "head") -> str | None:
    """Upgrade the schema to `revision`; returns the revision the database is at afterwards."""
    cfg = alembic_config(sqlalchemy_url)
    engine = create_engine(sqlalchemy_url, poolclass=pool.NullPool)
    try:
        with engine.connect() as conn:
            # Two workers starting at once must not both create the tables.
            _lock(conn)
            try:
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, revision)
                conn.commit()
                return MigrationContext.configure(conn).get_current_revision()
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:id)"), {"id": _MIGRATION_LOCK_ID})
                conn.commit()
    finally:
        engine.dispose()


def _lock(conn: Connection) -> None:
    """Take the migration lock, waiting outside any transaction: a blocking pg_advisory_lock
    holds a snapshot while it waits, and CREATE INDEX CONCURRENTLY (0012) in the process that
    holds the lock waits for every older snapshot to end: the two would deadlock."""
    while not conn.execute(
        text("SELECT pg_try_advisory_lock(:id)"), {"id": _MIGRATION_LOCK_ID}
    ).scalar():
        conn.commit()
        time.sleep(_LOCK_POLL_S)
    # Alembic then runs the migrations in a transaction of its own (an autocommit block needs
    # that one, not the caller's).
    conn.commit()


def current_revision(sqlalchemy_url: str) -> str | None:
    engine = create_engine(sqlalchemy_url, poolclass=pool.NullPool)
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config("postgresql://")).get_current_head()
