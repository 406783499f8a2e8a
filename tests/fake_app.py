"""The app's own wiring (settings, database, registry, pages) with a FakeGenerator standing in
for the model, for AppTest tests whose subject is a page, not the model."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import streamlit as st
from streamlit.testing.v1 import AppTest

from assistant.bootstrap import Library, open_database, open_registry
from assistant.chat.service import ChatService
from assistant.config import Settings
from assistant.storage import ConversationStore
from assistant.storage.documents import DocumentStore
from tests.fakes import FakeGenerator
from ui import resources

#: The app's entry point, for AppTest.
APP = str(Path(__file__).resolve().parents[1] / "ui" / "app.py")


def run_ok(at: AppTest) -> AppTest:
    """Run the page's script once; it must end without an exception."""
    at.run()
    assert not at.exception, at.exception
    return at


def models_page() -> AppTest:
    """A new session of the app, switched to the Models page."""
    at = AppTest.from_file(APP, default_timeout=120)
    run_ok(at)
    at.switch_page("views/models.py")
    return run_ok(at)


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
