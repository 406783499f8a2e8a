import pytest

from assistant.chat.service import ChatService
from assistant.engines.generation import GenerationParams
from assistant.storage.pairs import delete_pair, list_pairs
from tests.fakes import FakeGenerator

pytestmark = pytest.mark.both_databases  # SQLite and PostgreSQL (tests/conftest.py)

P = GenerationParams(temperature=0.5, top_p=0.9, max_new_tokens=10, system_prompt="")


def test_browse_and_delete_pairs(store, settings, db):
    svc = ChatService(store, FakeGenerator(answer="first"), settings)
    r = svc.send(None, "question", P)
    list(r)
    svc.generator.answer = "second"
    again = svc.regenerate(r.message.id, P)
    list(again)
    store.choose(again.message.id)
    store.edit(r.message.id, "a corrected answer")

    pairs = list_pairs(db)
    assert [p.kind for p in pairs] == ["edit", "choice"]
    edit, choice = pairs
    assert (edit.chosen, edit.rejected) == ("a corrected answer", ("first ",))
    assert (choice.question, choice.chosen.strip(), [x.strip() for x in choice.rejected]) == (
        "question", "second", ["first"])
    assert list_pairs(db, source="imports") == []
    assert list_pairs(db, model_version="other") == []

    assert delete_pair(db, "choice", choice.id)
    assert not delete_pair(db, "choice", choice.id)
    assert [p.kind for p in list_pairs(db)] == ["edit"]
    assert store.get_message(again.message.id).chosen is False
