"""The chat page's rails (AppTest, FakeGenerator): the conversation in the URL, a refused
message kept, what the answer's bubble says before the first word, the 👎-then-Best warning,
ratings after an edit, compare mode's default versions."""

from __future__ import annotations

from contextlib import contextmanager
from types import SimpleNamespace

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from assistant.login.auth import UserStore
from assistant.storage.conversations import DocumentChoice
from tests.fake_app import APP, run_ok, fake_app
from ui import chat_page
from tests.test_ui_models import add_version


@pytest.fixture
def service(env_settings, monkeypatch):
    with fake_app(env_settings, monkeypatch, fingerprint="fake-fingerprint") as svc:
        yield svc


def new_session(query: dict | None = None) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60)
    at.query_params.update(query or {})
    return run_ok(at)


def send(at: AppTest, text: str) -> AppTest:
    at.chat_input(key="chat_input").set_value(text)
    return run_ok(at)


def bubbles(at: AppTest) -> list[tuple[str, str]]:
    return [(cm.name, " ".join(m.value for m in cm.markdown)) for cm in at.chat_message]


# -- 10: every conversation has its own URL --------------------------------------------------
def test_the_open_conversation_is_in_the_url_and_a_reload_reopens_it(service):
    at = send(new_session(), "What is the capital of France?")
    [conv] = service.store.list_conversations()
    assert at.query_params["conversation"] == str(conv.id)
    shown = bubbles(at)
    assert len(shown) == 2

    # A reload (or a shared link) is a new session with the same URL.
    again = new_session({"conversation": str(conv.id)})
    assert bubbles(again) == shown and not again.error
    assert again.button(key=f"conv_{conv.id}").proto.type == "primary"

    # New chat drops it from the URL; opening one from the sidebar puts it back.
    again.button(key="new_chat").click()
    run_ok(again)
    assert "conversation" not in again.query_params and bubbles(again) == []
    again.button(key=f"conv_{conv.id}").click()
    run_ok(again)
    assert again.query_params["conversation"] == str(conv.id)

    # The back button changes the URL under a running session: the page follows it.
    again.button(key="new_chat").click()
    run_ok(again)
    again.query_params["conversation"] = str(conv.id)
    run_ok(again)
    assert bubbles(again) == shown


def test_a_link_to_a_missing_conversation_says_so(service):
    at = new_session({"conversation": "999"})
    assert "no conversation 999 that you can open" in at.error[0].value
    assert bubbles(at) == [] and "conversation" not in at.query_params


def test_with_login_a_link_opens_only_for_its_owner(env_settings, monkeypatch):
    monkeypatch.setenv("ASSISTANT_AUTH", "password")
    settings = env_settings.model_copy(update={"auth": "password"})
    with fake_app(settings, monkeypatch, fingerprint="fake") as svc:
        users = UserStore(svc.store.db)
        users.add("ann", "correct horse")
        users.add("bob", "correct horse")
        conv = svc.for_owner(users.get("ann")).send(None, "Ann's question")
        list(conv)  # let the answer finish

        def logged_in(name: str) -> AppTest:
            at = new_session({"conversation": str(conv.conversation_id)})
            at.text_input(key="login_name").set_value(name)
            at.text_input(key="login_password").set_value("correct horse")
            at.button[0].click()  # the form's "Log in"
            return run_ok(at)

        assert bubbles(logged_in("ann"))[0] == ("user", "Ann's question")
        bob = logged_in("bob")
        assert bubbles(bob) == []
        assert f"no conversation {conv.conversation_id} that you can open" in bob.error[0].value


