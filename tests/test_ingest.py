"""assistant.documents.ingest end to end with real parts: the embedded MiniLM model, SQLite (with its
FTS5 table) and FAISS in a temp dir, wired by ``open_library`` as the app does."""

from __future__ import annotations

import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from sqlalchemy import text

from assistant.bootstrap import Library, open_library
from assistant.config import Settings
from assistant.documents.embedding import Embedder
from assistant.errors import DocumentNotFound
from assistant.documents.index import INDEX_FILE, META_FILE, VectorIndex
from assistant.documents.index_sync import catch_up, sync_index
from assistant.documents.ingest import Ingestor, find_files
from assistant.storage.documents import DocumentStore
from tests.test_parsing import encrypt_pdf, make_pdf

COOKING = (
    "To bake sourdough bread, mix flour, water and salt with an active starter. "
    "Knead the dough until it is smooth, then let it rise overnight in a cool kitchen. "
    "Bake the loaf in a very hot oven until the crust is deep brown."
)
ASTRONOMY = (
    "Jupiter is the largest planet of the solar system and has dozens of moons. "
    "Astronomers observe its storms with telescopes. "
    "The Great Red Spot is a storm larger than the Earth."
)
TAX = (
    "Taxpayers may deduct charitable donations when they itemise deductions on the income "
    "tax return. Keep receipts for every donation. The filing deadline is usually in April."
)


@pytest.fixture(scope="module")
def embedder():
    """Loads the model once: later ``Embedder()`` calls (open_library's) reuse the warm files.

    One intra-op thread while this module runs: it embeds a few sentences at a time, where a
    second thread gains nothing and, on a busy 2-core machine, spin-waits ~10x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield Embedder()
    torch.set_num_threads(threads)


@pytest.fixture
def open_lib(settings, db, embedder):
    def opener(s: Settings = settings, **kw) -> Library:
        return open_library(s, db, **kw)

    return opener


@pytest.fixture
def lib(open_lib) -> Library:
    return open_lib()


def with_retrieval(settings: Settings, **changes) -> Settings:
    return settings.model_copy(update={"retrieval": settings.retrieval.model_copy(update=changes)})


def fts_consistent(db) -> None:
    """FTS5's own check that the external-content index matches the chunks table."""
    with db.write() as s:
        s.execute(text("INSERT INTO chunks_fts(chunks_fts, rank) VALUES ('integrity-check', 1)"))


def document_count(db) -> int:
    with db.read() as s:
        return s.execute(text("SELECT count(*) FROM documents")).scalar_one()


def assert_in_step(lib: Library) -> None:
    """DB chunks == index ids (in memory and on disk), and the FTS table agrees with both."""
    db_ids = lib.store.chunk_ids()
    assert lib.index.ids() == db_ids
    assert VectorIndex(lib.index.directory, lib.index.dim, lib.index.kind, lib.index.model_name).ids() == db_ids
    fts_consistent(lib.store.db)


def best_chunk(lib: Library, query: str) -> int:
    return lib.index.search(lib.embedder.encode([query])[0], 1)[0][0]


# -- happy path ----------------------------------------------------------------------------------
def test_ingest_text_and_markdown(lib):
    r1 = lib.ingestor.ingest_bytes("bread.txt", COOKING.encode())
    md = "# Space\n\n## Jupiter\n\n" + ASTRONOMY + "\n\n## Taxes\n\n" + TAX
    r2 = lib.ingestor.ingest_bytes("notes.md", md.encode())

    assert (r1.status, r1.name, r1.ok, r1.error) == ("indexed", "bread.txt", True, None)
    assert (r2.status, r2.document.kind) == ("indexed", "markdown")
    assert r1.chunks >= 1 and r2.chunks >= 2
    assert r1.document.size_bytes == len(COOKING.encode())
    assert r1.document.embed_model == "all-MiniLM-L6-v2"
    assert "indexed" in r1.describe() and "chunks" in r1.describe()
    assert lib.store.chunk_count() == r1.chunks + r2.chunks
    assert_in_step(lib)

    chunks = lib.store.document_chunks(r2.document.id)
    assert {c.heading for c in chunks} == {"Space > Jupiter", "Space > Taxes"}
    assert [c.position for c in chunks] == list(range(len(chunks)))
    # What went in is findable both ways, and the stored vectors are the model's.
    [jupiter] = [c for c in chunks if c.heading == "Space > Jupiter"]
    assert best_chunk(lib, "the biggest planet and its moons") == jupiter.id
    assert jupiter.id in {cid for cid, _ in lib.store.lexical_search("telescopes", 5)}
    [(ids, vecs)] = list(lib.store.iter_vectors())
    stored = dict(zip(ids.tolist(), vecs))
    np.testing.assert_allclose(stored[jupiter.id], lib.embedder.encode([jupiter.text])[0], atol=1e-5)


