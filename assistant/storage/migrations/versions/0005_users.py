"""Optional login: users with a role, and the owner of each conversation.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

from assistant.storage.migration_ops import drop_columns

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.String(64), nullable=False, unique=True),
        sa.Column("password_hash", sa.String(200), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("disabled", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("role IN ('user', 'admin')", name="ck_users_role"),
        sqlite_autoincrement=True,  # a removed user's id never owns someone else's chats
    )
    # NULL: made while login was off (or imported); such conversations are the admins'.
    # Plain ADD COLUMN with the reference inline: a batch copy of `conversations` would drop
    # the old table, and with foreign keys on that cascades into messages and ratings.
    if op.get_bind().dialect.name == "sqlite":
        op.execute("ALTER TABLE conversations ADD COLUMN owner_id INTEGER REFERENCES users (id)")
    else:
        op.add_column("conversations", sa.Column("owner_id", sa.Integer()))
        op.create_foreign_key(
            "fk_conversations_owner_id", "conversations", "users", ["owner_id"], ["id"]
        )
    op.create_index("ix_conversations_owner_id", "conversations", ["owner_id"])


def downgrade() -> None:
    op.drop_index("ix_conversations_owner_id", "conversations")
    if op.get_bind().dialect.name != "sqlite":
        op.drop_constraint("fk_conversations_owner_id", "conversations", type_="foreignkey")
    drop_columns("conversations", "owner_id")
    op.drop_table("users")
