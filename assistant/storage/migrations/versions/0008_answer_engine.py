"""Which engine wrote each answer (llama.cpp, transformers, an OpenAI-compatible server).

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import op

from assistant.storage.migration_ops import drop_columns

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ADD COLUMN (no batch copy of `messages`): see migration_ops.
    op.add_column("messages", sa.Column("engine", sa.String(200), nullable=True))


def downgrade() -> None:
    drop_columns("messages", "engine")