def test_pdf_chunks_keep_their_page(lib):
    data = make_pdf(["Volcanoes erupt molten lava and ash.", "Glaciers carve valleys of ice."])
    result = lib.ingestor.ingest_bytes("earth.pdf", data)
    assert result.status == "indexed"
    pages = {c.page: c.text for c in lib.store.document_chunks(result.document.id)}
    assert set(pages) == {1, 2}
    assert "lava" in pages[1] and "Glaciers" in pages[2]


def test_duplicate_content_is_recognised_and_not_indexed_twice(lib):
    first = lib.ingestor.ingest_bytes("bread.txt", COOKING.encode())
    count, ids = lib.store.chunk_count(), lib.index.ids()

    for name in ("bread.txt", "copy of bread.txt"):
        again = lib.ingestor.ingest_bytes(name, COOKING.encode())
        assert again.status == "duplicate" and again.ok
        assert again.document.id == first.document.id
        assert again.document.name == "bread.txt"
        assert "already stored as 'bread.txt'" in again.describe()
    assert lib.store.chunk_count() == count
    assert lib.index.ids() == ids and len(lib.index) == len(ids)
    assert document_count(lib.store.db) == 1


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivf"])
def test_same_name_with_new_content_replaces_the_old_version(settings, open_lib, kind):
    lib = open_lib(with_retrieval(settings, index_type=kind))
    lib.ingestor.ingest_bytes("bread.txt", COOKING.encode())
    old = lib.ingestor.ingest_bytes("report.txt", b"The zebra herd crossed the savanna at dawn.")
    old_ids = {c.id for c in lib.store.document_chunks(old.document.id)}

    new = lib.ingestor.ingest_bytes("report.txt", b"A giraffe ate leaves from the tallest acacia tree.")
    assert new.status == "replaced" and "replaced the earlier version" in new.describe()
    new_chunks = lib.store.document_chunks(new.document.id)
    new_ids = {c.id for c in new_chunks}

    with pytest.raises(DocumentNotFound):
        lib.store.get(old.document.id)
    assert [d.name for d in lib.store.list_documents()] == ["report.txt", "bread.txt"]
    # The old chunks are gone from the database, the FTS table and the index ...
    assert not old_ids & lib.store.chunk_ids()
    assert not old_ids & lib.index.ids()
    assert lib.store.lexical_search("zebra savanna", 10) == []
    assert_in_step(lib)
    # ... and the new ones are there, with their own vectors.
    assert {cid for cid, _ in lib.store.lexical_search("giraffe", 10)} == new_ids
    for c in new_chunks:
        (hit, score), *_ = lib.index.search(lib.embedder.encode([c.text])[0], 3)
        assert hit == c.id and score == pytest.approx(1.0, abs=1e-4)


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivf"])
def test_delete_removes_chunks_everywhere(settings, open_lib, kind):
    lib = open_lib(with_retrieval(settings, index_type=kind))
    keep = lib.ingestor.ingest_bytes("bread.txt", COOKING.encode())
    gone = lib.ingestor.ingest_bytes("space.txt", ASTRONOMY.encode())
    gone_ids = {c.id for c in lib.store.document_chunks(gone.document.id)}
    assert lib.store.lexical_search("Jupiter", 5)

    lib.ingestor.delete(gone.document.id)

    assert not gone_ids & lib.store.chunk_ids()
    assert not gone_ids & lib.index.ids()
    assert lib.store.lexical_search("Jupiter telescopes", 5) == []
    assert_in_step(lib)
    assert [d.id for d in lib.store.list_documents()] == [keep.document.id]
    assert lib.store.lexical_search("sourdough", 5)
    with pytest.raises(DocumentNotFound):
        lib.ingestor.delete(gone.document.id)


