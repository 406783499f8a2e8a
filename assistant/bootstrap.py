"""Wire the parts together from settings: the one place the UI and the CLI build services."""

from __future__ import annotations

from assistant.chat import ChatService
from assistant.config import Settings
from assistant.generation import TransformersGenerator
from assistant.models import LoadedModel, load_model
from assistant.storage import ConversationStore, Database
from assistant.storage.migrate import ensure_current


def open_database(settings: Settings) -> Database:
    db = Database(settings.resolved_database_url, settings.db_busy_timeout_s)
    ensure_current(db)
    return db


def build_chat_service(
    settings: Settings, db: Database | None = None, loaded: LoadedModel | None = None
) -> ChatService:
    db = db or open_database(settings)
    loaded = loaded or load_model(settings)
    generator = TransformersGenerator(loaded, workers=settings.generation_workers)
    return ChatService(ConversationStore(db), generator, settings, notices=loaded.notices)
