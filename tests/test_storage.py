"""The storage layer against a real SQLite file and a real PostgreSQL database."""

from __future__ import annotations

import sqlite3

import pytest
from sqlalchemy import inspect

from assistant.errors import ConversationNotFound, DatabaseLocked, MessageNotFound
from assistant.storage import ConversationStore, Database
from assistant.storage.conversations import AnswerRecord

pytestmark = pytest.mark.both_databases

RECORD = AnswerRecord(
    model_id="m", model_version="base", params={"temperature": 0.2}, prompt_tokens=12,
    completion_tokens=5, latency_ms=321.0, ttft_ms=40.0,
)


def db_file(db: Database) -> str:
    return db.where


@pytest.mark.sqlite_only
def test_sqlite_runs_in_wal_mode_with_foreign_keys(db):
    with db.read() as s:
        assert s.connection().exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert s.connection().exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert s.connection().exec_driver_sql("PRAGMA busy_timeout").scalar() == 500


def test_conversation_lifecycle_survives_reopening(db, settings):
    store = ConversationStore(db)
    q = store.add_user_message(None, "  What   is the capital\nof France?  ")
    a = store.add_assistant_message(q.conversation_id, "Paris.", RECORD)
    store.rename_conversation(q.conversation_id, "Geography")
    store.rate(a.id, 1, "  correct ")
    db.dispose()

    reopened = ConversationStore(Database(settings.resolved_database_url))
    [conv] = reopened.list_conversations()
    assert conv.title == "Geography"
    msgs = reopened.messages(conv.id)
    assert [(m.role, m.content) for m in msgs] == [
        ("user", "  What   is the capital\nof France?  "),
        ("assistant", "Paris."),
    ]
    assert msgs[1].rating == 1 and msgs[1].comment == "correct"
    assert msgs[1].record == RECORD


def test_title_comes_from_first_message(store):
    q = store.add_user_message(None, "word " * 40)
    title = store.get_conversation(q.conversation_id).title
    assert title.endswith("...") and len(title) <= 60
    conv = store.create_conversation()
    store.add_user_message(conv.id, "Second one")
    assert store.get_conversation(conv.id).title == "Second one"


def test_conversations_listed_most_recent_first(store):
    first = store.add_user_message(None, "first").conversation_id
    second = store.add_user_message(None, "second").conversation_id
    assert [c.id for c in store.list_conversations()] == [second, first]
    store.add_user_message(first, "again")
    assert [c.id for c in store.list_conversations()] == [first, second]


def test_ratings_are_appended_not_overwritten(store):
    q = store.add_user_message(None, "hi")
    a = store.add_assistant_message(q.conversation_id, "hello", RECORD)
    store.rate(a.id, 1)
    store.rate(a.id, -1, "actually rude")
    store.rate(a.id, -1, "actually rude")  # unchanged: not recorded twice
    store.rate(a.id, None)
    assert store.feedback_history(a.id) == [(1, None), (-1, "actually rude"), (None, None)]
    assert store.messages(q.conversation_id)[1].rating is None


def test_rating_rejects_bad_values_and_targets(store):
    q = store.add_user_message(None, "hi")
    with pytest.raises(ValueError):
        store.rate(q.id, 1)  # a user message
    with pytest.raises(MessageNotFound):
        store.rate(9999, 1)
    a = store.add_assistant_message(q.conversation_id, "hello", RECORD)
    with pytest.raises(ValueError):
        store.rate(a.id, 5)
    assert store.counts()["feedback"] == 0


def test_delete_removes_messages_and_feedback(store):
    q = store.add_user_message(None, "hi")
    a = store.add_assistant_message(q.conversation_id, "hello", RECORD)
    store.rate(a.id, 1)
    keep = store.add_user_message(None, "other").conversation_id
    store.delete_conversation(q.conversation_id)
    assert store.counts() == {"conversations": 1, "messages": 1, "feedback": 0}
    assert [c.id for c in store.list_conversations()] == [keep]
    with pytest.raises(ConversationNotFound):
        store.messages(q.conversation_id)
    with pytest.raises(ConversationNotFound):
        store.delete_conversation(q.conversation_id)