# -- bad inputs ----------------------------------------------------------------------------------
BAD_FILES = {
    "empty.txt": (b"", "empty"),
    "huge.txt": (b"All work and no play. " * 2000, "is 0.042 MB, over the 0.02 MB limit"),
    "photo.txt": (bytes(range(256)) * 40, "binary"),
    "locked.pdf": (encrypt_pdf(make_pdf(["Top secret plans."]), user_password="hunter2"), "encrypted"),
    "broken.pdf": (make_pdf(["Some text here."] * 3)[:700], "not a readable PDF"),
    "program.exe": (b"MZ\x90\x00 this is not a document", "unsupported file type '.exe'"),
    "spaces.txt": (b"   \n\n\t  \n", "no text"),
}


@pytest.mark.parametrize("name", list(BAD_FILES))
def test_a_bad_upload_fails_alone_and_leaves_nothing(settings, open_lib, name):
    lib = open_lib(with_retrieval(settings, max_upload_mb=0.02))
    data, reason = BAD_FILES[name]

    result = lib.ingestor.ingest_bytes(name, data)

    assert (result.status, result.ok, result.name, result.document, result.chunks) == (
        "failed", False, name, None, 0
    )
    assert result.error.startswith(f"{name}: ") and reason in result.error
    assert result.describe() == result.error
    assert (document_count(lib.store.db), lib.store.chunk_count(), len(lib.index)) == (0, 0, 0)
    assert lib.store.lexical_search("plans work play document", 10) == []
    # The library is unharmed: the next file goes in.
    after = lib.ingestor.ingest_bytes("after.txt", COOKING.encode())
    assert after.status == "indexed"
    assert [d.name for d in lib.store.list_documents()] == ["after.txt"]
    assert lib.store.chunk_count() == after.chunks
    assert_in_step(lib)


def test_a_batch_of_files_with_bad_ones_still_ingests_the_good_ones(settings, open_lib, tmp_path):
    lib = open_lib(with_retrieval(settings, max_upload_mb=0.02))
    folder = tmp_path / "uploads"
    folder.mkdir()
    paths = []
    for i, (name, (data, _)) in enumerate(BAD_FILES.items()):
        good = folder / f"good{i}.txt"
        good.write_text(f"Document number {i} is about topic {i}. " + COOKING if i % 2 else TAX + f" Form {i}.")
        (folder / name).write_bytes(data)
        paths += [good, folder / name]

    results = lib.ingestor.ingest_paths(paths)

    assert [r.name for r in results] == [p.name for p in paths]
    by_name = {r.name: r for r in results}
    for name, (_, reason) in BAD_FILES.items():
        assert by_name[name].status == "failed", name
        assert by_name[name].error.startswith(f"{name}: ") and reason in by_name[name].error
    goods = [r for r in results if r.name.startswith("good")]
    assert all(r.status == "indexed" for r in goods)
    assert {d.name for d in lib.store.list_documents()} == {r.name for r in goods}
    assert lib.store.chunk_count() == sum(r.chunks for r in goods)
    assert_in_step(lib)


def test_a_path_in_the_name_is_stored_under_its_safe_name(lib):
    result = lib.ingestor.ingest_bytes("../../etc/secret plans.txt", COOKING.encode())
    assert (result.status, result.name, result.document.name) == ("indexed", "secret plans.txt", "secret plans.txt")
    assert [d.name for d in lib.store.list_documents()] == ["secret plans.txt"]
    failed = lib.ingestor.ingest_bytes("..\\..\\boot.ini", b"[boot loader]")
    assert failed.name == "boot.ini" and failed.error.startswith("boot.ini: ")


