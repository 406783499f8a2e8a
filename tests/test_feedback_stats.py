import pytest

from assistant.chat.service import ChatService
from assistant.engines.generation import GenerationParams
from assistant.storage.stats import feedback_stats
from tests.fakes import FakeGenerator

pytestmark = pytest.mark.both_databases  # SQLite and PostgreSQL (tests/conftest.py)

P = GenerationParams(temperature=0.5, top_p=0.9, max_new_tokens=10, system_prompt="")


def test_counts_by_kind_version_day_and_tag(store, settings, db):
    svc = ChatService(store, FakeGenerator(answer="ok then"), settings)
    r1 = svc.send(None, "one", P)
    list(r1)
    r2 = svc.send(r1.conversation_id, "two", P)
    list(r2)
    store.rate(r1.message.id, 1, "nice")
    store.rate(r2.message.id, 1)
    store.rate(r2.message.id, -1, None, tags=["inaccurate"])  # the newest rating counts
    store.edit(r2.message.id, "better")
    again = svc.regenerate(r1.message.id, P)
    list(again)
    store.choose(again.message.id)
    a, b = svc.compare(None, "three", P)
    list(a)
    list(b)
    svc.comparisons.vote(svc.record_comparison(a, b).id, "tie")

    stats = feedback_stats(db)
    assert stats.by_kind == {"thumbs up": 1, "thumbs down": 1, "comments": 1, "edits": 1,
                             "best-of choices": 1, "compare votes": 1}
    assert stats.tags == {"inaccurate": 1}
    assert stats.by_version == {"fake-v1": {"answers": 5, "up": 1, "down": 1}}
    [(day, counts)] = stats.by_day.items()
    assert counts == {"up": 1, "down": 1, "edits": 1, "choices": 1, "votes": 1}


def test_empty_database(db):
    stats = feedback_stats(db)
    assert stats.by_kind == {} and stats.by_version == {} and stats.by_day == {}
