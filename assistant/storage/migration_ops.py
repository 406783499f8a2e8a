"""Operations shared by migration scripts.

SQLite cannot ALTER most things in place; Alembic's batch mode then copies the table and
drops the old one. With foreign keys on, dropping a parent table cascades into its
children (dropping `conversations` would delete every message and rating), so columns are
removed with SQLite's own ``ALTER TABLE ... DROP COLUMN`` (3.35+), which works in place.
"""

from __future__ import annotations

from alembic import op


def drop_columns(table: str, *columns: str) -> None:
    if op.get_bind().dialect.name == "sqlite":
        for column in columns:
            op.execute(f'ALTER TABLE "{table}" DROP COLUMN "{column}"')
    else:
        for column in columns:
            op.drop_column(table, column)
