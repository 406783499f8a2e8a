"""Wire the parts together from settings: the one place the UI and the CLI build services."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from assistant.config import Settings
from assistant.storage import Database
from assistant.storage.migrate import ensure_current

log = logging.getLogger(__name__)

# The model-side modules import torch, transformers and FAISS (seconds): they are
# imported where used, so that `assistant db ...` and `assistant data ...` start fast.
if TYPE_CHECKING:
    from assistant.chat.service import ChatService
    from assistant.documents.embedding import Embedder
    from assistant.engines.registry import Engine
    from assistant.documents.index import SyncReport, VectorIndex
    from assistant.documents.ingest import Ingestor
    from assistant.engines.models import LoadedModel
    from assistant.registry import Registry
    from assistant.documents.retrieval import Retriever
    from assistant.storage.documents import DocumentStore


def open_database(settings: Settings) -> Database:
    db = Database(settings.resolved_database_url, settings.db_busy_timeout_s)
    ensure_current(db)
    return db


@dataclass
class Library:
    """The documents side: storage, embedding model, vector index, ingest and search."""

    store: DocumentStore
    embedder: Embedder
    index: VectorIndex
    ingestor: Ingestor
    retriever: Retriever
    sync: SyncReport
    notices: list[str] = field(default_factory=list)


def open_library(settings: Settings, db: Database, repair: bool = True) -> Library:
    """Load the embedding model and the index, and check the index against the database
    (rebuilding it from the stored vectors when they disagree, unless ``repair`` is off)."""
    from assistant.documents.embedding import Embedder
    from assistant.documents.index import VectorIndex
    from assistant.documents.index_sync import sync_index
    from assistant.documents.ingest import Ingestor
    from assistant.documents.retrieval import Retriever
    from assistant.storage.documents import DocumentStore

    store = DocumentStore(db)
    embedder = Embedder(settings.retrieval.embedding_model)
    index = VectorIndex(settings.index_dir, embedder.dim, settings.retrieval.index_type, embedder.name)
    if repair:
        report = sync_index(store, index, embedder)
    else:
        report = index.check(store.chunk_ids(), store.embed_models())
    notices = []
    if not report.ok and repair:
        notices.append(
            f"The search index disagreed with the database ({report.missing} chunks missing, "
            f"{report.stale} stale{', other embedding model' if report.model_mismatch else ''}); "
            "it was rebuilt from the database."
        )
    r = settings.retrieval
    return Library(
        store, embedder, index, Ingestor(store, embedder, index, r),
        Retriever(store, embedder, index, r), report, notices,
    )


def open_registry(settings: Settings, db: Database) -> Registry:
    from assistant.registry import Registry

    return Registry(db, settings.versions_dir)


def build_engine(settings: Settings, loaded: LoadedModel | None = None) -> Engine:
    """The generator the ``engine`` setting names (``assistant.engines.registry``).
    ``loaded`` (a transformers model already in memory) is reused by the transformers engine."""
    from assistant.engines.registry import build

    return build(settings, loaded)


def build_chat_service(
    settings: Settings,
    db: Database | None = None,
    loaded: LoadedModel | None = None,
    library: Library | None = None,
) -> ChatService:
    from assistant.chat.service import ChatService
    from assistant.storage import ConversationStore

    db = db or open_database(settings)
    engine = build_engine(settings, loaded)
    library = library or open_library(settings, db)
    service = ChatService(
        ConversationStore(db), engine.generator, settings,
        notices=engine.notices + library.notices, retriever=library.retriever,
        registry=open_registry(settings, db), base_fingerprint=engine.fingerprint,
    )
    service.sync_version()  # start on the active version
    return service
