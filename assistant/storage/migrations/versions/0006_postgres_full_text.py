"""Full-text search on PostgreSQL: a generated ``tsvector`` column over the chunk text, with a
GIN index (SQLite has had its FTS5 table since 0002; nothing changes there).

A generated column is computed by the server on every insert and update, so it can never
disagree with the text (SQLite needs triggers for that). ``english`` is the configuration
the search parses queries with (``assistant.storage.lexical.PostgresFullText.config``).

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30
"""

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("ALTER TABLE chunks ADD COLUMN text_search tsvector "
               "GENERATED ALWAYS AS (to_tsvector('english', text)) STORED")
    op.execute("CREATE INDEX ix_chunks_text_search ON chunks USING GIN (text_search)")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("DROP INDEX IF EXISTS ix_chunks_text_search")
    op.execute("ALTER TABLE chunks DROP COLUMN IF EXISTS text_search")
