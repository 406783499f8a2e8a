"""The real embedded model through the app's own generation path."""

from __future__ import annotations

from dataclasses import replace

import pytest

from assistant.chat.service import ChatService
from assistant.engines.transformers import TransformersGenerator
from assistant.engines.generation import GenerationParams

pytestmark = pytest.mark.slow

GREEDY = GenerationParams(temperature=0.0, top_p=1.0, max_new_tokens=24, system_prompt="")


@pytest.fixture(scope="module")
def generator(embedded):
    return TransformersGenerator(embedded)


def test_greedy_answer_names_paris(generator):
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    stream = generator.stream(messages, GREEDY)
    chunks = list(stream)
    assert "Paris" in "".join(chunks)
    assert len(chunks) >= 3, "the answer must arrive in several chunks, not at once"
    s = stream.stats
    assert s.prompt_tokens == generator.count_prompt_tokens(messages)
    assert 0 < s.completion_tokens <= 24 and s.ttft_ms < s.latency_ms and not s.stopped


def test_stop_interrupts_generation(generator):
    stream = generator.stream(
        [{"role": "user", "content": "Write a very long story about a dragon."}],
        GenerationParams(temperature=0.0, top_p=1.0, max_new_tokens=400),
    )
    it = iter(stream)
    next(it)
    stream.stop()
    assert stream.stats.stopped and stream.stats.completion_tokens < 400


def test_sampling_parameters_are_applied(generator):
    msgs = [{"role": "user", "content": "Name a colour."}]
    p = GenerationParams(temperature=1.5, top_p=1.0, max_new_tokens=3)
    outs = {"".join(generator.stream(msgs, p)) for _ in range(6)}
    assert len(outs) > 1, "temperature 1.5 should not give six identical answers"
    assert all(len(o) < 40 for o in outs)  # max_new_tokens=3


def test_chat_service_on_the_real_model(store, settings, generator):
    service = ChatService(store, generator, settings)
    reply = service.send(None, "What is the capital of France?", GREEDY)
    text = "".join(reply)
    assert "Paris" in text
    [q, a] = store.messages(reply.conversation_id)
    assert a.content == text and a.record.model_id == generator.model_id
    assert a.record.prompt_tokens > 10 and a.record.completion_tokens > 3


def test_stop_while_queued_behind_another_answer(generator):
    """One worker: a second answer waits; stopping it drops it without blocking anyone."""
    long = GenerationParams(temperature=0.0, top_p=1.0, max_new_tokens=40)
    first = generator.stream([{"role": "user", "content": "Tell me a story."}], long)
    second = generator.stream([{"role": "user", "content": "Hi"}], long)
    second.stop()
    assert list(second) == []
    assert second.stats.stopped and second.stats.completion_tokens == 0
    assert "".join(first) and first.stats.completion_tokens > 0


def test_the_token_limit_and_the_repetition_penalty(generator):
    story = [{"role": "user", "content": "Write a very long story about a dragon."}]
    cut = generator.stream(story, GREEDY)
    plain = "".join(cut)
    assert cut.stats.finish_reason == "length" and cut.stats.completion_tokens == 24
    penalised = "".join(generator.stream(story, replace(GREEDY, repetition_penalty=1.3)))
    assert penalised != plain
    done = generator.stream([{"role": "user", "content": "What is 2 plus 2?"}], replace(GREEDY, max_new_tokens=64))
    "".join(done)
    assert done.stats.finish_reason == "stop" and done.stats.completion_tokens < 64


def test_the_penalty_looks_at_the_last_64_tokens_made_only():
    import torch

    from assistant.engines.transformers import _RecentRepetitionPenalty

    scores = torch.tensor([[2.0, -2.0, 2.0, 2.0, 1.0]])
    prompt = [3]  # the prompt's tokens are not penalised
    made = [0, 1, 1] + [4] * 64  # 0 and 1 fall out of the window
    out = _RecentRepetitionPenalty(2.0, len(prompt))(torch.tensor([prompt + made]), scores.clone())
    assert out.tolist() == [[2.0, -2.0, 2.0, 2.0, 0.5]]
    out = _RecentRepetitionPenalty(2.0, len(prompt))(torch.tensor([prompt + [0, 1]]), scores.clone())
    assert out.tolist() == [[1.0, -4.0, 2.0, 2.0, 1.0]]
