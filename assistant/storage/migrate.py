"""Alembic, driven from code: the schema is created and changed only by these migrations."""

from __future__ import annotations

import logging
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from assistant.storage.db import Database

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def alembic_config(db: Database) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", db.url.replace("%", "%%"))
    return cfg


def head_revision(db: Database | None = None) -> str:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    head = ScriptDirectory.from_config(cfg).get_current_head()
    assert head is not None
    return head


def current_revision(db: Database) -> str | None:
    with db.read() as session:
        return MigrationContext.configure(session.connection()).get_current_revision()


def upgrade(db: Database, revision: str = "head") -> str | None:
    """Bring the schema to ``revision``; returns the revision now current."""
    cfg = alembic_config(db)
    with db.write() as session:
        cfg.attributes["connection"] = session.connection()
        command.upgrade(cfg, revision)
    return current_revision(db)


def downgrade(db: Database, revision: str) -> str | None:
    cfg = alembic_config(db)
    with db.write() as session:
        cfg.attributes["connection"] = session.connection()
        command.downgrade(cfg, revision)
    return current_revision(db)


def ensure_current(db: Database) -> None:
    """Upgrade to head if needed (start-up of the app and the CLI)."""
    if current_revision(db) != head_revision():
        log.info("Upgrading database schema at %s", db.where)
        upgrade(db)