def test_unreadable_path_is_a_failed_result(lib, tmp_path):
    [result] = lib.ingestor.ingest_paths([tmp_path / "no-such-file.txt"])
    assert result.status == "failed" and result.name == "no-such-file.txt"
    assert result.error.startswith("no-such-file.txt: ")
    assert lib.store.chunk_count() == 0


def test_ingest_paths_recurses_into_folders_and_skips_hidden_files(lib, tmp_path):
    root = tmp_path / "docs"
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / ".git").mkdir()
    (root / "a.txt").write_text(COOKING)
    (root / "sub" / "b.md").write_text("# Space\n\n" + ASTRONOMY)
    (root / "sub" / "deeper" / "c.TXT").write_text(TAX)
    (root / ".hidden.txt").write_text("A hidden note about secret things.")
    (root / "sub" / ".draft.md").write_text("A hidden draft.")
    (root / ".git" / "notes.txt").write_text("Inside a hidden folder.")
    (root / "sub" / "image.png").write_bytes(b"\x89PNG\r\n\x1a\n")

    assert [p.name for p in find_files([root])] == ["a.txt", "b.md", "c.TXT"]
    results = lib.ingestor.ingest_paths([root])
    assert [(r.name, r.status) for r in results] == [("a.txt", "indexed"), ("b.md", "indexed"), ("c.TXT", "indexed")]
    assert lib.store.lexical_search("hidden secret draft", 10) == []
    assert_in_step(lib)


# -- crash recovery ------------------------------------------------------------------------------
def test_a_crash_between_db_commit_and_index_save_is_repaired_at_start(settings, db, open_lib, tmp_path):
    lib = open_lib()
    lib.ingestor.ingest_bytes("bread.txt", COOKING.encode())
    backup = tmp_path / "index-backup"
    shutil.copytree(settings.index_dir, backup)
    second = lib.ingestor.ingest_bytes("space.txt", ASTRONOMY.encode())
    # The process "died" after the commit of space.txt, before its index was written.
    shutil.rmtree(settings.index_dir)
    shutil.copytree(backup, settings.index_dir)

    fresh = open_lib()
    assert not fresh.sync.ok
    assert (fresh.sync.missing, fresh.sync.stale, fresh.sync.model_mismatch) == (second.chunks, 0, False)
    assert len(fresh.notices) == 1 and "rebuilt" in fresh.notices[0]
    assert f"{second.chunks} chunks missing" in fresh.notices[0]
    assert_in_step(fresh)
    assert fresh.store.document_chunks(second.document.id)[0].id == best_chunk(fresh, "Jupiter's moons")
    # The repair was saved: the next start finds nothing to do.
    again = open_lib()
    assert again.sync.ok and again.notices == []


def test_lost_index_files_are_rebuilt_from_the_database(settings, open_lib):
    lib = open_lib()
    for name, body in (("a.txt", COOKING), ("b.txt", ASTRONOMY), ("c.txt", TAX)):
        lib.ingestor.ingest_bytes(name, body.encode())
    n = lib.store.chunk_count()
    for name in (INDEX_FILE, META_FILE):
        (settings.index_dir / name).unlink()

    fresh = open_lib()
    assert (fresh.sync.ok, fresh.sync.in_db, fresh.sync.in_index, fresh.sync.missing) == (False, n, 0, n)
    assert "rebuilt" in fresh.notices[0]
    assert_in_step(fresh)


def test_a_crash_during_delete_leaves_stale_ids_that_are_dropped_at_start(open_lib):
    lib = open_lib()
    lib.ingestor.ingest_bytes("a.txt", COOKING.encode())
    gone = lib.ingestor.ingest_bytes("b.txt", ASTRONOMY.encode())
    lib.store.delete(gone.document.id)  # committed; the index was never told

    fresh = open_lib()
    assert (fresh.sync.ok, fresh.sync.missing, fresh.sync.stale) == (False, 0, gone.chunks)
    assert "rebuilt" in fresh.notices[0]
    assert_in_step(fresh)


