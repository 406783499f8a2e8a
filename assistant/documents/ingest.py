"""Ingest: file -> parse -> chunk -> embed -> store (one transaction) -> index.

Each file succeeds or fails on its own: a failure names the file and the reason, leaves no
chunk behind, and the other files of the batch still go in. Content is hashed first, and a
file already stored is recognised and skipped. A file with the name of a stored document
but other content replaces it (its old chunks leave the index).

If the process dies after the database commit but before the index is saved, the index is
behind the database; start-up (:func:`assistant.documents.index_sync.sync_index`) notices and repairs it from the stored
vectors.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy.exc import IntegrityError

from assistant.documents.chunking import chunk_sections
from assistant.config import RetrievalSettings
from assistant.documents.embedding import Embedder
from assistant.errors import DocumentError, DocumentTooLarge, EmptyFile, NoExtractableText
from assistant.documents.index import VectorIndex
from assistant.documents.parse_worker import parse_isolated
from assistant.documents.parsing import SUPPORTED_SUFFIXES, safe_filename
from assistant.storage.documents import DocumentStore, StoredDocument

if TYPE_CHECKING:
    import numpy as np

    from assistant.documents.parsing import ParsedDocument
    from assistant.storage.passages import Chunk

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class IngestResult:
    name: str
    status: str  # "indexed", "replaced", "duplicate", "failed"
    document: StoredDocument | None = None
    chunks: int = 0
    error: str | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status != "failed"

    def describe(self) -> str:
        if self.status == "failed":
            return self.error or f"{self.name}: failed"
        if self.status == "duplicate":
            return f"{self.name}: already stored as '{self.document.name}' (same content), skipped"
        verb = "replaced the earlier version" if self.status == "replaced" else "indexed"
        return f"{self.name}: {verb}, {self.chunks} chunks"


def content_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def find_files(paths: Iterable[Path]) -> list[Path]:
    """Files named directly, plus every supported file under the folders named."""
    found: list[Path] = []
    for path in paths:
        path = Path(path)
        if path.is_dir():
            found += sorted(
                p for p in path.rglob("*")
                if p.is_file() and p.suffix.lower() in SUPPORTED_SUFFIXES
                and not any(part.startswith(".") for part in p.relative_to(path).parts)
            )
        else:
            found.append(path)
    return found


class Ingestor:
    def __init__(
        self, store: DocumentStore, embedder: Embedder, index: VectorIndex, settings: RetrievalSettings
    ) -> None:
        self.store, self.embedder, self.index, self.settings = store, embedder, index, settings

    def ingest_bytes(self, name: str, data: bytes) -> IngestResult:
        started = time.perf_counter()
        name = safe_filename(name)
        try:
            result = self._ingest(name, data)
        except DocumentError as err:
            log.info("Rejected %s: %s", name, err.reason)
            result = IngestResult(name, "failed", error=str(err))
        return IngestResult(**{**result.__dict__, "seconds": time.perf_counter() - started})

    def ingest_paths(
        self, paths: Sequence[Path], progress: Callable[[Iterable], Iterable] | None = None
    ) -> list[IngestResult]:
        files = find_files(paths)
        results = []
        for path in progress(files) if progress else files:
            try:
                data = _read_limited(path, self.settings.max_upload_mb)
            except DocumentError as err:
                results.append(IngestResult(safe_filename(path.name), "failed", error=str(err)))
                continue
            except OSError as err:
                results.append(IngestResult(
                    safe_filename(path.name), "failed",
                    error=f"{path.name}: could not be read ({err.strerror or err})",
                ))
                continue
            results.append(self.ingest_bytes(path.name, data))
        return results

    @property
    def max_bytes(self) -> int:
        return int(self.settings.max_upload_mb * 1024 * 1024)

    def delete(self, document_id: int) -> None:
        with self.index.sync_lock:
            removed = self.store.delete(document_id)
            self.index.remove(removed, rebuild_from=self.store.iter_vectors())
        self.index.save()

    def _ingest(self, name: str, data: bytes) -> IngestResult:
        if len(data) > self.max_bytes:
            raise _too_large(name, len(data), self.settings.max_upload_mb)
        if not data:
            raise EmptyFile(name, "the file is empty (0 bytes)")
        digest = content_hash(data)
        existing = self.store.find_by_hash(digest)
        if existing is not None:
            return IngestResult(name, "duplicate", document=existing)

        parsed = parse_isolated(name, data, self.settings.parse)
        chunks = chunk_sections(
            parsed.sections,
            self.embedder.count_tokens,
            self.embedder.tokenizer,
            size=min(self.settings.chunk_tokens, self.embedder.max_tokens),
            overlap=self.settings.chunk_overlap,
        )
        if not chunks:
            raise NoExtractableText(name, "contains no extractable text")
        vectors = self.embedder.encode([c.text for c in chunks])
        previous = self.store.find_by_name(parsed.name)
        try:
            return self._store(name, parsed, digest, len(data), chunks, vectors, previous)
        except IntegrityError:
            # Another process (a second `assistant ingest` of the same folder, an upload in
            # the app) stored the same content between our check and our write.
            existing = self.store.find_by_hash(digest)
            if existing is None:
                raise
            log.info("%s was stored meanwhile by another process: skipped", name)
            return IngestResult(name, "duplicate", document=existing)

    def _store(self, name: str, parsed: ParsedDocument, digest: str, size: int, chunks: list[Chunk],
               vectors: np.ndarray, previous: StoredDocument | None) -> IngestResult:
        with self.index.sync_lock:
            change = self.store.add(
                name=parsed.name,
                kind=parsed.kind,
                content_hash=digest,
                size_bytes=size,
                embed_model=self.embedder.name,
                chunks=chunks,
                vectors=vectors,
                replaces=previous.id if previous else None,
            )
            self.index.add(change.added_ids, vectors)
            self.index.remove(change.removed_ids, rebuild_from=self.store.iter_vectors())
        self.index.save()
        return IngestResult(
            parsed.name,
            "replaced" if previous else "indexed",
            document=change.document,
            chunks=len(chunks),
        )


def _read_limited(path: Path, max_mb: float) -> bytes:
    size = path.stat().st_size
    if size > int(max_mb * 1024 * 1024):
        raise _too_large(safe_filename(path.name), size, max_mb)
    return path.read_bytes()


def _too_large(name: str, size: int, max_mb: float) -> DocumentTooLarge:
    # One unit for both numbers (MiB, as the limit is applied): "0.0 MB, over the 0.02 MB
    # limit" or a limit printed as 0.0199995 tells the user nothing.
    return DocumentTooLarge(
        name,
        f"is {size / 1024 / 1024:.3g} MB, over the {max_mb:g} MB limit "
        "(ASSISTANT_RETRIEVAL__MAX_UPLOAD_MB); split it or raise the limit",
    )
