"""Keep the FAISS index (a cache) in step with the chunks stored in the database: repair it
at start-up, catch up with what another process ingested or deleted, re-embed everything
after a change of embedding model."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

from assistant.documents.embedding import Embedder
from assistant.documents.index import SyncReport, VectorIndex
from assistant.storage.documents import DocumentStore

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
