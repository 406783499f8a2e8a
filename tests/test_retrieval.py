"""assistant.documents.retrieval on a small real corpus: the embedded MiniLM model, FAISS, SQLite FTS5
and PostgreSQL full-text search (the corpus is built on each).
Dense, lexical and hybrid search each find the obvious document; selections restrict every
mode; FTS syntax in a query is never interpreted; RRF computed by hand."""

from __future__ import annotations

import re
from types import SimpleNamespace

import pytest
import torch

from assistant.bootstrap import open_library
from assistant.config import Settings
from assistant.documents.index import VectorIndex
from assistant.documents.retrieval import Hit, Retriever, rrf
from assistant.storage import Database, upgrade
from assistant.storage.lexical import fts_query
from tests.conftest import DATABASES, fresh_database_url
from tests.test_parsing import make_pdf

DOCS = {
    "cooking.md": (
        "# Bread\n\n"
        "Mix flour, water, salt and a spoon of yeast into a soft dough. Knead the dough for ten "
        "minutes, then let it rise for two hours until it doubles. Bake the loaf in a hot oven.\n\n"
        "# Sauces\n\n"
        "A tomato sauce simmers slowly with garlic, basil and olive oil. Stir it now and then."
    ).encode(),
    "astronomy.txt": (
        "Jupiter is the largest planet in the solar system. It has dozens of moons, among them "
        "Ganymede, which is bigger than Mercury. Astronomers watch its storms through telescopes, "
        "and the Great Red Spot is a storm wider than the Earth."
    ).encode(),
    "tax.txt": (
        "Taxpayers who itemise may deduct charitable donations on their income tax return. "
        "Keep a receipt for every donation; gifts of property over 500 dollars need IRS Form 8283. "
        "The filing deadline is usually the fifteenth of April."
    ).encode(),
    "earth.pdf": make_pdf([
        "Volcanoes erupt when molten lava and ash escape from the magma chamber below.",
        "Glaciers are rivers of ice that carve deep valleys as they slowly move downhill.",
    ]),
}


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread while this module runs: it embeds one query at a time, where a
    second thread gains nothing and, on a busy 2-core machine, spin-waits ~10x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module", params=DATABASES)
def corpus(request, tmp_path_factory, one_thread):
    """The corpus on SQLite (FTS5) and on PostgreSQL (tsvector): every test below runs on both."""
    root = tmp_path_factory.mktemp("retrieval")
    with fresh_database_url(request.param, request, root) as url:
        settings = Settings(data_dir=root / "data", database_url=url)
        db = Database(settings.resolved_database_url, 5.0)
        upgrade(db)
        lib = open_library(settings, db)
        ids = {}
        for name, data in DOCS.items():
            result = lib.ingestor.ingest_bytes(name, data)
            assert result.status == "indexed", result.describe()
            ids[name] = result.document.id
        yield SimpleNamespace(lib=lib, ids=ids, root=root, settings=settings)
        db.dispose()


@pytest.fixture
def retriever(corpus) -> Retriever:
    return corpus.lib.retriever


def doc_of(corpus, hit: Hit) -> str:
    return next(name for name, i in corpus.ids.items() if i == hit.chunk.document_id)


MODES = ["dense", "lexical", "hybrid"]
OBVIOUS = [
    ("how long should the dough rise before baking", "cooking.md"),
    ("the moons of Jupiter", "astronomy.txt"),
    ("can I deduct charitable donations", "tax.txt"),
    ("lava erupting from volcanoes", "earth.pdf"),
]


# -- each mode finds the obvious document --------------------------------------------------------
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(("query", "expected"), OBVIOUS)
def test_each_mode_puts_the_right_document_first(corpus, retriever, mode, query, expected):
    hits = retriever.search(query, k=3, mode=mode)
    assert 1 <= len(hits) <= 3
    assert doc_of(corpus, hits[0]) == expected, [(doc_of(corpus, h), h.text[:40]) for h in hits]
    assert hits[0].document_name == expected
    scores = [h.score for h in hits]
    assert scores == sorted(scores, reverse=True)
    if mode == "dense":
        assert hits[0].dense_rank == 1 and hits[0].lexical_rank is None
    if mode == "lexical":
        assert hits[0].lexical_rank == 1 and hits[0].dense_rank is None


