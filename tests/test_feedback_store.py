"""Feedback signals beyond thumbs: alternatives (regenerate), choices, edits, tags."""

from __future__ import annotations

import pytest

from assistant.chat.service import ChatService
from assistant.engines.generation import GenerationParams
from tests.fakes import FakeGenerator

pytestmark = pytest.mark.both_databases  # SQLite and PostgreSQL (tests/conftest.py)

PARAMS = GenerationParams(temperature=0.7, top_p=0.9, max_new_tokens=20, system_prompt="")


@pytest.fixture
def service(store, settings):
    return ChatService(store, FakeGenerator(answer="First answer."), settings)


def answer(service: ChatService, conv, text: str):
    reply = service.send(conv, text, PARAMS)
    list(reply)
    return reply.message


def test_regenerate_keeps_every_version_and_shows_the_newest(service, store):
    a1 = answer(service, None, "Tell me a joke")
    service.generator.answer = "Second answer."
    reply = service.regenerate(a1.id, PARAMS)
    list(reply)
    a2 = reply.message
    assert a2.reply_to_id == a1.reply_to_id and a2.alternatives == (a1.id, a2.id)
    shown = store.messages(a1.conversation_id)
    assert [m.content.strip() for m in shown] == ["Tell me a joke", "Second answer."]
    everything = store.messages(a1.conversation_id, include_inactive=True)
    assert [m.content.strip() for m in everything] == [
        "Tell me a joke", "First answer.", "Second answer."]
    # The regenerated answer saw the same context as the first: no earlier answer leaked in.
    assert service.generator.prompts[-1] == service.generator.prompts[0]


def test_flip_between_versions_and_choose_the_best(service, store):
    a1 = answer(service, None, "Tell me a joke")
    service.generator.answer = "Second answer."
    r = service.regenerate(a1.id, PARAMS)
    list(r)
    store.set_active(a1.id)
    assert store.messages(a1.conversation_id)[1].id == a1.id
    store.choose(r.message.id)
    [_, shown] = store.messages(a1.conversation_id)
    assert shown.id == r.message.id and shown.chosen
    first = store.get_message(a1.id)
    assert not first.chosen and not first.active


def test_later_turns_continue_from_the_shown_and_edited_answer(service, store):
    a1 = answer(service, None, "Capital of France?")
    store.edit(a1.id, "  Paris.  ")
    store.edit(a1.id, "Paris.")  # unchanged edits are not recorded twice
    assert store.get_message(a1.id).edited == "Paris."
    assert store.get_message(a1.id).content.strip() == "First answer."  # the original stays
    answer(service, a1.conversation_id, "And of Italy?")
    prompt = service.generator.prompts[-1]
    assert [m["content"] for m in prompt] == ["Capital of France?", "Paris.", "And of Italy?"]


def test_bad_edits_and_choices_are_refused(service, store):
    a1 = answer(service, None, "hi")
    with pytest.raises(ValueError, match="empty"):
        store.edit(a1.id, "   ")
    with pytest.raises(ValueError):
        store.choose(a1.reply_to_id)  # a question, not an answer
    with pytest.raises(ValueError):
        service.regenerate(a1.reply_to_id, PARAMS)


def test_tags_are_normalised_and_kept_with_the_rating(service, store):
    a1 = answer(service, None, "hi")
    store.rate(a1.id, -1, "made up", tags=["Inaccurate", " wrong citation ", ""])
    m = store.get_message(a1.id)
    assert (m.rating, m.comment, m.tags) == (-1, "made up", ("inaccurate", "wrong citation"))


def test_regenerating_an_earlier_answer_keeps_the_thread_in_order(service, store):
    a1 = answer(service, None, "Q1")
    answer(service, a1.conversation_id, "Q2")
    service.generator.answer = "A1 again."
    again = service.regenerate(a1.id, PARAMS)
    list(again)
    assert service.generator.prompts[-1] == [{"role": "user", "content": "Q1"}]
    thread = [m.content.strip() for m in store.messages(a1.conversation_id)]
    assert thread == ["Q1", "A1 again.", "Q2", "First answer."]
    answer(service, a1.conversation_id, "Q3")
    assert [m["content"].strip() for m in service.generator.prompts[-1]] == [
        "Q1", "A1 again.", "Q2", "First answer.", "Q3"]


def test_repeating_the_same_edit_records_it_once(service, store, db):
    from sqlalchemy import func, select

    from assistant.storage.schema import Edit

    a1 = answer(service, None, "hi")
    store.edit(a1.id, "Better.")
    store.edit(a1.id, "Better.")
    with db.read() as s:
        assert s.scalar(select(func.count()).select_from(Edit)) == 1
