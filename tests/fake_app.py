"""The app's own wiring (settings, database, registry, pages) with a FakeGenerator standing in
for the model, for AppTest tests whose subject is a page, not the model."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from types import SimpleNamespace

import streamlit as st

from assistant.bootstrap import Library, open_database, open_registry
from assistant.chat import ChatService
from assistant.config import Settings
from assistant.storage import ConversationStore
from assistant.storage.documents import DocumentStore
from tests.fakes import FakeGenerator
from ui import resources


@contextmanager
def fake_app(settings: Settings, monkeypatch, generator: FakeGenerator | None = None,
             fingerprint: str | None = None) -> Iterator[ChatService]:
    """Hand the app a ChatService built here (with a registry when ``fingerprint`` is given)
    through its resource functions. The library lists documents without an embedding model;
    its upload form reads only the limits."""
    st.cache_resource.clear()  # resources are per process: rebuild them from this test's env
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    db = open_database(settings)
    registry = open_registry(settings, db) if fingerprint is not None else None
    svc = ChatService(ConversationStore(db), generator or FakeGenerator(context_window=4096),
                      settings, registry=registry, base_fingerprint=fingerprint or "")
    if registry is not None:
        svc.sync_version()
    monkeypatch.setattr(resources, "_chat_service", lambda: svc)
    library = Library(DocumentStore(db), None, None, SimpleNamespace(settings=settings.retrieval),
                      None, None)
    monkeypatch.setattr(resources, "_library", lambda: library)
    try:
        yield svc
    finally:
        st.cache_resource.clear()
        db.dispose()
