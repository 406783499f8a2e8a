"""Alembic migrations, from an empty database and back."""

from __future__ import annotations

import pytest
from sqlalchemy import inspect

from assistant.storage import Database, current_revision, head_revision, upgrade
from assistant.storage.migrate import downgrade, ensure_current


def tables(db: Database) -> set[str]:
    return set(inspect(db.engine).get_table_names()) - {"alembic_version"}


def test_upgrade_from_empty_database(tmp_path):
    db = Database(f"sqlite:///{tmp_path / 'empty.db'}")
    assert current_revision(db) is None
    assert tables(db) == set()
    assert upgrade(db) == head_revision()
    assert {"conversations", "messages", "feedback", "documents", "chunks",
            "message_sources", "chunks_fts"} <= tables(db)


def test_downgrade_to_base_and_up_again(tmp_path):
    db = Database(f"sqlite:///{tmp_path / 'x.db'}")
    upgrade(db)
    assert downgrade(db, "base") is None
    assert tables(db) == set()
    assert upgrade(db) == head_revision()


def test_ensure_current_is_idempotent_and_keeps_data(tmp_path):
    from assistant.storage import ConversationStore

    db = Database(f"sqlite:///{tmp_path / 'y.db'}")
    ensure_current(db)
    ConversationStore(db).add_user_message(None, "keep me")
    ensure_current(db)
    assert [c.title for c in ConversationStore(db).list_conversations()] == ["keep me"]


def test_upgrade_from_previous_revision_keeps_conversations(tmp_path):
    from assistant.storage import ConversationStore

    db = Database(f"sqlite:///{tmp_path / 'z.db'}")
    upgrade(db, "0001")
    with db.write() as s:
        s.connection().exec_driver_sql(
            "INSERT INTO conversations (title, created_at, updated_at) "
            "VALUES ('old one', '2026-01-01 00:00:00', '2026-01-01 00:00:00')"
        )
    assert upgrade(db) == head_revision()
    [conv] = ConversationStore(db).list_conversations()
    assert conv.title == "old one"
    with db.read() as s:
        row = s.connection().exec_driver_sql(
            "SELECT use_documents, document_ids FROM conversations").one()
    assert tuple(row) == (1, None)
    assert downgrade(db, "0001") == "0001"


def test_upgrade_keeps_messages_feedback_and_sources(tmp_path):
    """Table rebuilds on SQLite must not cascade-delete children: every row survives."""
    db = Database(f"sqlite:///{tmp_path / 'w.db'}")
    upgrade(db, "0002")
    with db.write() as s:  # rows as revision 0002 stored them (the ORM is already newer)
        c = s.connection()
        c.exec_driver_sql("INSERT INTO conversations (id, title, created_at, updated_at) "
                          "VALUES (1, 'c', '2026-01-01', '2026-01-01')")
        c.exec_driver_sql("INSERT INTO messages (id, conversation_id, role, content, created_at) "
                          "VALUES (1, 1, 'user', 'question', '2026-01-01'), "
                          "(2, 1, 'assistant', 'answer', '2026-01-01')")
        c.exec_driver_sql("INSERT INTO feedback (message_id, rating, created_at) "
                          "VALUES (2, 1, '2026-01-01')")
    with db.read() as s:
        before = {t: s.connection().exec_driver_sql(f"SELECT COUNT(*) FROM {t}").scalar()
                  for t in ("conversations", "messages", "feedback")}
    assert upgrade(db) == head_revision()
    with db.read() as s:
        after = {t: s.connection().exec_driver_sql(f"SELECT COUNT(*) FROM {t}").scalar()
                 for t in ("conversations", "messages", "feedback")}
        reply_to = s.connection().exec_driver_sql(
            "SELECT reply_to_id FROM messages WHERE role = 'assistant'").scalar()
    assert after == before == {"conversations": 1, "messages": 2, "feedback": 1}
    assert reply_to == 1
    for revision in ("0002", "0001"):
        assert downgrade(db, revision) == revision
        with db.read() as s:
            assert s.connection().exec_driver_sql("SELECT COUNT(*) FROM feedback").scalar() == 1
            assert s.connection().exec_driver_sql("SELECT COUNT(*) FROM messages").scalar() == 2


def test_upgrade_counts_the_words_of_stored_chunks(tmp_path):
    """0011 gives each stored chunk its length in words (BM25's document length)."""
    db = Database(f"sqlite:///{tmp_path / 'v.db'}")
    upgrade(db, "0008")
    with db.write() as s:
        c = s.connection()
        c.exec_driver_sql("INSERT INTO documents (id, name, kind, content_hash, size_bytes, embed_model, "
                          "created_at) VALUES (1, 'old.txt', 'txt', 'h', 1, 'e', '2026-01-01')")
        c.exec_driver_sql("INSERT INTO chunks (document_id, position, text, token_count, embedding) "
                          "VALUES (1, 0, 'The starter, at 25°C, doubles in 4-6 hours.', 12, x'00')")
    assert upgrade(db) == head_revision()
    with db.read() as s:
        assert s.connection().exec_driver_sql("SELECT word_count FROM chunks").scalar() == 10
    assert downgrade(db, "0008") == "0008"


def test_upgrade_lets_any_kind_of_version_in_and_keeps_the_numbering(tmp_path):
    """0013 drops the CHECK on a version's kind (the kinds of training are the training
    code's table) by copying the table on SQLite: the rows stay, and AUTOINCREMENT still
    never gives a deleted version's id again."""
    import sqlalchemy

    db = Database(f"sqlite:///{tmp_path / 'k.db'}")
    upgrade(db, "0012")
    row = ("INSERT INTO model_versions (name, kind, base_model, base_fingerprint, parent, path, data, "
           "config, metrics, created_at) VALUES ('{name}', '{kind}', 'm', 'f', 'base', '', '{{}}', '{{}}', "
           "'{{}}', '2026-01-01')")
    with db.write() as s:
        s.connection().exec_driver_sql(row.format(name="v1", kind="dpo"))
        s.connection().exec_driver_sql(row.format(name="v2", kind="sft"))
        s.connection().exec_driver_sql("DELETE FROM model_versions WHERE name = 'v2'")
    with pytest.raises(sqlalchemy.exc.IntegrityError), db.write() as s:
        s.connection().exec_driver_sql(row.format(name="v3", kind="orpo"))  # 0012's CHECK
    assert upgrade(db) == head_revision()
    with db.write() as s:
        s.connection().exec_driver_sql(row.format(name="v3", kind="orpo"))
    with db.read() as s:
        rows = s.connection().exec_driver_sql("SELECT id, name, kind FROM model_versions ORDER BY id").all()
    assert [tuple(r) for r in rows] == [(1, "v1", "dpo"), (3, "v3", "orpo")]  # id 2 not reused
    with pytest.raises(RuntimeError, match="cannot downgrade"):
        downgrade(db, "0012")
    with db.write() as s:
        s.connection().exec_driver_sql("DELETE FROM model_versions WHERE kind = 'orpo'")
    assert downgrade(db, "0012") == "0012"
    with pytest.raises(sqlalchemy.exc.IntegrityError), db.write() as s:
        s.connection().exec_driver_sql(row.format(name="v4", kind="orpo"))