def test_a_crash_during_replace_is_detected_at_start(settings, open_lib, tmp_path):
    lib = open_lib()
    lib.ingestor.ingest_bytes("a.txt", COOKING.encode())
    lib.ingestor.ingest_bytes("report.txt", b"The zebra herd crossed the savanna at dawn.")
    backup = tmp_path / "index-backup"
    shutil.copytree(settings.index_dir, backup)
    new = lib.ingestor.ingest_bytes("report.txt", b"A giraffe ate leaves from the tallest acacia tree.")
    assert new.status == "replaced"
    shutil.rmtree(settings.index_dir)
    shutil.copytree(backup, settings.index_dir)

    fresh = open_lib()
    # The on-disk index still holds the zebra vectors: whatever ids they have, start-up must
    # not take them for the giraffe chunks.
    assert not fresh.sync.ok
    assert_in_step(fresh)
    [giraffe] = fresh.store.document_chunks(new.document.id)
    (hit, score), *_ = fresh.index.search(fresh.embedder.encode([giraffe.text])[0], 1)
    assert hit == giraffe.id and score == pytest.approx(1.0, abs=1e-4)


def test_open_library_without_repair_only_reports(settings, open_lib):
    lib = open_lib()
    lib.ingestor.ingest_bytes("a.txt", COOKING.encode())
    (settings.index_dir / INDEX_FILE).unlink()
    looked = open_lib(repair=False)
    assert not looked.sync.ok and looked.sync.missing == looked.sync.in_db > 0
    assert looked.notices == [] and len(looked.index) == 0


class OtherModel:
    """Stands in for an earlier embedding model: same dimension, unrelated vectors. It is
    handed to the real Ingestor and VectorIndex exactly as the real Embedder is."""

    name = "old-embedding-model"

    def __init__(self, real: Embedder) -> None:
        self.dim, self.max_tokens = real.dim, real.max_tokens
        self.tokenizer, self.count_tokens = real.tokenizer, real.count_tokens
        self._rng = np.random.default_rng(0)

    def encode(self, texts, **_) -> np.ndarray:
        v = self._rng.standard_normal((len(texts), self.dim)).astype(np.float32)
        return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_an_index_from_another_embedding_model_is_re_embedded(settings, db, embedder, open_lib):
    old = OtherModel(embedder)
    store = DocumentStore(db)
    old_index = VectorIndex(settings.index_dir, old.dim, settings.retrieval.index_type, old.name)
    ingestor = Ingestor(store, old, old_index, settings.retrieval)
    docs = {}
    for name, body in (("bread.txt", COOKING), ("space.txt", ASTRONOMY), ("tax.txt", TAX)):
        docs[name] = ingestor.ingest_bytes(name, body.encode()).document.id
    assert store.embed_models() == {old.name}
    assert VectorIndex(settings.index_dir, old.dim, "flat", old.name).ids() == store.chunk_ids()

    lib = open_lib()

    assert lib.sync.model_mismatch and not lib.sync.ok
    assert "other embedding model" in lib.notices[0]
    assert store.embed_models() == {"all-MiniLM-L6-v2"}
    assert {d.embed_model for d in store.list_documents()} == {"all-MiniLM-L6-v2"}
    assert_in_step(lib)
    # The stored vectors are now the real model's, so dense search finds the right text.
    for ids, vecs in store.iter_vectors():
        texts = store.chunks(ids.tolist())
        expected = embedder.encode([texts[i].text for i in ids.tolist()])
        np.testing.assert_allclose(vecs, expected, atol=1e-5)
    hits = lib.retriever.search("Which planet has many moons?", k=1, mode="dense")
    assert hits[0].chunk.document_id == docs["space.txt"]
    assert open_lib().sync.ok


