"""Persistence: SQLAlchemy 2.0 models, the engine/session factory, Alembic migrations and
the stores (conversations, documents, examples, accounts, versions, ...). Only this package
touches the ORM rows (``schema``); everything above gets and gives plain values.

May import: ``assistant.errors`` and ``assistant.words``; no other part of the library (it
holds what it is given: parsing, chunking and ingest sit above it).
"""

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