def test_unknown_conversation_is_a_clear_error(store):
    with pytest.raises(ConversationNotFound, match="Conversation 42 does not exist"):
        store.add_user_message(42, "hi")
    assert store.counts()["messages"] == 0


@pytest.mark.sqlite_only
def test_locked_database_gives_clear_error_and_loses_nothing(db, store, hold_lock):
    q = store.add_user_message(None, "before the lock")
    with hold_lock(db_file(db)):
        with pytest.raises(DatabaseLocked, match="locked by another process"):
            store.add_user_message(q.conversation_id, "while locked")
        with pytest.raises(DatabaseLocked):
            store.rate(999, 1)
        # Readers are not blocked in WAL mode.
        assert [m.content for m in store.messages(q.conversation_id)] == ["before the lock"]
    store.add_user_message(q.conversation_id, "after the lock")
    assert [m.content for m in store.messages(q.conversation_id)] == [
        "before the lock",
        "after the lock",
    ]


def test_failed_transaction_leaves_nothing_behind(store, db):
    """A new conversation and its first message are written together or not at all."""
    with pytest.raises(Exception):  # noqa: B017 - whatever the driver raises: the point is what is left
        store.add_user_message(None, None)  # NOT NULL violation after the conversation row
    assert store.counts() == {"conversations": 0, "messages": 0, "feedback": 0}


def test_schema_matches_models(db):
    """The migrations create exactly what the ORM models describe."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from assistant.storage.schema import Base

    def not_fts(obj, name, type_, reflected, compare_to):
        # The FTS5 virtual table and its shadow tables, and PostgreSQL's generated tsvector
        # column and its index, are raw SQL, not ORM models.
        return not ((type_ == "table" and name.startswith("chunks_fts"))
                    or (type_ in ("column", "index") and name in ("text_search", "ix_chunks_text_search")))

    with db.read() as s:
        ctx = MigrationContext.configure(
            s.connection(), opts={"include_object": not_fts}
        )
        diff = compare_metadata(ctx, Base.metadata)
        sqlite = db.engine.dialect.name == "sqlite"
        fks = (s.connection().exec_driver_sql("PRAGMA foreign_key_list(messages)").all() if sqlite
               else [(None, None, fk["referred_table"], fk["constrained_columns"][0], None, None,
                      fk["options"].get("ondelete")) for fk in inspect(s.connection()).get_foreign_keys("messages")])

    # messages.reply_to_id was added with ALTER TABLE ADD COLUMN (a table copy would cascade
    # into feedback). SQLAlchemy's reflection parses FOREIGN KEY clauses out of CREATE TABLE
    # and misses that column-level ON DELETE, so check it with SQLite's own pragma instead.
    def reply_to_fk(d) -> bool:
        return d[0] in ("add_fk", "remove_fk") and [c.name for c in d[1].columns] == ["reply_to_id"]

    assert [d for d in diff if not reply_to_fk(d)] == []
    assert len([d for d in diff if reply_to_fk(d)]) in (0, 2)
    assert any(fk[2:4] == ("messages", "reply_to_id") and fk[6] == "CASCADE" for fk in fks)
    names = set(inspect(db.engine).get_table_names())
    assert {"conversations", "messages", "feedback", "documents", "chunks",
            "message_sources", "alembic_version"} | ({"chunks_fts"} if sqlite else set()) <= names


@pytest.mark.sqlite_only
def test_other_processes_see_committed_rows(db, store):
    store.add_user_message(None, "visible")
    con = sqlite3.connect(db_file(db))
    assert con.execute("select content from messages").fetchall() == [("visible",)]
    con.close()
