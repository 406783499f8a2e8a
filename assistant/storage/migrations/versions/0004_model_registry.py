"""Model registry: trained versions (LoRA adapters, reward models), the activation log and
evaluations.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def _created() -> sa.Column:
    return sa.Column("created_at", sa.DateTime(timezone=True), nullable=False)


def upgrade() -> None:
    op.create_table(
        "model_versions",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.String(40), nullable=False, unique=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("base_model", sa.String(500), nullable=False),
        sa.Column("base_fingerprint", sa.String(64), nullable=False),
        sa.Column("parent", sa.String(40), nullable=False),
        sa.Column("path", sa.String(300), nullable=False),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("metrics", sa.JSON(), nullable=False),
        _created(),
        sa.CheckConstraint("kind IN ('sft', 'dpo', 'kto', 'rl', 'reward')", name="ck_version_kind"),
        sqlite_autoincrement=True,  # a deleted version's name is never given to another
    )
    op.create_table(
        "activations",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("version", sa.String(40), nullable=False),
        sa.Column("forced", sa.Boolean(), nullable=False),
        sa.Column("reason", sa.String(200), nullable=False),
        _created(),
    )
    op.create_table(
        "evaluations",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("candidate", sa.String(40), nullable=False),
        sa.Column("baseline", sa.String(40), nullable=False),
        sa.Column("reward_model", sa.String(40)),
        sa.Column("metrics", sa.JSON(), nullable=False),
        _created(),
    )
    op.create_index("ix_evaluations_candidate", "evaluations", ["candidate"])


def downgrade() -> None:
    op.drop_index("ix_evaluations_candidate", "evaluations")
    op.drop_table("evaluations")
    op.drop_table("activations")
    op.drop_table("model_versions")
