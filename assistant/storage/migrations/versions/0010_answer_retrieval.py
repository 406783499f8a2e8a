"""What retrieval gave each answer: sources, none relevant (a plain chat answer), or off.

Revision ID: 0010
Revises: 0008
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import op

from assistant.storage.migration_ops import drop_columns

revision = "0010"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ADD COLUMN (no batch copy of `messages`): see migration_ops.
    op.add_column("messages", sa.Column("retrieval", sa.String(20), nullable=True))


def downgrade() -> None:
    drop_columns("messages", "retrieval")
