"""Documents and their chunks: the source of truth for search (text, locations, vectors),
plus lexical search over the chunk text (the database's own full-text engine:
:mod:`assistant.storage.lexical`)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

import numpy as np
from sqlalchemy import delete, func, select, update

from assistant.errors import DocumentNotFound
from assistant.storage.passages import Chunk, format_location
from assistant.storage.db import Database
from assistant.storage.schema import Document, DocumentChunk
from assistant.words import search_word_count

if TYPE_CHECKING:
    from sqlalchemy.orm import Session


@dataclass(frozen=True)
class StoredDocument:
    id: int
    name: str
    kind: str
    content_hash: str
    size_bytes: int
    embed_model: str
    created_at: datetime
    chunk_count: int = 0


@dataclass(frozen=True)
class StoredChunk:
    id: int
    document_id: int
    document_name: str
    position: int
    text: str
    page: int | None
    heading: str | None

    @property
    def location(self) -> str | None:
        return format_location(self.page, self.heading)


@dataclass(frozen=True)
class DocumentHealth:
    """What ``assistant doctor`` checks of the stored documents (read together)."""

    documents: int
    #: (id, name) of the documents without a chunk, in id order.
    empty: list[tuple[int, str]]
    #: stored vector size in bytes -> how many chunks have it.
    vector_sizes: dict[int, int]

    @property
    def vector_bytes(self) -> int | None:
        """The size of a stored vector in bytes (the most common one); None without chunks."""
        sizes = self.vector_sizes
        return max(sizes, key=sizes.get) if sizes else None

    @property
    def bad_vectors(self) -> int:
        """Chunks whose vector is damaged: of another size than most, or empty; all of them
        when the common size holds no whole float32 numbers."""
        common = self.vector_bytes
        if common is not None and (common % 4 or not common):
            return sum(self.vector_sizes.values())
        return sum(n for size, n in self.vector_sizes.items() if size != common or not size)


@dataclass(frozen=True)
class Replacement:
    document: StoredDocument
    added_ids: list[int]
    removed_ids: list[int]


def _doc(row: Document, chunk_count: int = 0) -> StoredDocument:
    return StoredDocument(
        row.id, row.name, row.kind, row.content_hash, row.size_bytes, row.embed_model,
        row.created_at, chunk_count,
    )


class DocumentStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    # -- documents -----------------------------------------------------------------------
    def find_by_hash(self, content_hash: str) -> StoredDocument | None:
        with self.db.read() as s:
            row = s.scalar(select(Document).where(Document.content_hash == content_hash))
            return _doc(row) if row else None

    def find_by_name(self, name: str) -> StoredDocument | None:
        with self.db.read() as s:
            row = s.scalar(select(Document).where(Document.name == name).order_by(Document.id.desc()))
            return _doc(row) if row else None

    def get(self, document_id: int) -> StoredDocument:
        with self.db.read() as s:
            row = s.get(Document, document_id)
            if row is None:
                raise DocumentNotFound(document_id)
            return _doc(row, self._count(s, document_id))

    def list_documents(self) -> list[StoredDocument]:
        with self.db.read() as s:
            counts = dict(
                s.execute(
                    select(DocumentChunk.document_id, func.count()).group_by(DocumentChunk.document_id)
                ).all()
            )
            rows = s.scalars(select(Document).order_by(Document.created_at.desc(), Document.id.desc()))
            return [_doc(r, counts.get(r.id, 0)) for r in rows]

    def add(
        self,
        *,
        name: str,
        kind: str,
        content_hash: str,
        size_bytes: int,
        embed_model: str,
        chunks: Sequence[Chunk],
        vectors: np.ndarray,
        replaces: int | None = None,
    ) -> Replacement:
        """Insert a document with all its chunks, and delete the one it replaces, in one
        transaction: afterwards either the new version is complete or nothing changed.

        The new rows go in before the old ones are deleted: SQLite gives a new row the
        largest id + 1, so deleting first would hand the old document's ids (the newest
        ones) straight to the new chunks. The index would then drop the new chunks along
        with the "removed" ids, and start-up could not tell old vectors from new."""
        assert len(chunks) == len(vectors)
        with self.db.write() as s:
            doc = Document(
                name=name, kind=kind, content_hash=content_hash, size_bytes=size_bytes,
                embed_model=embed_model,
            )
            s.add(doc)
            s.flush()
            rows = [
                DocumentChunk(
                    document_id=doc.id, position=c.position, text=c.text,
                    token_count=c.token_count, word_count=search_word_count(c.text),
                    page=c.page, heading=c.heading,
                    embedding=np.asarray(v, dtype=np.float32).tobytes(),
                )
                for c, v in zip(chunks, vectors, strict=True)
            ]
            s.add_all(rows)
            s.flush()
            removed: list[int] = []
            if replaces is not None:
                removed = list(
                    s.scalars(select(DocumentChunk.id).where(DocumentChunk.document_id == replaces))
                )
                s.execute(delete(Document).where(Document.id == replaces))
            return Replacement(_doc(doc, len(rows)), [r.id for r in rows], removed)

    def delete(self, document_id: int) -> list[int]:
        """Delete a document; returns the ids of its chunks (to drop from the index)."""
        with self.db.write() as s:
            ids = list(
                s.scalars(select(DocumentChunk.id).where(DocumentChunk.document_id == document_id))
            )
            if s.execute(delete(Document).where(Document.id == document_id)).rowcount == 0:
                raise DocumentNotFound(document_id)
            return ids

    def health(self) -> DocumentHealth:
        """The documents without chunks and the sizes of the stored vectors, in one read."""
        with self.db.read() as s:
            empty = s.execute(
                select(Document.id, Document.name)
                .where(~select(DocumentChunk.id).where(DocumentChunk.document_id == Document.id).exists())
                .order_by(Document.id)
            ).all()
            sizes = dict(s.execute(
                select(func.length(DocumentChunk.embedding), func.count()).group_by(
                    func.length(DocumentChunk.embedding))
            ).all())
            documents = s.scalar(select(func.count()).select_from(Document)) or 0
        return DocumentHealth(documents, [(i, name) for i, name in empty], sizes)

    def delete_many(self, document_ids: Sequence[int]) -> None:
        """Delete these documents (with their chunks) in one transaction; missing ones are
        ignored."""
        with self.db.write() as s:
            s.execute(delete(Document).where(Document.id.in_(list(document_ids))))

    # -- chunks --------------------------------------------------------------------------
    def chunk_ids(self) -> set[int]:
        with self.db.read() as s:
            return set(s.scalars(select(DocumentChunk.id)))

    def chunk_signature(self) -> tuple[int, int, int]:
        """Changes whenever chunks are added or deleted: (documents, highest document id,
        highest chunk id). Chunks only come and go with their document, and ids are never
        reused (``sqlite_autoincrement``). Cheap on a large corpus, unlike counting the
        chunks (figures: docs/architecture.md)."""
        with self.db.read() as s:
            docs, top_doc = s.execute(select(func.count(Document.id), func.max(Document.id))).one()
            top_chunk = s.scalar(select(func.max(DocumentChunk.id)))
            return int(docs or 0), int(top_doc or 0), int(top_chunk or 0)

    def vectors_of(self, ids: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """(ids, vectors) of these chunks (those that still exist), in id order."""
        with self.db.read() as s:
            rows = s.execute(
                select(DocumentChunk.id, DocumentChunk.embedding)
                .where(DocumentChunk.id.in_(list(ids)))
                .order_by(DocumentChunk.id)
            ).all()
        if not rows:
            return np.zeros(0, dtype=np.int64), np.zeros((0, 0), dtype=np.float32)
        return (np.array([r[0] for r in rows], dtype=np.int64),
                np.stack([np.frombuffer(r[1], dtype=np.float32) for r in rows]))

    def chunk_count(self) -> int:
        with self.db.read() as s:
            return s.scalar(select(func.count()).select_from(DocumentChunk)) or 0

    def chunk_ids_of(self, document_ids: Sequence[int]) -> set[int]:
        with self.db.read() as s:
            return set(
                s.scalars(
                    select(DocumentChunk.id).where(DocumentChunk.document_id.in_(list(document_ids)))
                )
            )

    def chunk_ids_by_document(self) -> dict[int, set[int]]:
        with self.db.read() as s:
            out: dict[int, set[int]] = {}
            for cid, did in s.execute(select(DocumentChunk.id, DocumentChunk.document_id)):
                out.setdefault(did, set()).add(cid)
            return out

    def replace_embeddings(self, embed: Callable[[list[str]], np.ndarray], model_name: str,
                           progress: Callable[[list[int]], Iterable[int]] | None = None) -> int:
        """Embed every chunk's text again with ``embed`` (texts -> vectors) and record
        ``model_name`` on its document: one document at a time, each in a short transaction
        of its own, embedded before the transaction starts. One transaction for the whole
        corpus would hold the write lock for as long as embedding it takes, and every other
        writer (the app saving answers) would give up after the busy timeout. A document
        deleted meanwhile is skipped; after a crash, ``embed_models`` still shows both models
        and the next start finishes the job. ``progress`` wraps the documents (tqdm)."""
        with self.db.read() as s:
            doc_ids = list(s.scalars(select(Document.id).order_by(Document.id)))
        done = 0
        for doc_id in progress(doc_ids) if progress else doc_ids:
            with self.db.read() as s:
                rows = s.execute(
                    select(DocumentChunk.id, DocumentChunk.text)
                    .where(DocumentChunk.document_id == doc_id).order_by(DocumentChunk.id)
                ).all()
            vectors = embed([r[1] for r in rows]) if rows else []
            with self.db.write() as s:
                current = set(s.scalars(select(DocumentChunk.id).where(DocumentChunk.document_id == doc_id)))
                if current != {r[0] for r in rows}:  # replaced or deleted meanwhile: its new
                    continue                          # chunks were embedded by its ingest
                for (cid, _), vec in zip(rows, vectors, strict=True):
                    s.execute(
                        update(DocumentChunk).where(DocumentChunk.id == cid)
                        .values(embedding=np.asarray(vec, dtype=np.float32).tobytes())
                    )
                s.execute(update(Document).where(Document.id == doc_id).values(embed_model=model_name))
            done += len(rows)
        return done

    def embed_models(self) -> set[str]:
        with self.db.read() as s:
            return set(s.scalars(select(Document.embed_model).distinct()))

    def iter_vectors(self, batch: int = 10_000) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(ids, vectors) in batches, for rebuilding the index from the database."""
        last = 0
        while True:
            with self.db.read() as s:
                rows = s.execute(
                    select(DocumentChunk.id, DocumentChunk.embedding)
                    .where(DocumentChunk.id > last)
                    .order_by(DocumentChunk.id)
                    .limit(batch)
                ).all()
            if not rows:
                return
            ids = np.array([r[0] for r in rows], dtype=np.int64)
            vecs = np.stack([np.frombuffer(r[1], dtype=np.float32) for r in rows])
            last = int(ids[-1])
            yield ids, vecs

    def chunks(self, ids: Sequence[int]) -> dict[int, StoredChunk]:
        if not ids:
            return {}
        with self.db.read() as s:
            rows = s.execute(
                select(DocumentChunk, Document.name)
                .join(Document, Document.id == DocumentChunk.document_id)
                .where(DocumentChunk.id.in_(list(ids)))
            ).all()
            return {
                c.id: StoredChunk(c.id, c.document_id, name, c.position, c.text, c.page, c.heading)
                for c, name in rows
            }

    def document_chunks(self, document_id: int) -> list[StoredChunk]:
        with self.db.read() as s:
            doc = s.get(Document, document_id)
            if doc is None:
                raise DocumentNotFound(document_id)
            return [
                StoredChunk(c.id, c.document_id, doc.name, c.position, c.text, c.page, c.heading)
                for c in doc.chunks
            ]

    def lexical_search(
        self, query: str, limit: int, document_ids: Sequence[int] | None = None
    ) -> list[tuple[int, float]]:
        """Full-text search over chunk text with the database's own engine (FTS5 bm25 on
        SQLite, ts_rank_cd on PostgreSQL): [(chunk id, score)], best first."""
        with self.db.read() as s:
            return self.db.lexical.search(s, query, limit, document_ids)

    @staticmethod
    def _count(s: Session, document_id: int) -> int:
        return s.scalar(
            select(func.count()).select_from(DocumentChunk).where(DocumentChunk.document_id == document_id)
        ) or 0
