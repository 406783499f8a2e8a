"""Hybrid retrieval: dense (FAISS over MiniLM embeddings) + lexical (SQLite FTS5 BM25),
fused by reciprocal rank (RRF: score = sum over retrievers of 1 / (k + rank)).

Ranking always returns the best chunks, however poor. :meth:`Retriever.relevant` is what
the chat uses: it keeps only the chunks whose dense cosine similarity to the question
reaches ``min_similarity`` (calibrated on SQuAD: bench/relevance.py, docs/retrieval.md), so
that a question no document is about gets no source and is answered as a plain chat. The
gate reads the embedding cosine, not the lexical score: that one differs by database
(FTS5 bm25, PostgreSQL ts_rank) and by library size, the cosine does not.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from assistant.config import RetrievalSettings
from assistant.documents.embedding import Embedder
from assistant.documents.index import VectorIndex
from assistant.documents.index_sync import catch_up
from assistant.storage.documents import DocumentStore, StoredChunk
from assistant.words import clean_text


@dataclass(frozen=True)
class Hit:
    chunk: StoredChunk
    score: float  # the fused score (or the single retriever's score)
    dense_rank: int | None = None
    lexical_rank: int | None = None
    #: Cosine similarity of the question's and the chunk's embeddings (None: not computed).
    similarity: float | None = None

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


@dataclass(frozen=True)
class Retrieval:
    """What the chat's search found: the relevant hits (best first), and how many ranked
    chunks the relevance gate turned away (0 with nothing to search)."""

    hits: list[Hit]
    rejected: int = 0
    #: The best similarity among the ranked chunks (None: nothing was searched).
    best_similarity: float | None = None


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
        """The ``k`` best chunks for ``query``, optionally only from ``document_ids``
        (ranked, not gated: the best ones even when none is about the question)."""
        return self._search(query, k, document_ids, mode)[0]

    def relevant(
        self,
        query: str,
        k: int | None = None,
        document_ids: Sequence[int] | None = None,
        mode: str | None = None,
        min_similarity: float | None = None,
    ) -> Retrieval:
        """The ``k`` best chunks that are relevant to ``query``: each one's cosine similarity
        to it is at least ``min_similarity`` (default: the setting; 0 keeps every chunk)."""
        threshold = self.settings.min_similarity if min_similarity is None else min_similarity
        hits, qvec = self._search(query, k, document_ids, mode)
        if not hits:
            return Retrieval([])
        hits = self._with_similarity(hits, qvec, query)
        best = max(h.similarity for h in hits)
        if threshold <= 0:
            return Retrieval(hits, 0, best)
        kept = [h for h in hits if h.similarity >= threshold]
        return Retrieval(kept, len(hits) - len(kept), best)

    def _with_similarity(self, hits: list[Hit], qvec: np.ndarray | None, query: str) -> list[Hit]:
        """``hits`` with the similarity of those the dense search did not rank (lexical-only
        hits, or lexical mode) read from the index, restricted to exactly those chunks."""
        missing = [h.chunk_id for h in hits if h.similarity is None]
        if not missing:
            return hits
        if qvec is None:
            qvec = self.embedder.encode([query])[0]
        found = dict(self.index.search(qvec, len(missing), allowed=missing))
        # A chunk the index does not hold (deleted meanwhile) cannot be shown as relevant.
        return [h if h.similarity is not None else replace(h, similarity=found.get(h.chunk_id, -1.0))
                for h in hits]

    def _search(
        self,
        query: str,
        k: int | None,
        document_ids: Sequence[int] | None,
        mode: str | None,
    ) -> tuple[list[Hit], np.ndarray | None]:
        """The hits, and the query's embedding when the search computed it."""
        query = clean_text(query)
        k = k or self.settings.top_k
        mode = mode or self.settings.mode
        if not query.strip() or (document_ids is not None and not document_ids):
            return [], None
        n = max(self.settings.candidates, k)

        qvec = None
        dense: list[tuple[int, float]] = []
        if mode in ("dense", "hybrid"):
            catch_up(self.store, self.index)  # another process may have ingested since
            allowed = self.store.chunk_ids_of(document_ids) if document_ids is not None else None
            qvec = self.embedder.encode([query])[0]
            dense = self.index.search(qvec, n, allowed=allowed)
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
        cosine = dict(dense)  # the index holds normalized vectors: inner product = cosine
        chunks = self.store.chunks([cid for cid, _ in ranked])
        hits = [
            Hit(chunks[cid], score, dense_rank.get(cid), lexical_rank.get(cid), cosine.get(cid))
            for cid, score in ranked
            if cid in chunks  # a chunk deleted between the index and the database read
        ]
        return hits, qvec