def test_sync_index_reports_what_it_found_and_repairs(settings, db, embedder, open_lib):
    lib = open_lib()
    lib.ingestor.ingest_bytes("a.txt", COOKING.encode())
    lib.index.rebuild([])  # in memory only: the index lost everything
    report = sync_index(lib.store, lib.index, embedder)
    assert (report.ok, report.missing) == (False, lib.store.chunk_count())
    assert sync_index(lib.store, lib.index, embedder).ok
    assert_in_step(lib)


def test_settings_limit_is_checked_before_reading_a_large_file(settings, open_lib, tmp_path):
    lib = open_lib(with_retrieval(settings, max_upload_mb=0.001))
    big = tmp_path / "big.txt"
    big.write_text("x" * 5000)
    [result] = lib.ingestor.ingest_paths([big])
    assert result.status == "failed" and "over the 0.001 MB limit" in result.error
    assert lib.store.chunk_count() == 0 and document_count(lib.store.db) == 0


# -- another process changes the documents -----------------------------------------------------
def _cli(*args: str) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "assistant.cli", *args], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def test_documents_ingested_by_another_process_are_found_by_the_app(env_settings, open_lib, tmp_path):
    """`assistant ingest` in a terminal while the app runs: the app's in-memory FAISS index
    catches up from the database (which holds every vector) at its next search, and drops
    what the other process deleted."""
    app = open_lib()
    app.ingestor.ingest_bytes("bread.txt", COOKING.encode())
    (tmp_path / "space.txt").write_text(ASTRONOMY, encoding="utf-8")
    before = len(app.index)

    _cli("ingest", str(tmp_path / "space.txt"))  # another process, same database

    [hit] = app.retriever.search("telescopes and Jupiter's moons", k=1, mode="dense")
    assert hit.document_name == "space.txt"
    assert len(app.index) > before and app.index.ids() == app.store.chunk_ids()
    assert catch_up(app.store, app.index) == (0, 0)  # caught up: nothing more to do

    [doc] = [d for d in app.store.list_documents() if d.name == "space.txt"]
    _cli("documents", "delete", str(doc.id))
    hits = app.retriever.search("telescopes and Jupiter's moons", k=5, mode="dense")
    assert hits and all(h.document_name == "bread.txt" for h in hits)
    assert app.index.ids() == app.store.chunk_ids()


def test_catching_up_after_an_own_ingest_adds_nothing_twice(lib):
    lib.ingestor.ingest_bytes("bread.txt", COOKING.encode())
    assert catch_up(lib.store, lib.index) == (0, 0)
    lib.ingestor.ingest_bytes("space.txt", ASTRONOMY.encode())
    catch_up(lib.store, lib.index)
    assert len(lib.index) == len(lib.store.chunk_ids())  # no id in the index twice


def test_reembedding_leaves_the_database_writable(settings, lib):
    """`assistant index rebuild --reembed` embeds one document at a time outside any write
    transaction: another process saving an answer meanwhile is not locked out (with one
    transaction for the whole corpus it waited out its busy timeout: DatabaseLocked)."""
    from assistant.storage import ConversationStore, Database

    for name, text_ in (("bread.txt", COOKING), ("space.txt", ASTRONOMY)):
        lib.ingestor.ingest_bytes(name, text_.encode())
    other_process = Database(settings.resolved_database_url, busy_timeout_s=0.3)
    saved = []

    def embed(texts):  # the other process writes while each document is being embedded
        saved.append(ConversationStore(other_process).add_user_message(None, "still here").id)
        return lib.embedder.encode(texts) * -1.0  # other vectors, so the change shows

    before = dict(zip(*next(lib.store.iter_vectors())))
    n = lib.store.replace_embeddings(embed, "other-model")
    assert n == len(lib.store.chunk_ids()) and len(saved) == 2
    assert lib.store.embed_models() == {"other-model"}
    after = dict(zip(*next(lib.store.iter_vectors())))
    assert all(np.allclose(after[i], -before[i], atol=1e-6) for i in before)
    other_process.dispose()
