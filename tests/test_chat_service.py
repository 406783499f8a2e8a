"""ChatService wiring: validation, persistence, stopping, trimming (fake generator)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from assistant.chat.service import ChatService
from assistant.errors import (
    AnswerTooLong, DatabaseLocked, EmptyMessage, GenerationFailed, MessageTooLong, NotAnAnswer,
)
from assistant.engines.generation import GenerationParams
from tests.fakes import FakeGenerator

PARAMS = GenerationParams(temperature=0.3, top_p=0.8, max_new_tokens=20, system_prompt="Be brief.")


@pytest.fixture
def fake():
    return FakeGenerator()


@pytest.fixture
def service(store, fake, settings):
    return ChatService(store, fake, settings)


def test_answer_is_streamed_and_stored_with_its_provenance(service, store):
    reply = service.send(None, "What is the capital of France?", PARAMS)
    chunks = list(reply)
    assert len(chunks) > 1 and "".join(chunks).strip() == "Paris is the capital of France."
    msgs = store.messages(reply.conversation_id)
    assert [m.role for m in msgs] == ["user", "assistant"]
    rec = msgs[1].record
    assert rec.model_id == "fake-model" and rec.model_version == "fake-v1"
    assert rec.params == {
        "temperature": 0.3, "top_p": 0.8, "max_new_tokens": 20, "system_prompt": "Be brief.",
        "repetition_penalty": 1.0,
    }
    assert rec.finish_reason == "stop" and not rec.cut_at_limit
    assert rec.completion_tokens == 6 and rec.prompt_tokens > 0
    assert rec.latency_ms >= 0 and rec.ttft_ms is not None and not rec.stopped
    assert reply.message == msgs[1]


def test_history_and_system_prompt_reach_the_model(service, fake):
    first = service.send(None, "Hello", PARAMS)
    list(first)
    list(service.send(first.conversation_id, "And again", PARAMS))
    prompt = fake.prompts[-1]
    assert [m["role"] for m in prompt] == ["system", "user", "assistant", "user"]
    assert prompt[0]["content"] == "Be brief." and prompt[-1]["content"] == "And again"


@pytest.mark.parametrize("text", ["", "   ", "\n\t "])
def test_empty_message_rejected_and_nothing_stored(service, store, text):
    with pytest.raises(EmptyMessage, match="empty"):
        service.send(None, text, PARAMS)
    assert store.counts() == {"conversations": 0, "messages": 0, "feedback": 0}


def test_message_longer_than_context_window_rejected_and_nothing_stored(service, store):
    reply = service.send(None, "hi", PARAMS)
    list(reply)
    before = store.counts()
    with pytest.raises(MessageTooLong, match="too long"):
        service.send(reply.conversation_id, "word " * 500, PARAMS)  # window is 200
    assert store.counts() == before


def test_message_over_character_limit_rejected_before_tokenizing(store, fake, settings):
    settings.max_message_chars = 50
    service = ChatService(store, fake, settings)
    with pytest.raises(MessageTooLong, match="characters"):
        service.send(None, "x" * 51, PARAMS)
    assert store.counts()["messages"] == 0


def test_long_history_is_trimmed_with_a_notice(service, store):
    conv = None
    for i in range(12):
        reply = service.send(conv, f"question number {i} " + "pad " * 10, PARAMS)
        list(reply)
        conv = reply.conversation_id
    assert reply.dropped_turns > 0
    assert reply.notices and "oldest" in reply.notices[0] and "200-token" in reply.notices[0]
    assert store.messages(conv)[-1].record.trimmed_turns == reply.dropped_turns
    assert len(store.messages(conv)) == 24  # trimming only affects the prompt


def test_stop_keeps_the_partial_answer_marked_stopped(store, settings):
    service = ChatService(store, FakeGenerator(answer="one two three four five six"), settings)
    reply = service.send(None, "count", PARAMS)
    it = iter(reply)
    assert next(it) == "one "
    assert next(it) == "two "
    reply.close()
    reply.close()  # idempotent
    [_, answer] = store.messages(reply.conversation_id)
    assert answer.content == "one two " and answer.record.stopped
    assert answer.record.completion_tokens == 2


def test_stop_before_any_token_stores_only_the_question(service, store):
    reply = service.send(None, "hi", PARAMS)
    reply.close()
    assert [m.role for m in store.messages(reply.conversation_id)] == ["user"]


def test_generation_failure_is_reported_and_question_kept(store, settings):
    service = ChatService(store, FakeGenerator(fail_after=2), settings)
    reply = service.send(None, "hi", PARAMS)
    with pytest.raises(RuntimeError):
        list(reply)
    msgs = store.messages(reply.conversation_id)
    # The partial text is kept (marked stopped), never silently passed off as complete.
    assert msgs[0].content == "hi"
    assert msgs[-1].role == "assistant" and msgs[-1].record.stopped


def test_locked_database_rejects_the_message_before_generating(service, store, db, fake, hold_lock):
    with hold_lock(db.where):
        with pytest.raises(DatabaseLocked):
            service.send(None, "hi", PARAMS)
    assert fake.prompts == []
    assert store.counts()["messages"] == 0


def test_generation_failed_is_a_domain_error():
    assert "Generation failed" in str(GenerationFailed("Generation failed: x"))


def test_close_from_another_thread_stores_the_partial_answer(store, settings):
    """A UI rerun closes the reply from a new thread while the old one still iterates."""
    import threading

    service = ChatService(store, FakeGenerator(answer="w " * 200, delay=0.01), settings)
    reply = service.send(None, "go", PARAMS)
    got: list[str] = []
    consumer = threading.Thread(target=lambda: got.extend(reply))
    consumer.start()
    while len(got) < 3 and consumer.is_alive():
        threading.Event().wait(0.005)
    reply.close()
    assert reply.done.wait(5)
    consumer.join(5)
    assert not consumer.is_alive()
    [_, answer] = store.messages(reply.conversation_id)
    assert answer.record.stopped and 3 <= answer.record.completion_tokens < 20


def test_closing_an_unstarted_reply_stops_generation(store, settings):
    fake = FakeGenerator()
    service = ChatService(store, fake, settings)
    reply = service.send(None, "hi", PARAMS)
    reply.close()
    assert reply.done.is_set() and list(reply) == []
    assert [m.role for m in store.messages(reply.conversation_id)] == ["user"]


def test_max_new_tokens_beyond_the_context_window_is_a_clear_error(service, store):
    params = replace(service.default_params(), max_new_tokens=service.generator.context_window)
    with pytest.raises(AnswerTooLong, match="lower it well below 200"):
        service.send(None, "Hello", params)
    assert store.list_conversations() == []


def test_an_answer_cut_at_the_token_limit_is_marked_and_continue_appends(service, store, fake):
    reply = service.send(None, "Capital?", replace(PARAMS, max_new_tokens=3))
    assert "".join(reply) == "Paris is the "
    cut = reply.message
    assert cut.record.finish_reason == "length" and cut.record.cut_at_limit
    more = service.continue_answer(cut.id)
    assert more.continues == cut
    assert fake.prompts[-1][-1] == {"role": "assistant", "content": "Paris is the "}
    assert fake.prompts[-1][:-1] == fake.prompts[0]  # the same prompt, the answer so far after it
    "".join(more)
    assert more.message.id == cut.id and more.message.content == "Paris is the capital of France. "
    assert more.message.record.completion_tokens == 6
    assert more.message.record.finish_reason == "stop" and not more.message.record.cut_at_limit
    assert len(store.messages(reply.conversation_id)) == 2
    with pytest.raises(NotAnAnswer, match="cut at the token limit"):
        service.continue_answer(cut.id)  # complete now


def test_the_settings_repetition_penalty_is_the_default(store, settings):
    service = ChatService(store, FakeGenerator(context_window=1000), settings)
    assert service.default_params().repetition_penalty == settings.generation.repetition_penalty > 1.0
    reply = service.send(None, "Capital?")
    "".join(reply)
    assert reply.message.record.params["repetition_penalty"] == settings.generation.repetition_penalty
