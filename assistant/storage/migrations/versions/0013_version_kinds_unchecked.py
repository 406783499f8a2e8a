"""A version's kind is no longer limited by a CHECK constraint: which kinds of training
exist is the training code's table (a new trainer must not need a migration), and the
registry checks the name's shape when it registers a version.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-07
"""

from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

CHECK = "ck_version_kind"
KINDS_BEFORE = "kind IN ('sft', 'dpo', 'kto', 'rl', 'reward')"


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        _copy_table(lambda batch: batch.drop_constraint(CHECK, type_="check"))
    else:
        op.drop_constraint(CHECK, "model_versions", type_="check")


def _copy_table(change: Callable[[Any], None]) -> None:
    """SQLite changes a constraint by copying the table (no table references
    model_versions, so the copy cascades into nothing). AUTOINCREMENT and its counter are
    kept, so that a deleted version's number is never given again."""
    bind = op.get_bind()
    seq = bind.execute(sa.text("SELECT seq FROM sqlite_sequence WHERE name = 'model_versions'")).scalar()
    with op.batch_alter_table("model_versions", recreate="always",
                              table_kwargs={"sqlite_autoincrement": True}) as batch:
        change(batch)
    if seq is not None:
        bind.execute(sa.text("DELETE FROM sqlite_sequence WHERE name = 'model_versions'"))
        bind.execute(sa.text("INSERT INTO sqlite_sequence (name, seq) VALUES ('model_versions', :seq)"),
                     {"seq": seq})


def downgrade() -> None:
    # Refused where a version of a newer kind exists: the constraint would not hold.
    newer = op.get_bind().execute(sa.text(f"SELECT count(*) FROM model_versions WHERE NOT ({KINDS_BEFORE})"))
    if newer.scalar():
        raise RuntimeError("versions of kinds revision 0012 does not know exist; cannot downgrade")
    if op.get_bind().dialect.name == "sqlite":
        _copy_table(lambda batch: batch.create_check_constraint(CHECK, KINDS_BEFORE))
    else:
        op.create_check_constraint(CHECK, "model_versions", KINDS_BEFORE)
