"""Regenerate, flip, choose the best, edit and tag answers in the chat page (AppTest)."""

from __future__ import annotations

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from assistant.storage import ConversationStore, Database
from tests.fake_app import APP, run_ok

pytestmark = pytest.mark.slow


@pytest.fixture
def at(env_settings):
    st.cache_resource.clear()
    app = AppTest.from_file(APP, default_timeout=180)
    app.run()
    app.slider(key="temperature").set_value(1.0)
    app.number_input(key="max_new_tokens").set_value(8)
    yield app
    st.cache_resource.clear()


@pytest.fixture
def store(env_settings):
    return ConversationStore(Database(env_settings.resolved_database_url))


def test_regenerate_flip_choose_edit_and_tag(at, store):
    at.chat_input(key="chat_input").set_value("Name a fruit.")
    run_ok(at)
    [conv] = store.list_conversations()
    [_, first] = store.messages(conv.id)

    at.button(key=f"regen_{first.id}").click()
    run_ok(at)
    [_, second] = store.messages(conv.id)
    assert second.id != first.id and second.alternatives == (first.id, second.id)
    assert at.caption and any(c.value == "2 / 2" for c in at.caption)

    at.button(key=f"alt_prev_{second.id}").click()
    run_ok(at)
    assert store.messages(conv.id)[1].id == first.id

    at.button(key=f"best_{first.id}").click()
    run_ok(at)
    shown = store.messages(conv.id)[1]
    assert shown.id == first.id and shown.chosen
    assert at.button(key=f"best_{first.id}").label == "Best ✓"

    at.text_area(key=f"edit_text_{first.id}").set_value("An apple.")
    at.button(key=f"edit_save_{first.id}").click()
    run_ok(at)
    assert store.get_message(first.id).edited == "An apple."
    assert at.chat_message[1].markdown[0].value == "An apple."

    at.text_area(key=f"edit_text_{first.id}").set_value("   ")
    at.button(key=f"edit_save_{first.id}").click()
    run_ok(at)
    assert "empty" in at.error[0].value
    assert store.get_message(first.id).edited == "An apple."

    at.pills(key=f"tags_{first.id}").set_value(["inaccurate", "too long"])
    at.feedback(key=f"fb_{first.id}").set_value(0)
    run_ok(at)
    m = store.get_message(first.id)
    assert (m.rating, m.tags) == (-1, ("inaccurate", "too long"))


def test_compare_mode_side_by_side_then_vote(at, store):
    at.toggle(key="compare_mode").set_value(True)
    at.chat_input(key="chat_input").set_value("Name a colour.")
    run_ok(at)
    [conv] = store.list_conversations()
    everything = store.messages(conv.id, include_inactive=True)
    assert [m.role for m in everything] == ["user", "assistant", "assistant"]
    assert [c.value for c in at.caption if c.value.startswith("Answer ")] == ["Answer A", "Answer B"]
    assert not any("base" in c.value for c in at.caption if "Compared" in c.value)

    cmp_id = next(b.key for b in at.button if b.key and b.key.startswith("vote_b_")).split("_")[-1]
    at.button(key=f"vote_b_{cmp_id}").click()
    run_ok(at)
    [_, shown] = store.messages(conv.id)
    assert shown.id == everything[2].id and shown.chosen
    verdict = [c.value for c in at.caption if "Compared" in c.value]
    assert verdict and "B won" in verdict[0] and "A: base, B: base" in verdict[0]
