"""Compare mode: two answers side by side, one vote, the winner becomes a preference."""

from __future__ import annotations

import threading

import pytest

from assistant.chat.service import ChatService
from assistant.errors import AlreadyVoted
from assistant.engines.generation import GenerationParams
from assistant.storage import Database
from assistant.storage.comparisons import ComparisonStore
from tests.fakes import FakeGenerator

pytestmark = pytest.mark.both_databases  # SQLite and PostgreSQL (tests/conftest.py)

GREEDY = GenerationParams(temperature=0.0, top_p=1.0, max_new_tokens=20, system_prompt="")


@pytest.fixture
def service(store, settings):
    return ChatService(store, FakeGenerator(answer="An answer."), settings)


def compared(service: ChatService):
    a, b = service.compare(None, "Which is better?", GREEDY)
    list(a)
    list(b)
    return a, b, service.record_comparison(a, b)


def test_two_answers_to_one_question_then_one_vote(service, store):
    a, b, cmp = compared(service)
    assert a.question.id == b.question.id == cmp.question_id
    assert a.params.temperature == 0.7  # greedy twice would give the same answer twice
    all_msgs = store.messages(a.conversation_id, include_inactive=True)
    assert [m.role for m in all_msgs] == ["user", "assistant", "assistant"]

    voted = service.comparisons.vote(cmp.id, "a")
    assert voted.vote == "a" and voted.voted_at is not None
    [_, shown] = store.messages(a.conversation_id)
    assert shown.id == a.message.id and shown.chosen

    with pytest.raises(AlreadyVoted, match="already decided"):
        service.comparisons.vote(cmp.id, "b")
    assert service.comparisons.get(cmp.id).vote == "a"
    [outcome] = service.comparisons.outcomes()
    assert (outcome.a_version, outcome.b_version, outcome.vote) == ("fake-v1", "fake-v1", "a")


@pytest.mark.parametrize("vote", ["tie", "both_bad"])
def test_tie_and_both_bad_choose_nothing(service, store, vote):
    a, _, cmp = compared(service)
    service.comparisons.vote(cmp.id, vote)
    assert not any(m.chosen for m in store.messages(a.conversation_id, include_inactive=True))


def test_bad_vote_value_is_refused(service):
    _, _, cmp = compared(service)
    with pytest.raises(ValueError):
        service.comparisons.vote(cmp.id, "c")
    assert service.comparisons.get(cmp.id).vote is None


def test_two_sessions_voting_at_once_count_once(service, settings):
    _, _, cmp = compared(service)
    results: list[str] = []
    barrier = threading.Barrier(2)

    def session(vote: str) -> None:
        store = ComparisonStore(Database(settings.resolved_database_url, 5.0))
        barrier.wait()
        try:
            store.vote(cmp.id, vote)
            results.append(f"won:{vote}")
        except AlreadyVoted:
            results.append("refused")

    threads = [threading.Thread(target=session, args=(v,)) for v in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(r.split(":")[0] for r in results) == ["refused", "won"]
    final = service.comparisons.get(cmp.id).vote
    assert f"won:{final}" in results
