"""Persistence: SQLAlchemy 2.0 models, the engine/session factory and Alembic migrations."""

from assistant.storage.conversations import ConversationStore, StoredConversation, StoredMessage
from assistant.storage.db import Database
from assistant.storage.migrate import current_revision, head_revision, upgrade

__all__ = [
    "ConversationStore",
    "Database",
    "StoredConversation",
    "StoredMessage",
    "current_revision",
    "head_revision",
    "upgrade",
]
