"""Copy every row of one database into another: a team's SQLite file into PostgreSQL.

    assistant db copy --to postgresql+psycopg://user:password@host/assistant [--force]

Ids are kept (the search index and the trained versions refer to them, so the index folder
stays valid as it is), vectors are copied as stored, and PostgreSQL's id sequences are set
past the copied ids. The source is read in one read transaction (a snapshot of one moment:
the app may keep running), and the whole copy, schema included, is one transaction on the
target: an interrupted copy (Ctrl-C, a kill, a lost connection, a count that does not match)
leaves the target exactly as it was, and running the command again starts over. A target
that already holds rows is refused unless ``force`` (then its rows are replaced, in that same
transaction).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import Table, func, insert, inspect, select, text
from sqlalchemy.exc import IntegrityError

from assistant.errors import DatabaseError
from assistant.storage.db import Database
from assistant.storage.migrate import ensure_current, head_revision
from assistant.storage.schema import Base

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection
    from sqlalchemy.orm import Session

log = logging.getLogger(__name__)

BATCH = 2_000


class CopyRefused(DatabaseError):
    """The copy cannot go ahead; the target was not changed."""


@dataclass(frozen=True)
class CopyReport:
    source: str
    target: str
    #: Rows copied per table (each checked against the source after the copy).
    counts: dict[str, int]
    seconds: float
    replaced: bool


def tables() -> list[Table]:
    """The app's tables, parents before children."""
    return list(Base.metadata.sorted_tables)


def copy_database(source: Database, target: Database, *, force: bool = False,
                  progress: Callable[[str, int], None] | None = None) -> CopyReport:
    """Copy every row of ``source`` into ``target`` (schema created or migrated there first).
    ``progress(table, rows so far)`` is called after each batch."""
    started = time.perf_counter()
    if _same(source, target):
        raise CopyRefused(f"The source and the target are the same database ({target.where}).")
    ensure_current(source)  # what the app does when it starts; the rows then fit the models
    try:
        counts, replaced = _copy(source, target, force, progress)
    except IntegrityError as err:
        raise DatabaseError(
            f"{target.where} refused a row of {source.where}: {str(err.orig).splitlines()[0]}. "
            "Nothing was committed. `assistant doctor --repair` on the source finishes "
            "deletions that left rows pointing at missing ones; then copy again.") from err
    report = CopyReport(source.where, target.where, counts, time.perf_counter() - started, replaced)
    log.info("Copied %d rows from %s to %s in %.1f s", sum(counts.values()), source.where,
             target.where, report.seconds)
    return report


def _copy(source: Database, target: Database, force: bool,
          progress: Callable[[str, int], None] | None) -> tuple[dict[str, int], bool]:
    from alembic import command

    from assistant.storage.migrate import alembic_config

    replaced = False
    with source.read() as src, target.write() as dst:
        conn = dst.connection()
        _check_revision(conn, target)
        # The schema is made inside the copy's transaction (PostgreSQL's DDL is transactional;
        # SQLite's too): an interrupted copy leaves not even empty tables behind.
        cfg = alembic_config(target)
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")
        present = [t for t in tables() if dst.scalar(select(func.count()).select_from(t))]
        if present:
            if not force:
                raise CopyRefused(
                    f"The target {target.where} already holds data ({', '.join(t.name for t in present)}). "
                    "Nothing was changed. Copy into an empty database, or pass --force to replace "
                    "what is there (in the same transaction: all or nothing).")
            _empty(dst, target)
            replaced = True
        counts: dict[str, int] = {}
        for table in tables():
            counts[table.name] = _copy_table(src, dst, table, progress)
        _reset_sequences(dst, target)
        dst.flush()
        for table in tables():
            have = dst.scalar(select(func.count()).select_from(table))
            if have != counts[table.name]:
                raise DatabaseError(
                    f"{table.name}: {counts[table.name]} rows read from {source.where}, {have} "
                    f"in {target.where} after the copy. Nothing was committed.")
    return counts, replaced


def _same(a: Database, b: Database) -> bool:
    from sqlalchemy.engine import make_url

    ua, ub = make_url(a.url), make_url(b.url)
    return ua._replace(password=None) == ub._replace(password=None)


def _check_revision(conn: Connection, target: Database) -> None:
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory
    from alembic.util import CommandError

    from assistant.storage.migrate import alembic_config

    current = MigrationContext.configure(conn).get_current_revision()
    if current is None:
        return
    try:
        ScriptDirectory.from_config(alembic_config(target)).get_revision(current)
    except CommandError:
        raise CopyRefused(f"The target {target.where} is at schema revision {current}, which this "
                          f"version of the assistant does not know (its newest is {head_revision()}). "
                          "Nothing was changed.") from None


def _copy_table(src: Session, dst: Session, table: Table, progress: Callable[[str, int], None] | None) -> int:
    pk = list(table.primary_key.columns)
    rows = src.execute(select(table).order_by(*pk).execution_options(yield_per=BATCH))
    n = 0
    for batch in rows.partitions():
        # Through the columns' types: NUL characters (which PostgreSQL refuses) are dropped
        # the same way as on any write (schema.without_nul), datetimes stay in UTC.
        dst.execute(insert(table), [dict(r._mapping) for r in batch])
        n += len(batch)
        if progress:
            progress(table.name, n)
    return n


def _empty(dst: Session, target: Database) -> None:
    if target.engine.dialect.name == "postgresql":
        names = ", ".join(f'"{t.name}"' for t in tables())
        dst.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
        return
    for table in reversed(tables()):
        dst.execute(table.delete())


def _reset_sequences(dst: Session, target: Database) -> None:
    """PostgreSQL hands out ids from a sequence that knows nothing of copied ids: set each
    past the largest, or the first new row would collide with a copied one."""
    if target.engine.dialect.name != "postgresql":
        return
    for table in tables():
        for column in table.primary_key.columns:
            seq = dst.scalar(text("SELECT pg_get_serial_sequence(:t, :c)"),
                             {"t": table.name, "c": column.name})
            if seq:
                dst.execute(text(f'SELECT setval(:s, COALESCE((SELECT MAX("{column.name}") FROM '
                                 f'"{table.name}"), 0) + 1, false)'), {"s": seq})


def row_counts(db: Database) -> dict[str, int]:
    """Rows per table of the app (tables that do not exist yet: absent)."""
    with db.read() as s:
        existing = set(inspect(s.connection()).get_table_names())
        return {t.name: s.scalar(select(func.count()).select_from(t)) or 0
                for t in tables() if t.name in existing}
