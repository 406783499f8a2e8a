"""Hybrid retrieval: dense (FAISS over MiniLM embeddings) + lexical (SQLite FTS5 BM25),
fused by reciprocal rank (RRF: score = sum over retrievers of 1 / (k + rank))."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from assistant.config import RetrievalSettings
from assistant.embedding import Embedder
from assistant.index import VectorIndex
from assistant.index_sync import catch_up
from assistant.storage.documents import DocumentStore, StoredChunk
from assistant.words import clean_text


@dataclass(frozen=True)
class Hit:
    chunk: StoredChunk
    score: float  # the fused score (or the single retriever's score)
    dense_rank: int | None = None
    lexical_rank: int | None = None

    @property
    def chunk_id(self) -> int:
        return self.chunk.id

    @property
    def document_name(self) -> str:
        return self.chunk.document_name

    @property
    def location(self) -> str | None:
        return self.chunk.location

    @property
    def text(self) -> str:
        return self.chunk.text


def rrf(rankings: Sequence[Sequence[int]], k: int = 60) -> list[tuple[int, float]]:
    scores: dict[int, float] = {}
    for ranking in rankings:
        for rank, item in enumerate(ranking, start=1):
            scores[item] = scores.get(item, 0.0) + 1.0 / (k + rank)
    return sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))


class Retriever:
    def __init__(
        self, store: DocumentStore, embedder: Embedder, index: VectorIndex, settings: RetrievalSettings
    ) -> None:
        self.store, self.embedder, self.index, self.settings = store, embedder, index, settings

    def search(
        self,
        query: str,
        k: int | None = None,
        document_ids: Sequence[int] | None = None,
        mode: str | None = None,
    ) -> list[Hit]:
        """The ``k`` best chunks for ``query``, optionally only from ``document_ids``."""
        query = clean_text(query)
        k = k or self.settings.top_k
        mode = mode or self.settings.mode
        if not query.strip() or (document_ids is not None and not document_ids):
            return []
        n = max(self.settings.candidates, k)

        dense: list[tuple[int, float]] = []
        if mode in ("dense", "hybrid"):
            catch_up(self.store, self.index)  # another process may have ingested since
            allowed = self.store.chunk_ids_of(document_ids) if document_ids is not None else None
            dense = self.index.search(self.embedder.encode([query])[0], n, allowed=allowed)
        lexical: list[tuple[int, float]] = []
        if mode in ("lexical", "hybrid"):
            lexical = self.store.lexical_search(query, n, document_ids)

        if mode == "dense":
            ranked = dense
        elif mode == "lexical":
            ranked = lexical
        else:
            ranked = rrf([[i for i, _ in dense], [i for i, _ in lexical]], self.settings.rrf_k)
        ranked = ranked[:k]
        dense_rank = {cid: r for r, (cid, _) in enumerate(dense, start=1)}
        lexical_rank = {cid: r for r, (cid, _) in enumerate(lexical, start=1)}
        chunks = self.store.chunks([cid for cid, _ in ranked])
        return [
            Hit(chunks[cid], score, dense_rank.get(cid), lexical_rank.get(cid))
            for cid, score in ranked
            if cid in chunks  # a chunk deleted between the index and the database read
        ]
