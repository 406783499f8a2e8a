"""Refusals of the stores are domain errors (AssistantError): the UI and the CLI show them
as messages. A ValueError that is not one is a bug, and surfaces as one."""

from __future__ import annotations

import pytest

from assistant.errors import (
    AssistantError,
    EmptyEdit,
    InvalidRating,
    InvalidVote,
    NotAnAnswer,
    Refused,
)
from assistant.storage.comparisons import ComparisonStore
from assistant.storage.conversations import AnswerRecord
from ui import state

RECORD = AnswerRecord(model_id="m", model_version="base", params={}, prompt_tokens=1,
                      completion_tokens=1, latency_ms=1.0, ttft_ms=1.0)


@pytest.mark.parametrize("refuse, error", [
    (lambda store, q, a: store.rate(q.id, 1), NotAnAnswer),
    (lambda store, q, a: store.rate(a.id, 5), InvalidRating),
    (lambda store, q, a: store.edit(a.id, "   "), EmptyEdit),
    (lambda store, q, a: store.edit(q.id, "better"), NotAnAnswer),
    (lambda store, q, a: store.choose(q.id), NotAnAnswer),
    (lambda store, q, a: ComparisonStore(store.db).vote(1, "c"), InvalidVote),
])
def test_store_refusals_are_domain_errors_that_change_nothing(store, refuse, error):
    q = store.add_user_message(None, "hi")
    a = store.add_assistant_message(q.conversation_id, "hello", RECORD)
    with pytest.raises(error) as caught:
        refuse(store, q, a)
    assert isinstance(caught.value, AssistantError) and isinstance(caught.value, Refused)
    assert "Nothing was" in str(caught.value)
    assert store.counts()["feedback"] == 0 and store.get_message(a.id).edited is None


def test_the_ui_shows_a_refusal_and_lets_a_bug_surface():
    def refused() -> None:
        raise EmptyEdit()

    def bug() -> None:
        raise ValueError("invalid literal for int() with base 10: 'x'")

    assert state.guard(refused) is state.FAILED
    with pytest.raises(ValueError, match="invalid literal"):
        state.guard(bug)
