"""Lexical search ranks alike on both databases (each chunk's length in words, and on
PostgreSQL a text search configuration without stopwords); why each answer ended.

* ``chunks.word_count``: the chunk's words as a full-text engine counts them (runs of letters
  and digits, stopwords included: :func:`assistant.words.search_word_count`), the document
  length of BM25. SQLite's FTS5 keeps its own; PostgreSQL's ``tsvector`` only knows distinct
  lexemes, which ranked chunks differently.
* PostgreSQL: ``text_search`` is generated with ``assistant_english`` (English stemming, no
  stopwords) instead of ``english``, whose stopword list is longer than the product's: a
  question's "after", "during" or "between" matched on SQLite and was dropped on PostgreSQL.
* ``messages.finish_reason``: "stop" (the model ended the answer) or "length" (the token
  limit cut it: the app says so and offers to continue it); NULL for answers stored before.

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import op

from assistant.storage.migration_ops import drop_columns
from assistant.words import search_word_count

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

BATCH = 1_000
#: The parser's word tokens (the ones ``english`` stems and filters), now stemmed and kept.
WORD_TOKENS = "asciiword, asciihword, hword_asciipart, word, hword, hword_part"


def upgrade() -> None:
    bind = op.get_bind()
    # Plain ADD COLUMN (no batch copy of `messages`): see migration_ops.
    op.add_column("messages", sa.Column("finish_reason", sa.String(32), nullable=True))
    op.add_column("chunks", sa.Column("word_count", sa.Integer(), nullable=False,
                                      server_default="0"))
    chunks = sa.table("chunks", sa.column("id", sa.Integer), sa.column("text", sa.Text),
                      sa.column("word_count", sa.Integer))
    last = 0
    while rows := bind.execute(sa.select(chunks.c.id, chunks.c.text).where(chunks.c.id > last)
                               .order_by(chunks.c.id).limit(BATCH)).all():
        bind.execute(chunks.update().where(chunks.c.id == sa.bindparam("i"))
                     .values(word_count=sa.bindparam("n")),
                     [{"i": i, "n": search_word_count(t)} for i, t in rows])
        last = rows[-1][0]
    if bind.dialect.name == "postgresql":
        op.execute("CREATE TEXT SEARCH DICTIONARY assistant_english_stem "
                   "(TEMPLATE = snowball, Language = english)")
        op.execute("CREATE TEXT SEARCH CONFIGURATION assistant_english (COPY = english)")
        op.execute(f"ALTER TEXT SEARCH CONFIGURATION assistant_english ALTER MAPPING FOR "
                   f"{WORD_TOKENS} WITH assistant_english_stem")
        _text_search("assistant_english")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        _text_search("english")
        op.execute("DROP TEXT SEARCH CONFIGURATION assistant_english")
        op.execute("DROP TEXT SEARCH DICTIONARY assistant_english_stem")
    drop_columns("chunks", "word_count")
    drop_columns("messages", "finish_reason")


def _text_search(config: str) -> None:
    """The generated column and its index (0006), made again with ``config``."""
    op.execute("DROP INDEX IF EXISTS ix_chunks_text_search")
    op.execute("ALTER TABLE chunks DROP COLUMN IF EXISTS text_search")
    op.execute("ALTER TABLE chunks ADD COLUMN text_search tsvector "
               f"GENERATED ALWAYS AS (to_tsvector('{config}', text)) STORED")
    op.execute("CREATE INDEX ix_chunks_text_search ON chunks USING GIN (text_search)")
