"""Keep the FAISS index (a cache) in step with the chunks stored in the database: repair it
at start-up, catch up with what another process ingested or deleted, re-embed everything
after a change of embedding model.

``assistant doctor`` asks here too: :func:`check_documents` (every document has its chunks,
every chunk a vector of the right size; re-embedded on repair) and :func:`check_index` (the
index agrees with the database; rebuilt or re-embedded on repair)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from assistant.documents.embedding import Embedder, embedder_name
from assistant.documents.index import INDEX_FILE, SyncReport, VectorIndex, stored_meta
from assistant.storage.documents import DocumentStore
from assistant.storage.health import OK, PROBLEM, REPAIRED, CheckResult, result

log = logging.getLogger(__name__)


def sync_index(store: DocumentStore, index: VectorIndex, embedder: Embedder) -> SyncReport:
    """Compare the index with the database; rebuild it from the stored vectors when they
    disagree. Returns what was found (before the repair)."""
    report = index.check(store.chunk_ids(), store.embed_models())
    if report.model_mismatch:
        # Vectors from another embedding model cannot be mixed: re-embed from the text.
        reembed(store, index, embedder)
    elif not report.ok:
        log.warning(
            "Index disagrees with the database (%d missing, %d stale): rebuilding",
            report.missing, report.stale,
        )
        index.rebuild(store.iter_vectors())
        index.save()
    return report


def catch_up(store: DocumentStore, index: VectorIndex) -> tuple[int, int]:
    """Bring this process's index up to the database when another process (``assistant
    ingest`` while the app runs, another app server) added or deleted chunks: the database
    holds every chunk's vector, so the difference is added or dropped from there. Cheap when
    nothing changed (one count and max query); returns (added, dropped)."""
    if store.chunk_signature() == index.synced_to:
        return 0, 0
    with index.sync_lock:
        signature = store.chunk_signature()  # before the ids: a later change is seen next time
        db_ids, have = store.chunk_ids(), index.ids()
        add, drop = sorted(db_ids - have), sorted(have - db_ids)
        if add:
            ids, vectors = store.vectors_of(add)
            index.add(ids, vectors)
        if drop:
            index.remove(drop, rebuild_from=store.iter_vectors())
        index.synced_to = signature
    if add or drop:
        log.info("Index caught up with the database: %d chunks added, %d dropped", len(add), len(drop))
    return len(add), len(drop)


def reembed(store: DocumentStore, index: VectorIndex, embedder: Embedder,
            progress: Callable[[list[int]], Iterable[int]] | None = None) -> int:
    """Embed every stored chunk again with ``embedder`` and rebuild the index."""
    n = store.replace_embeddings(embedder.encode, embedder.name, progress=progress)
    index.rebuild(store.iter_vectors())
    index.save()
    return n


# -- checks for `assistant doctor` ---------------------------------------------------------------
@dataclass(frozen=True)
class StoredVectors:
    """The documents check, and what it found of the stored vectors for the index check."""

    checked: CheckResult
    #: Size of a stored vector in bytes (the most common one); None without chunks.
    vector_bytes: int | None
    #: Chunks whose vector is still damaged.
    bad_vectors: int


def check_documents(store: DocumentStore, repair: bool, embedder: Callable[[], Embedder]) -> StoredVectors:
    """Documents are stored with all their chunks in one transaction; one without chunks,
    or a chunk whose vector has the wrong size, did not come from this app's ingest. With
    ``repair``, such documents are deleted and damaged vectors embedded again (``embedder``
    loads the model, only then)."""
    health = store.health()
    empty, vector_bytes, bad_vectors = health.empty, health.vector_bytes, health.bad_vectors
    items = [f"#{i} {name}: no chunks" for i, name in empty]
    if bad_vectors:
        items.append(f"{bad_vectors} chunk(s) with a damaged vector")
    if not items:
        ok = result(OK, f"{health.documents} document(s), each with its chunks and vectors")
        return StoredVectors(ok, vector_bytes, bad_vectors)
    if not repair:
        problem = result(PROBLEM, "half-stored documents: `assistant doctor --repair` removes documents "
                         "without chunks (ingest them again) and embeds damaged vectors again", items)
        return StoredVectors(problem, vector_bytes, bad_vectors)
    if empty:
        store.delete_many([i for i, _ in empty])
    if bad_vectors:
        model = embedder()
        store.replace_embeddings(model.encode, model.name)
        vector_bytes = model.dim * 4
    repaired = result(REPAIRED, "removed documents without chunks (ingest those files again)"
                      + (" and embedded every chunk again" if bad_vectors else ""), items)
    return StoredVectors(repaired, vector_bytes, 0)


def check_index(store: DocumentStore, directory: Path, index_type: str, embedding_model: str,
                stored: StoredVectors, repair: bool, embedder: Callable[[], Embedder]) -> CheckResult:
    """Whether the FAISS index in ``directory`` agrees with the chunks in the database (ids and
    embedding model). With ``repair``, rebuilt from the stored vectors, or everything embedded
    again with the configured model when the stored vectors are another model's."""
    ids, models = store.chunk_ids(), store.embed_models()
    directory = Path(directory)
    if not ids and not (directory / INDEX_FILE).exists():
        return result(OK, "no documents and no index yet")
    if stored.bad_vectors:
        return result(PROBLEM, "not checked: some stored vectors are damaged (see documents)")
    name = embedder_name(embedding_model)
    dim = stored.vector_bytes // 4 if stored.vector_bytes else int(stored_meta(directory).get("dim") or 0)
    if not dim:
        return result(PROBLEM, f"the index files in {directory} are unreadable and the "
                      "database holds no vectors to rebuild them from; delete the folder")
    index = VectorIndex(directory, dim, index_type, name)
    report = index.check(ids, models)
    if report.ok:
        return result(OK, f"FAISS index ({index_type}) agrees with the database: {report.in_db} chunks")
    what = (f"the stored vectors were made by another embedding model ({', '.join(sorted(models))}; "
            f"configured: {name})" if report.model_mismatch else
            f"{report.missing} chunk(s) of the database are missing from it and "
            f"{report.stale} in it are no longer in the database")
    if not repair:
        return result(PROBLEM, f"the FAISS index disagrees with the database: {what}. "
                      "`assistant doctor --repair` rebuilds it from the vectors in the database")
    if report.model_mismatch:
        model = embedder()
        n = reembed(store, VectorIndex(directory, model.dim, index_type, model.name), model)
        how = f"embedded all {n} chunks again with {model.name}"
    else:
        n = index.rebuild(store.iter_vectors())
        index.save()
        how = f"rebuilt it from the {n} vectors stored in the database"
    return result(REPAIRED, f"the FAISS index disagreed with the database ({what}); {how}")
