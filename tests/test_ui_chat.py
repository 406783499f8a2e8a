"""The chat page through streamlit.testing's AppTest, on the real embedded model."""

from __future__ import annotations

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from assistant.config import Settings
from assistant.storage import ConversationStore, Database
from tests.fake_app import APP

pytestmark = pytest.mark.slow


@pytest.fixture
def app(env_settings, monkeypatch):
    st.cache_resource.clear()  # resources are per process: rebuild them from this test's env

    def new_session() -> AppTest:
        at = AppTest.from_file(APP, default_timeout=180)
        at.run()
        assert not at.exception, at.exception
        return at

    yield new_session
    st.cache_resource.clear()


@pytest.fixture
def stored(env_settings):
    return ConversationStore(Database(env_settings.resolved_database_url))


def greedy(at: AppTest, max_new_tokens: int = 24, system: str | None = None) -> AppTest:
    at.slider(key="temperature").set_value(0.0)
    at.number_input(key="max_new_tokens").set_value(max_new_tokens)
    if system is not None:
        at.text_area(key="system_prompt").set_value(system)
    return at


def send(at: AppTest, text: str) -> AppTest:
    at.chat_input(key="chat_input").set_value(text).run()
    assert not at.exception, at.exception
    return at


def bubbles(at: AppTest) -> list[tuple[str, str]]:
    return [(cm.name, " ".join(m.value for m in cm.markdown)) for cm in at.chat_message]


def test_empty_state(app):
    at = app()
    assert at.title[0].value.endswith("Assistant")
    assert any("No conversations yet" in c.value for c in at.sidebar.caption)
    assert any("SmolLM2-135M-Instruct" in c.value for c in at.sidebar.caption)
    # the engine says how it runs on this CPU: llama.cpp its weight layout, checked at start;
    # transformers (without a llama.cpp build) its dtype and why
    engine = [c.value for c in at.sidebar.caption if c.value.startswith("Engine: ")]
    llama = any("llama.cpp" in c.value for c in at.sidebar.caption)
    assert len(engine) == 1
    assert ("weight layout, checked on this CPU" if llama else "on this CPU") in engine[0]


def test_send_rate_and_reopen(app, stored):
    at = greedy(app(), system="You are a concise assistant.")
    send(at, "What is the capital of France?")
    [(r1, q), (r2, a)] = bubbles(at)
    assert (r1, q) == ("user", "What is the capital of France?")
    assert r2 == "assistant" and "Paris" in a

    [conv] = stored.list_conversations()
    [_, answer] = stored.messages(conv.id)
    assert answer.record.params == {
        "temperature": 0.0, "top_p": 0.9, "max_new_tokens": 24,
        "system_prompt": "You are a concise assistant.",
        "repetition_penalty": Settings().generation.repetition_penalty,  # the default, applied
    }
    assert answer.record.completion_tokens > 0 and answer.record.latency_ms > 0

    at.text_input(key=f"comment_{answer.id}").set_value("short and right")
    at.feedback(key=f"fb_{answer.id}").set_value(1).run()
    assert stored.messages(conv.id)[1].rating == 1
    assert stored.messages(conv.id)[1].comment == "short and right"

    # A new browser session (as after a restart) reopens it from the sidebar.
    again = app()
    again.button(key=f"conv_{conv.id}").click().run()
    assert bubbles(again) == bubbles(at)
    assert again.feedback(key=f"fb_{answer.id}").value == 1
    assert again.text_input(key=f"comment_{answer.id}").value == "short and right"

    # Thumbs down replaces the shown rating; the history keeps both.
    again.feedback(key=f"fb_{answer.id}").set_value(0).run()
    assert stored.messages(conv.id)[1].rating == -1
    assert [r for r, _ in stored.feedback_history(answer.id)] == [1, -1]


def test_rename_and_delete(app, stored):
    at = greedy(app(), max_new_tokens=4)
    send(at, "Hello there")
    [conv] = stored.list_conversations()
    at.text_input(key=f"rename_title_{conv.id}").set_value("Greetings")
    at.button(key="rename").click().run()
    assert stored.get_conversation(conv.id).title == "Greetings"
    assert at.button(key=f"conv_{conv.id}").label == "Greetings"

    at.button(key="delete").click().run()
    assert stored.list_conversations() == []
    assert bubbles(at) == []
    assert any("No conversations yet" in c.value for c in at.sidebar.caption)


def test_whitespace_message_shows_error_and_stores_nothing(app, stored):
    at = send(app(), "   \n  ")
    assert "empty" in at.error[0].value
    assert stored.counts()["messages"] == 0


def test_message_longer_than_context_window(app, stored, monkeypatch):
    monkeypatch.setenv("ASSISTANT_CONTEXT_WINDOW", "300")
    at = greedy(app(), max_new_tokens=100)
    send(at, "word " * 400)
    assert "too long" in at.error[0].value
    assert stored.counts()["messages"] == 0


def test_locked_database_shows_error_and_stores_nothing(app, stored, hold_lock):
    at = greedy(app(), max_new_tokens=4)
    with hold_lock(stored.db.where):
        send(at, "Hello?")
        assert "locked by another process" in at.error[0].value
    assert stored.counts()["messages"] == 0
    send(at, "Hello again")  # works once the other process lets go
    assert stored.counts()["messages"] == 2


def test_missing_model_shows_error(app, monkeypatch, tmp_path):
    monkeypatch.setenv("ASSISTANT_MODEL", str(tmp_path / "nowhere"))
    at = app()
    assert "does not exist" in at.error[0].value
    assert not at.chat_input


def test_corrupt_model_cache_is_rebuilt_and_the_user_told(app, monkeypatch, tmp_path,
                                                          embedded_checkpoint):
    import shutil

    from assistant.engines.model_files import cache_dir_for, embedded_gguf

    cache_root = tmp_path / "models"
    broken = cache_dir_for(embedded_gguf(), cache_root)
    shutil.copytree(embedded_checkpoint, broken)
    (broken / "model.safetensors").write_bytes(b"not a safetensors file")
    monkeypatch.setenv("ASSISTANT_MODEL_CACHE_DIR", str(cache_root))
    # The cache is the transformers engine's (llama.cpp serves the GGUF file itself).
    monkeypatch.setenv("ASSISTANT_ENGINE", "transformers")
    at = app()
    assert "could not be read" in at.info[0].value and "rebuilt" in at.info[0].value
    send(greedy(at), "What is the capital of France?")
    assert "Paris" in bubbles(at)[1][1]
