"""Sources only when they are relevant: the retriever's gate on the embedding cosine, and
what the chat does without a relevant source (real embedded embedding model, real SQLite,
real FAISS; a stand-in generator: the wiring is under test, not the language model)."""

from __future__ import annotations

import pytest

from assistant.bootstrap import open_library
from assistant.chat.service import ChatService
from assistant.engines.generation import GenerationParams
from assistant.chat.prompting import SOURCES_INSTRUCTION
from assistant.storage.conversations import RETRIEVAL, DocumentChoice
from tests.fakes import FakeGenerator

HANDBOOK = """Sunrise Bakery staff handbook.
Opening hours: the shop opens at 6:30 and closes at 18:00, Monday to Saturday.
Bread: sourdough loaves are shaped the evening before and proofed overnight in the cold room.
Every baker washes their hands before touching dough and wears a hair net in the kitchen.
Holidays: ask the manager at least two weeks ahead; December is the busiest month.
"""
PARAMS = GenerationParams(temperature=0.0, top_p=1.0, max_new_tokens=30, system_prompt="Be brief.")


@pytest.fixture
def library(settings, db):
    lib = open_library(settings, db)
    assert lib.ingestor.ingest_bytes("handbook.txt", HANDBOOK.encode()).ok
    return lib


def chat(store, settings, library, answer: str = "4.") -> ChatService:
    return ChatService(store, FakeGenerator(answer=answer, context_window=2000), settings,
                       retriever=library.retriever)


@pytest.mark.both_databases  # the gate reads the index, the record goes to either database
def test_an_unrelated_question_gets_no_source_and_the_answer_says_so(store, settings, library):
    svc = chat(store, settings, library, "2 + 2 = 4.")
    reply = svc.send(None, "What is 2 plus 2?", PARAMS)
    assert "".join(reply).strip() == "2 + 2 = 4."
    # The model gets a plain chat prompt: no sources block, no instruction to cite.
    system, user = svc.generator.prompts[-1][0]["content"], svc.generator.prompts[-1][-1]["content"]
    assert user == "What is 2 plus 2?" and SOURCES_INSTRUCTION not in system
    assert reply.sources == [] and reply.retrieval == "none relevant"
    assert RETRIEVAL["none relevant"] in reply.notices
    answer = store.messages(reply.conversation_id)[-1]
    assert answer.sources == () and answer.record.retrieval == "none relevant"
    assert answer.record.retrieval in RETRIEVAL and "No document was used" in RETRIEVAL["none relevant"]


def test_a_question_the_document_answers_keeps_its_source(store, settings, library):
    svc = chat(store, settings, library, "The shop opens at 6:30.")
    reply = svc.send(None, "What time does the bakery open?", PARAMS)
    list(reply)
    assert [h.document_name for h in reply.sources] == ["handbook.txt"]
    assert reply.sources[0].similarity >= settings.retrieval.min_similarity
    assert "Sources:" in svc.generator.prompts[-1][-1]["content"] and not reply.notices
    answer = store.messages(reply.conversation_id)[-1]
    assert answer.record.retrieval == "used" and answer.sources[0].cited


def test_the_gate_is_a_setting_and_documents_off_is_told_apart(store, settings, library):
    off = settings.model_copy(update={"retrieval": settings.retrieval.model_copy(
        update={"min_similarity": 0.0})})
    ungated = ChatService(store, FakeGenerator(context_window=2000), off,
                          retriever=library.retriever.__class__(
                              library.store, library.embedder, library.index, off.retrieval))
    reply = ungated.send(None, "What is 2 plus 2?", PARAMS)
    list(reply)
    assert reply.sources and reply.retrieval == "used"  # the gate off: the best chunk, however poor
    svc = chat(store, settings, library)
    switched_off = svc.send(None, "What is 2 plus 2?", PARAMS, DocumentChoice(use_documents=False))
    list(switched_off)
    assert switched_off.retrieval == "off" and not switched_off.notices


def test_every_hit_carries_its_cosine_in_every_mode(library):
    for mode in ("hybrid", "dense", "lexical"):
        found = library.retriever.relevant("When does the shop open?", mode=mode, min_similarity=0.0)
        assert found.hits and all(-1.0 <= h.similarity <= 1.0 for h in found.hits), mode
        assert found.best_similarity == max(h.similarity for h in found.hits)
        assert library.retriever.relevant("What is 2 plus 2?", mode=mode).hits == [], mode
