"""The database's own health, checked by ``assistant doctor``: can it be opened, does SQLite's
page-level check pass, and do rows point at rows that do not exist (deleted with foreign keys
off, by another tool)? Those deletions are finished as the schema declares them."""

from __future__ import annotations

from sqlalchemy import exc as sa_exc
from sqlalchemy import text

from assistant.errors import AssistantError, DatabaseLocked
from assistant.storage.db import Database
from assistant.storage.health import OK, PROBLEM, REPAIRED, RESTORE_BACKUP_HINT, CheckResult, reason, result


def is_sqlite(db: Database) -> bool:
    return db.engine.dialect.name == "sqlite"


def check_connection(db: Database) -> CheckResult:
    """Whether the database answers at all (blocking: nothing else can be checked without)."""
    try:
        with db.read() as s:
            s.execute(text("SELECT 1"))
    except (AssistantError, sa_exc.DBAPIError) as err:
        return result(PROBLEM, f"cannot open {db.where}: {reason(err)}. "
                      + (f"If the file is damaged, {RESTORE_BACKUP_HINT}." if is_sqlite(db) else
                         "Check that the server is running and the URL's user and password."),
                      blocking=True)
    return result(OK, f"{db.engine.dialect.name} database at {db.where}")


def check_integrity(db: Database, repair: bool) -> CheckResult:
    """SQLite's own page-level check, plus dangling foreign keys (finished with ``repair``).
    A damaged file blocks the checks after it."""
    if not is_sqlite(db):
        return result(OK, "not checked here (not SQLite: use the server's own tools)")
    try:
        with db.read() as s:
            errors = [row[0] for row in s.execute(text("PRAGMA integrity_check")).all()]
            dangling = s.execute(text("PRAGMA foreign_key_check")).all()
    except DatabaseLocked as err:
        return result(PROBLEM, f"could not check: {err}", blocking=True)
    except (AssistantError, sa_exc.DBAPIError) as err:
        return result(PROBLEM, f"the database file is damaged ({reason(err)}): "
                      f"{RESTORE_BACKUP_HINT}. Nothing else was checked.", blocking=True)
    if errors != ["ok"]:
        return result(PROBLEM, "SQLite's integrity check failed: the file is damaged. "
                      f"Copy it somewhere safe, then {RESTORE_BACKUP_HINT}. Nothing else was checked.",
                      errors, blocking=True)
    if not dangling:
        return result(OK, "SQLite integrity check passed, no dangling references")
    items = [f"{table} row {rowid} points at a missing {parent} row"
             for table, rowid, parent, _ in dangling]
    if not repair:
        return result(PROBLEM, f"{len(dangling)} row(s) point at rows that do not "
                      "exist (deleted with foreign keys off, by another tool?). `assistant doctor "
                      "--repair` finishes those deletions as the schema declares them", items)
    try:
        finish_deletions(db)
    except (AssistantError, sa_exc.DBAPIError) as err:
        return result(PROBLEM, f"{len(dangling)} row(s) point at rows that do not "
                      f"exist, and finishing their deletion failed: {reason(err)}", items)
    return result(REPAIRED, f"{len(dangling)} row(s) pointed at rows that do not "
                  "exist; finished their deletion as the schema declares (ON DELETE CASCADE / "
                  "SET NULL)", items)


def finish_deletions(db: Database) -> None:
    """Do what each dangling row's foreign key says happens when its parent is deleted
    (rows of a deleted document, ratings of a deleted message, ...). Deleting can leave
    new dangling rows where foreign keys were off; repeat until none are left."""
    for _ in range(10):
        with db.write() as s:
            dangling = s.execute(text("PRAGMA foreign_key_check")).all()
            if not dangling:
                return
            for table, rowid, _parent, fkid in dangling:
                keys = {row[0]: row for row in s.execute(text(f'PRAGMA foreign_key_list("{table}")'))}
                _, _, _, column, _, _, on_delete, _ = keys[fkid]
                if on_delete == "CASCADE":
                    s.execute(text(f'DELETE FROM "{table}" WHERE rowid = :r'), {"r": rowid})
                elif on_delete == "SET NULL":
                    s.execute(text(f'UPDATE "{table}" SET "{column}" = NULL WHERE rowid = :r'),
                              {"r": rowid})
                else:
                    raise AssistantError(f"{table}.{column} has no ON DELETE action to apply")
