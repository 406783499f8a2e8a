"""Feedback that becomes training data: alternatives (regenerate), choices, edits, tags,
comparisons (arena votes), and the source of imported conversations.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

from assistant.storage.migration_ops import drop_columns

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("conversations", sa.Column("source", sa.String(300)))
    op.create_index("ix_conversations_source", "conversations", ["source"])
    # Plain ADD COLUMN (the foreign key inline): a batch "move and copy" of `messages`
    # would drop the old table, and with foreign keys on that cascades into feedback.
    if op.get_bind().dialect.name == "sqlite":
        op.execute(
            "ALTER TABLE messages ADD COLUMN reply_to_id INTEGER "
            "REFERENCES messages (id) ON DELETE CASCADE"
        )
    else:
        op.add_column("messages", sa.Column("reply_to_id", sa.Integer()))
        op.create_foreign_key(
            "fk_messages_reply_to_id", "messages", "messages", ["reply_to_id"], ["id"],
            ondelete="CASCADE",
        )
    op.add_column(
        "messages", sa.Column("active", sa.Boolean(), nullable=False, server_default=sa.true())
    )
    op.create_index("ix_messages_reply_to_id", "messages", ["reply_to_id"])
    op.add_column("feedback", sa.Column("tags", sa.JSON()))
    # Existing answers reply to the user message just before them.
    op.execute(
        "UPDATE messages SET reply_to_id = (SELECT MAX(q.id) FROM messages q "
        "WHERE q.conversation_id = messages.conversation_id AND q.role = 'user' "
        "AND q.id < messages.id) WHERE role = 'assistant'"
    )

    def fk(name: str) -> sa.Column:
        return sa.Column(name, sa.Integer(), sa.ForeignKey("messages.id", ondelete="CASCADE"),
                         nullable=False)

    op.create_table(
        "choices",
        sa.Column("id", sa.Integer(), primary_key=True),
        fk("question_id"), fk("chosen_id"),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_choices_question_id", "choices", ["question_id"])
    op.create_index("ix_choices_chosen_id", "choices", ["chosen_id"])
    op.create_table(
        "edits",
        sa.Column("id", sa.Integer(), primary_key=True),
        fk("message_id"),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_edits_message_id", "edits", ["message_id"])
    op.create_table(
        "comparisons",
        sa.Column("id", sa.Integer(), primary_key=True),
        fk("question_id"), fk("a_id"), fk("b_id"),
        sa.Column("vote", sa.String(16)),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("voted_at", sa.DateTime(timezone=True)),
        sa.CheckConstraint("vote IS NULL OR vote IN ('a', 'b', 'tie', 'both_bad')", name="ck_vote"),
    )
    op.create_index("ix_comparisons_question_id", "comparisons", ["question_id"])


def downgrade() -> None:
    op.drop_table("comparisons")
    op.drop_table("edits")
    op.drop_table("choices")
    drop_columns("feedback", "tags")
    op.drop_index("ix_messages_reply_to_id", "messages")
    if op.get_bind().dialect.name != "sqlite":
        op.drop_constraint("fk_messages_reply_to_id", "messages", type_="foreignkey")
    drop_columns("messages", "active", "reply_to_id")
    op.drop_index("ix_conversations_source", "conversations")
    drop_columns("conversations", "source")
