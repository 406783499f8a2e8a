"""Documents in the UI (AppTest): the Documents page, attachments in the chat, sources."""

from __future__ import annotations

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from assistant.storage import ConversationStore, Database
from assistant.storage.documents import DocumentStore
from tests.fake_app import APP

pytestmark = pytest.mark.slow

FESTIVAL = (
    b"# Zorblax festival\n\nThe Zorblax festival is held every year in the town of "
    b"Quillhaven, on the third of May. Visitors eat blue pancakes.\n"
)


@pytest.fixture
def app(env_settings):
    st.cache_resource.clear()

    def new_session(page: str | None = None) -> AppTest:
        at = AppTest.from_file(APP, default_timeout=180)
        if page:  # straight there: the chat page would load the chat model first
            at.switch_page(page)
        at.run()
        assert not at.exception, at.exception
        return at

    yield new_session
    st.cache_resource.clear()


@pytest.fixture
def db(env_settings):
    return Database(env_settings.resolved_database_url)


def texts(elements) -> list[str]:
    return [e.value for e in elements]


def test_documents_page_empty_state(app):
    at = app("views/documents.py")
    assert at.title[0].value == "Documents"
    assert any("No documents yet" in t for t in texts(at.info))


def test_upload_list_search_and_delete(app, db):
    at = app("views/documents.py")
    at.file_uploader(key="upload").set_value([
        ("festival.md", FESTIVAL, "text/markdown"),
        ("empty.txt", b"", "text/plain"),
        # The uploader itself refuses unlisted types; a binary renamed .txt gets through.
        ("../../photo.txt", b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8, "text/plain"),
    ])
    at.button[0].click().run()  # the form's "Add to library"
    assert not at.exception, at.exception
    assert any("festival.md: indexed" in t for t in texts(at.success))
    errors = " ".join(texts(at.error))
    assert "empty.txt" in errors and "empty" in errors
    assert "photo.txt" in errors and "binary" in errors and "../" not in errors
    [doc] = DocumentStore(db).list_documents()
    assert doc.name == "festival.md" and doc.chunk_count >= 1
    assert any("festival.md" in m.value for m in at.markdown)

    at.text_input(key="doc_search").set_value("Where is the Zorblax festival?").run()
    # The matching text shows at once, not behind a score.
    assert any(m.value.startswith("**1. festival.md") for m in at.markdown)
    assert any("Quillhaven, on the third of May" in t.value for t in at.text)
    assert any(c.value.startswith("score ") for c in at.caption)

    # The bin only opens a popover; its Delete button deletes.
    assert any("Delete **festival.md**?" in m.value for m in at.markdown)
    assert DocumentStore(db).list_documents() != []
    at.button(key=f"del_doc_{doc.id}").click().run()
    assert DocumentStore(db).list_documents() == []
    assert any("No documents yet" in t for t in texts(at.info))


def test_attach_a_document_and_ask_about_it(app, db):
    at = app()
    at.slider(key="temperature").set_value(0.0)
    at.number_input(key="max_new_tokens").set_value(40)
    chat = at.chat_input(key="chat_input")
    chat.upload("festival.md", FESTIVAL, "text/markdown")
    chat.set_value("Where is the Zorblax festival held?").run()
    assert not at.exception, at.exception

    [conv] = ConversationStore(db).list_conversations()
    [_, answer] = ConversationStore(db).messages(conv.id)
    assert "Quillhaven" in answer.content
    assert answer.sources and answer.sources[0].document_name == "festival.md"
    assert answer.sources[0].cited
    # The rendered answer carries the citation (the model's own [1], or the grey mark of an
    # attributed one) and the source is expandable below it.
    from ui.answers import attributed_mark

    assert any("[1]" in m.value or attributed_mark(1) in m.value
               for m in at.chat_message[1].markdown)
    labels = [e.label for e in at.expander]
    assert any(label.startswith("[1] festival") for label in labels)


def test_turning_documents_off_for_a_conversation(app, db):
    at = app("views/documents.py")
    at.file_uploader(key="upload").set_value(("festival.md", FESTIVAL, "text/markdown"))
    at.button[0].click().run()
    at.switch_page("views/chat.py").run()
    at.toggle(key="use_docs_new").set_value(False)
    at.slider(key="temperature").set_value(0.0)
    at.number_input(key="max_new_tokens").set_value(8)
    at.chat_input(key="chat_input").set_value("Where is the Zorblax festival held?").run()
    [conv] = ConversationStore(db).list_conversations()
    assert conv.documents.use_documents is False
    assert ConversationStore(db).messages(conv.id)[1].sources == ()


def test_a_file_over_the_limit_is_refused_with_a_visible_message(app, db, monkeypatch):
    monkeypatch.setenv("ASSISTANT_RETRIEVAL__MAX_UPLOAD_MB", "0.01")
    at = app("views/documents.py")
    # The browser may send up to the server's cap, so the library's own refusal is seen.
    assert at.file_uploader(key="upload").proto.max_upload_size_mb == 200
    at.file_uploader(key="upload").set_value([("big.txt", b"word " * 4000, "text/plain")])
    at.button[0].click().run()  # "Add to library"
    errors = " ".join(texts(at.error))
    assert "big.txt" in errors and "over the 0.01 MB limit" in errors
    assert DocumentStore(db).list_documents() == []

    at.button[0].click().run()  # nothing chosen (or dropped by the browser): said, not silent
    assert "Nothing was added" in " ".join(texts(at.warning))