def test_hybrid_keeps_dense_hits_when_no_word_matches(corpus, retriever):
    query = "biggest gas giant orbiting the sun"
    hits = retriever.search(query, k=2, mode="hybrid")
    assert doc_of(corpus, hits[0]) == "astronomy.txt"


def test_hybrid_lifts_an_exact_rare_term_that_dense_search_misses(corpus, retriever):
    lexical = retriever.search("8283", k=3, mode="lexical")
    assert [doc_of(corpus, h) for h in lexical] == ["tax.txt"]
    hybrid = retriever.search("8283", k=3, mode="hybrid")
    assert doc_of(corpus, hybrid[0]) == "tax.txt"
    top = hybrid[0]
    assert top.lexical_rank == 1 and top.dense_rank is not None
    assert top.score == pytest.approx(1 / 61 + 1 / (60 + top.dense_rank))


def test_default_k_and_mode_come_from_settings(corpus, retriever):
    hits = retriever.search("dough and telescopes and donations and lava")
    assert len(hits) == corpus.settings.retrieval.top_k == 4
    assert all(h.dense_rank is not None or h.lexical_rank is not None for h in hits)


# -- restricting to documents --------------------------------------------------------------------
MIXED = "dough oven Jupiter telescopes donations receipt lava glaciers"


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("selected", [["tax.txt"], ["astronomy.txt", "earth.pdf"], ["cooking.md"]])
def test_document_ids_restrict_every_mode(corpus, retriever, mode, selected):
    ids = [corpus.ids[n] for n in selected]
    hits = retriever.search(MIXED, k=10, document_ids=ids, mode=mode)
    assert hits, "each selected document matches some word of the query"
    assert {doc_of(corpus, h) for h in hits} <= set(selected)
    if mode != "lexical":  # dense search ranks every chunk of the selection
        assert {doc_of(corpus, h) for h in hits} == set(selected)


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivf"])
def test_restriction_works_with_every_index_kind(corpus, kind):
    lib = corpus.lib
    index = VectorIndex(corpus.root / kind, lib.embedder.dim, kind, lib.embedder.name)
    index.rebuild(lib.store.iter_vectors())
    retriever = Retriever(lib.store, lib.embedder, index, corpus.settings.retrieval)
    unrestricted = retriever.search("the moons of Jupiter", k=1, mode="dense")
    assert doc_of(corpus, unrestricted[0]) == "astronomy.txt"
    hits = retriever.search("the moons of Jupiter", k=10, document_ids=[corpus.ids["tax.txt"]], mode="dense")
    assert hits and {doc_of(corpus, h) for h in hits} == {"tax.txt"}


@pytest.mark.parametrize("mode", MODES)
def test_empty_query_or_empty_selection_returns_nothing(corpus, retriever, mode):
    for query in ("", "   ", "\n\t"):
        assert retriever.search(query, mode=mode) == []
    assert retriever.search("bread dough", document_ids=[], mode=mode) == []
    assert retriever.search("bread dough", document_ids=[999_999], mode=mode) == []


def test_an_unknown_document_id_among_others_is_ignored(corpus, retriever):
    hits = retriever.search(MIXED, k=10, document_ids=[corpus.ids["tax.txt"], 999_999])
    assert hits and {doc_of(corpus, h) for h in hits} == {"tax.txt"}


# -- FTS syntax is never interpreted -------------------------------------------------------------
NASTY = [
    '"', '""', '"dough', 'dough"', "dough AND", "AND", "OR OR", "NOT dough", "dough NOT",
    "dough*", "*", "NEAR(dough rise", "NEAR(", "(dough", "dough)", "()", "^dough", "text:dough",
    "chunks_fts:dough", "-dough", "+dough", "dough OR", "' OR 1=1 --", "dough; DROP TABLE chunks",
    "{dough rise}", "dough:*", "\\", "%_", "\x00dough",
]