# -- 13: a refused message stays in the box ---------------------------------------------------
def test_a_pasted_message_over_the_limit_stays_in_the_box_with_the_reason(service):
    at = new_session()
    limit = service.settings.max_message_chars
    pasted = "lorem ipsum " * (104_000 // 12)
    assert len(pasted) > limit
    assert at.chat_input(key="chat_input").proto.max_chars == 0  # the browser cuts nothing
    send(at, pasted)
    box = at.chat_input(key="chat_input").proto
    assert box.set_value and box.value == pasted  # back in the box, whole
    assert "too long" in at.error[0].value and "back in the box" in at.error[0].value
    assert service.store.counts()["messages"] == 0 and bubbles(at) == []

    # The next message goes through as usual, and the box is not refilled again.
    send(at, "A short one.")
    assert [role for role, _ in bubbles(at)] == ["user", "assistant"]
    assert not at.chat_input(key="chat_input").proto.set_value
    assert not at.error


# -- 12: the answer's bubble says what happens before the first word -------------------------
@pytest.fixture
def spinners(monkeypatch):
    """The texts of the spinners the page shows (they are gone once the run ends)."""
    shown: list[str] = []
    real = st.spinner

    @contextmanager
    def spinner(text: str = "", *args, **kwargs):
        shown.append(text)
        with real(text, *args, **kwargs):
            yield

    monkeypatch.setattr(st, "spinner", spinner)
    return shown


def test_the_answer_says_what_it_waits_for_before_the_first_word(service, spinners):
    send(new_session(), "What is the capital of France?")
    i = spinners.index("Reading the conversation…")  # while the message is prepared
    assert spinners[i + 1] == "Reading the question…"  # then until the first word


def test_with_documents_it_says_searching_then_how_many_sources_are_read():
    documents_on = SimpleNamespace(retriever=object())
    assert chat_page.searching(documents_on, DocumentChoice()) == "Searching documents…"
    assert chat_page.searching(documents_on, DocumentChoice(use_documents=False)) == "Reading the conversation…"
    assert chat_page.reading(SimpleNamespace(sources=[1, 2, 3])) == "Reading 3 sources and the question…"
    assert chat_page.reading(SimpleNamespace(sources=[1])) == "Reading 1 source and the question…"


# -- 15: Best on a 👎 answer asks first; after an edit the rating stays with the original ----
def test_best_on_a_thumbs_down_answer_warns_first(service):
    at = send(new_session(), "Name a fruit.")
    [conv] = service.store.list_conversations()
    [_, first] = service.store.messages(conv.id)
    at.button(key=f"regen_{first.id}").click()
    run_ok(at)
    at.button(key=f"alt_prev_{first.id + 1}").click()
    run_ok(at)
    assert at.button(key=f"best_{first.id}").label == "Best" and not at.warning
    at.feedback(key=f"fb_{first.id}").set_value(0)  # 👎
    run_ok(at)
    assert at.button(key=f"best_{first.id}").label == "Mark it the best anyway"  # in a popover
    warning = " ".join(w.value for w in at.warning)
    assert ":material/thumb_down:" in warning and "**chosen**" in warning
    assert not service.store.get_message(first.id).chosen  # nothing happened yet
    at.button(key=f"best_{first.id}").click()  # "Mark it the best anyway"
    run_ok(at)
    assert service.store.get_message(first.id).chosen


def test_after_an_edit_the_rating_shows_with_the_models_original_not_the_correction(service):
    at = send(new_session(), "Name a fruit.")
    [conv] = service.store.list_conversations()
    [_, answer] = service.store.messages(conv.id)
    at.text_input(key=f"comment_{answer.id}").set_value("wrong fruit")
    at.feedback(key=f"fb_{answer.id}").set_value(0)
    run_ok(at)
    at.text_area(key=f"edit_text_{answer.id}").set_value("An apple.")
    at.button(key=f"edit_save_{answer.id}").click()
    run_ok(at)
    [bubble] = [cm for cm in at.chat_message if cm.name == "assistant"]
    assert bubble.markdown[0].value == "An apple."
    [original] = bubble.expander
    assert "the model's original answer" in original.label
    # The rating and comment sit with the original, inside its expander, and nowhere else.
    assert [f.key for f in original.get("feedback")] == [f"fb_{answer.id}"]
    assert original.text_input(key=f"comment_{answer.id}").value == "wrong fruit"
    assert len(bubble.get("feedback")) == 1


# -- 7: compare mode's default versions -------------------------------------------------------
def test_compare_mode_defaults_to_the_active_version_against_its_parent(service):
    at = new_session()
    at.toggle(key="compare_mode").set_value(True)
    run_ok(at)
    assert "two samples of the base model" in " ".join(c.value for c in at.sidebar.caption)

    v1 = add_version(service.registry).name
    service.registry.activate(v1)
    service.sync_version()  # as the next message (or the Models page) does
    at = new_session()
    at.toggle(key="compare_mode").set_value(True)
    run_ok(at)
    assert at.selectbox(key="compare_version_1").value == v1
    assert at.selectbox(key="compare_version_2").value == "base"  # what v1 was trained from


def test_the_answer_shows_the_models_citations_apart_from_attributed_ones():
    from datetime import datetime

    from assistant.storage import StoredMessage
    from assistant.storage.conversations import SourceRecord
    from ui.answers import attributed_mark, with_citations

    sources = tuple(
        SourceRecord(rank=n, chunk_id=n, document_name=f"doc{n}.txt", location=None, text=text,
                     score=0.5, cited=True)
        for n, text in enumerate((
            "The Zorblax festival is held every year in the town of Quillhaven, on the third of May.",
            "William, Duke of Normandy, conquered England in 1066 at the battle of Hastings.",
        ), start=1)
    )
    m = StoredMessage(id=1, conversation_id=1, role="assistant", created_at=datetime.now(),
                      content="", sources=sources)
    body, c, legend = with_citations(
        "It is held on the third of May [1]. William, Duke of Normandy, conquered England in 1066. "
        "When is the Zorblax festival held in Quillhaven?", m,
        question="When is the Zorblax festival held in Quillhaven?")
    # The model's marker as it wrote it; the attributed one grey, with its own sign.
    assert "third of May [1]." in body and f"in 1066 {attributed_mark(2)}." in body
    assert attributed_mark(1) not in body  # the echoed question is not attributed
    assert c.explicit == {1} and c.attributed == {2}
    assert legend == (f"[n]: cited by the model (source 1) · {attributed_mark(2)}: attributed, "
                      "not cited by the model (source 2)")
    assert with_citations("Plain.", StoredMessage(id=2, conversation_id=1, role="assistant",
                                                   created_at=datetime.now(), content=""))[2] is None


def test_an_answer_without_a_relevant_document_says_so(service):
    from assistant.storage.conversations import RETRIEVAL, AnswerRecord

    q = service.store.add_user_message(None, "What is 2 plus 2?")
    record = AnswerRecord("fake-model", "fake-v1", {}, 10, 5, 1.0, 1.0, retrieval="none relevant")
    service.store.add_assistant_message(q.conversation_id, "2 + 2 = 4.", record, reply_to_id=q.id)
    at = new_session({"conversation": str(q.conversation_id)})
    captions = " ".join(c.value for c in at.chat_message[1].caption)
    assert RETRIEVAL["none relevant"] in captions


# -- 9: an answer cut at the token limit says so and offers Continue --------------------------
def test_an_answer_cut_at_the_token_limit_says_so_and_continue_appends_to_it(service):
    at = new_session()
    at.number_input(key="max_new_tokens").set_value(3)
    send(at, "What is the capital of France?")
    [conv] = service.store.list_conversations()
    [_, answer] = service.store.messages(conv.id)
    assert answer.content == "Paris is the " and answer.record.cut_at_limit
    assert any("cut at the token limit" in c.value for c in at.caption)
    at.button(key=f"continue_{answer.id}").click()
    run_ok(at)
    [_, whole] = service.store.messages(conv.id)
    assert whole.id == answer.id and whole.content == "Paris is the capital of France. "
    assert bubbles(at)[-1] == ("assistant", "Paris is the capital of France.")
    assert not any("cut at the token limit" in c.value for c in at.caption)
    assert not [b for b in at.button if b.key == f"continue_{answer.id}"]
