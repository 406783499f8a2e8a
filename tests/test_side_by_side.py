"""Compare mode's two answers read together (assistant.chat.side_by_side): at once when the engine
can generate both at once, one after the other otherwise; a failing side loses nothing.
The real engines are in test_engine_openai.py and test_engine_llamacpp.py."""

from __future__ import annotations

import threading

import pytest

from assistant.chat.service import ChatService
from assistant.errors import GenerationFailed, IncompleteComparison
from assistant.engines.generation import GenerationParams
from assistant.chat.side_by_side import interleave
from tests.fakes import FakeGenerator, FakeStream

GREEDY = GenerationParams(temperature=0.0, top_p=1.0, max_new_tokens=20, system_prompt="")


class Paired(FakeGenerator):
    """Streams that, after their first word, wait until the other stream has said its first
    word too: they can only end when both are read at once. Version "broken" then fails, as
    an engine whose server went away does; version "endless" goes on until it is stopped."""

    def __init__(self) -> None:
        super().__init__(answer="one two three four", streams=2)
        self.first_words: threading.Barrier | None = threading.Barrier(2, timeout=30)
        self.adapters = {"v2": "here", "broken": "here", "endless": "here"}

    def stream(self, messages, params, version=None) -> FakeStream:
        inner = super().stream(messages, params, version)
        barrier, name = self.first_words, inner.version

        class Stream(FakeStream):
            def __iter__(self):
                for i, word in enumerate(FakeStream.__iter__(self)):
                    yield word
                    if i == 0 and barrier is not None:
                        barrier.wait()
                    if name == "broken":
                        raise GenerationFailed("The model server went away.")
                    if name == "endless":
                        self._stop.wait(30)

        return Stream(" ".join(inner._words), 0, 0.0, None, name)


@pytest.fixture
def service(store, settings):
    return ChatService(store, Paired(), settings)


def test_at_once_both_answers_stream_before_either_ends(service):
    assert service.compare_at_once()
    a, b = service.compare(None, "Which?", GREEDY, versions=("fake-v1", "v2"))
    pieces = list(interleave((a, b), at_once=True))
    first_end = next(i for i, p in enumerate(pieces) if p.done)
    assert {p.side for p in pieces[:first_end] if p.text} == {0, 1}
    texts = ["".join(p.text for p in pieces if p.side == side) for side in (0, 1)]
    assert texts == [a.text, b.text] and {a.message.content, b.message.content} == {
        "one two three four ", "v2 one two three four "}
    assert {a.message.record.model_version, b.message.record.model_version} == {"fake-v1", "v2"}
    service.record_comparison(a, b)


def test_one_side_failing_keeps_the_other_and_is_not_compared(service, store):
    a, b = service.compare(None, "Which?", GREEDY, versions=("fake-v1", "broken"))
    pieces = list(interleave((a, b), at_once=True))
    failed = {p.side for p in pieces if p.error is not None}
    ok, bad = (a, b) if failed == {1} else (b, a)
    assert len(failed) == 1 and sorted(p.side for p in pieces if p.done) == [0, 1]
    assert ok.message.content == ok.text and ok.message.record.stopped is False
    # The failed side keeps what it said, marked stopped; the pair is not compared.
    assert bad.message.content == "broken " and bad.message.record.stopped
    with pytest.raises(IncompleteComparison):
        service.record_comparison(a, b)
    assert service.comparisons.for_conversation(a.conversation_id) == {}
    service.generator.first_words = None  # one answer now: nothing to wait for
    again = service.regenerate(bad.message.id, GREEDY)  # tried again as any answer is
    assert "".join(again).strip() == "one two three four"


def test_stopping_the_pair_stops_both_and_keeps_what_was_said(service):
    a, b = service.compare(None, "Which?", GREEDY, versions=("endless", "endless"))
    pieces = interleave((a, b), at_once=True)
    next(pieces)
    pieces.close()  # what a Stop does to the page's loop: it ends, and closes both replies
    assert a.done.wait(10) and b.done.wait(10)
    for reply in (a, b):
        assert reply.message is None or reply.message.record.stopped
    assert any(reply.message is not None for reply in (a, b))


def test_an_engine_that_answers_one_at_a_time_gets_a_then_b(store, settings):
    service = ChatService(store, FakeGenerator(answer="x y z"), settings)
    assert not service.compare_at_once()
    a, b = service.compare(None, "Which?", GREEDY)
    sides = [p.side for p in interleave((a, b), at_once=service.compare_at_once())]
    assert sides == [0, 0, 0, 0, 1, 1, 1, 1]  # three words and the end, twice
    assert a.message.content == b.message.content == "x y z "
