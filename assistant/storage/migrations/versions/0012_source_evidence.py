"""The evidence of each source an answer cites: the sentences of the source that back it, as
``[[start, end], ...]`` character offsets into the stored source text (NULL: none found, or
an answer stored before).

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

from assistant.storage.migration_ops import drop_columns

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("message_sources", sa.Column("evidence", sa.JSON(), nullable=True))


def downgrade() -> None:
    drop_columns("message_sources", "evidence")