@pytest.mark.parametrize("query", NASTY)
def test_fts_syntax_in_a_query_is_harmless(corpus, retriever, query):
    store = corpus.lib.store
    before = store.chunk_count()
    for mode in ("lexical", "hybrid"):
        retriever.search(query, mode=mode)  # no exception
    lexical = store.lexical_search(query, 10)
    restricted = store.lexical_search(query, 10, document_ids=[corpus.ids["cooking.md"]])
    if "dough" in query:
        assert restricted
        assert store.chunks([lexical[0][0]])[lexical[0][0]].document_name == "cooking.md"
    if not re.search(r"[^\W_]", query):  # no word at all
        assert lexical == []
    # Operators are plain words: "AND" finds the chunks that contain the word "and".
    words = set(re.findall(r"[^\W_]+", query.lower()))
    for cid, _ in lexical:
        assert words & set(re.findall(r"[^\W_]+", store.chunks([cid])[cid].text.lower()))
    assert store.chunk_count() == before


def test_fts_query_quotes_every_word():
    assert fts_query('NEAR(bread "rise" AND yeast*') == '"near" OR "bread" OR "rise" OR "yeast"'
    # Stopwords match nearly every chunk: left out, unless the query has nothing else.
    assert fts_query("the history of the Normans") == '"history" OR "normans"'
    assert fts_query("to be or not to be") == '"to" OR "be" OR "or" OR "not"'
    assert fts_query("Bread bread BREAD") == '"bread"'
    assert fts_query("?!* ()") is None


# -- locations -----------------------------------------------------------------------------------
def test_hit_location_shows_page_and_heading(corpus, retriever):
    [lava] = retriever.search("lava from volcanoes", k=1)
    assert (lava.location, lava.chunk.page) == ("page 1", 1)
    [glacier] = retriever.search("glaciers of ice carving valleys", k=1)
    assert glacier.location == "page 2"
    [sauce] = retriever.search("tomato sauce with garlic and basil", k=1)
    assert (sauce.location, sauce.chunk.heading) == ("Sauces", "Sauces")
    [bread] = retriever.search("knead the dough", k=1)
    assert bread.location == "Bread"
    [tax] = retriever.search("filing deadline", k=1)
    assert tax.location is None and tax.document_name == "tax.txt"
    assert tax.chunk_id == tax.chunk.id and "April" in tax.text


def test_a_chunk_deleted_behind_the_index_is_skipped(settings, db, corpus):
    """The index can briefly hold ids the database no longer has (another process deleted
    the document): those hits are dropped, not raised."""
    lib = open_library(settings, db)
    keep = lib.ingestor.ingest_bytes("astronomy.txt", DOCS["astronomy.txt"]).document.id
    gone = lib.ingestor.ingest_bytes("tax.txt", DOCS["tax.txt"]).document.id
    lib.store.delete(gone)  # the database only; the index still has its chunks
    assert lib.index.ids() > lib.store.chunk_ids()
    for mode in MODES:
        hits = lib.retriever.search("charitable donations on the tax return", k=5, mode=mode)
        assert all(h.chunk.document_id == keep for h in hits)


# -- reciprocal rank fusion ----------------------------------------------------------------------
def test_rrf_by_hand():
    fused = rrf([[1, 2, 3], [3, 1]], k=60)
    # 1: 1/61 + 1/62 = 0.032522; 3: 1/63 + 1/61 = 0.032266; 2: 1/62 = 0.016129
    assert [i for i, _ in fused] == [1, 3, 2]
    assert [s for _, s in fused] == pytest.approx([1 / 61 + 1 / 62, 1 / 63 + 1 / 61, 1 / 62])
    assert fused[0][1] == pytest.approx(0.0325224, abs=1e-7)


def test_rrf_small_k_ties_and_empty():
    assert rrf([[10, 20, 30]], k=1) == [(10, 1 / 2), (20, 1 / 3), (30, 1 / 4)]
    # Equal scores: the lower id first, so results are deterministic.
    assert rrf([[7], [5]], k=60) == [(5, 1 / 61), (7, 1 / 61)]
    # Appearing in both lists beats the top of one list.
    assert [i for i, _ in rrf([[1, 2], [3, 2]], k=60)][0] == 2
    assert rrf([], k=60) == [] and rrf([[], []]) == []
