"""Alembic, driven from code: the schema is created and changed only by these migrations;
:func:`check_schema` tells ``assistant doctor`` whether the database is at the newest one."""

from __future__ import annotations

import logging
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import exc as sa_exc

from assistant.errors import AssistantError
from assistant.storage.db import Database
from assistant.storage.health import OK, PROBLEM, REPAIRED, CheckResult, reason, result

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


def check_schema(db: Database, repair: bool) -> CheckResult:
    """Is the schema at the newest revision (``assistant doctor``)? With ``repair``, migrate
    it. Anything but the newest revision blocks the checks after it (they read the tables)."""
    try:
        current, head = current_revision(db), head_revision()
    except (AssistantError, sa_exc.DBAPIError) as err:
        return result(PROBLEM, f"could not read the schema revision: {reason(err)}", blocking=True)
    if current == head:
        return result(OK, f"at the newest revision ({head})")
    if current is not None:
        try:
            ScriptDirectory.from_config(alembic_config(db)).get_revision(current)
        except CommandError:
            return result(PROBLEM, f"the database is at revision {current}, which this "
                          f"version of the assistant does not know (its newest is {head}): it was "
                          "written by a newer version. Run that version, or restore an older backup.",
                          blocking=True)
    was = current or "empty"
    if not repair:
        return result(PROBLEM, f"at revision {was}, not the newest ({head}): "
                      "`assistant doctor --repair` (or `assistant db upgrade`) migrates it", blocking=True)
    try:
        upgrade(db)
    except (AssistantError, sa_exc.DBAPIError) as err:
        return result(PROBLEM, f"migrating from {was} to {head} failed: {reason(err)}", blocking=True)
    return result(REPAIRED, f"migrated from revision {was} to {head}")
