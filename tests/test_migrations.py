"""Alembic migrations, from an empty database and back."""

from __future__ import annotations

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
    assert tables(db) == {"conversations", "messages", "feedback"}


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
