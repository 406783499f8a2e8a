"""The FAISS vector index: chunk ids -> normalised embeddings, searched by inner product.

The database holds every chunk's vector and is the source of truth; this index is a cache
of it that can always be rebuilt (``assistant index rebuild``). It is written atomically
(temporary file + rename) so that a crash never leaves a torn file, and :meth:`check`
compares it with the database at start-up.

Index types (``ASSISTANT_RETRIEVAL__INDEX_TYPE``):

* ``flat``: exact search (default). Adds and removes in place.
* ``hnsw``: approximate graph search for large corpora (``IndexHNSWFlat``). FAISS cannot
  remove from HNSW, so a delete rebuilds it from the database vectors.
* ``ivf``: approximate inverted lists (``IndexIVFFlat``), trained on the stored vectors when
  (re)built; adds and removes in place. Retrain with a rebuild when the corpus grows a lot.
  It holds the chunk ids itself, without ``IndexIDMap2``: the map assumes that a removal
  renumbers the entries after it, which IVF does not do, so every id after a removed one
  would come back wrong (or not at all).
"""

from __future__ import annotations

import json
import logging
import math
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np

from assistant import atomic

log = logging.getLogger(__name__)

INDEX_FILE = "chunks.faiss"
META_FILE = "chunks.json"


def stored_meta(directory: Path) -> dict:
    """What the index files in ``directory`` say of themselves (kind, dim, model, count);
    empty when they are missing or unreadable."""
    try:
        value = json.loads((Path(directory) / META_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


@dataclass(frozen=True)
class SyncReport:
    in_db: int
    in_index: int
    missing: int  # in the database, not in the index
    stale: int  # in the index, no longer in the database
    model_mismatch: bool

    @property
    def ok(self) -> bool:
        return not (self.missing or self.stale or self.model_mismatch)


class VectorIndex:
    def __init__(self, directory: Path, dim: int, kind: str = "flat", model_name: str = "") -> None:
        self.directory = Path(directory)
        self.dim, self.kind, self.model_name = dim, kind, model_name
        self._lock = threading.RLock()
        self._index = self._load() or self._empty()
        #: Held while the chunks in the database and this index change together (an ingest
        #: in this process) or are compared (``index_sync.catch_up``), so neither sees half of
        #: the other's change.
        self.sync_lock = threading.RLock()
        #: The database's chunk signature this index last caught up with (``catch_up``).
        self.synced_to: tuple[int, ...] | None = None

    # -- construction ----------------------------------------------------------------------
    def _empty(self, train: np.ndarray | None = None) -> faiss.Index:
        if self.kind == "flat":
            return faiss.IndexIDMap2(faiss.IndexFlatIP(self.dim))
        if self.kind == "hnsw":
            hnsw = faiss.IndexHNSWFlat(self.dim, 32, faiss.METRIC_INNER_PRODUCT)
            hnsw.hnsw.efSearch = 64
            return faiss.IndexIDMap2(hnsw)
        if self.kind == "ivf":
            n = 0 if train is None else len(train)
            nlist = max(1, min(int(4 * math.sqrt(max(n, 1))), max(n // 39, 1)))
            quantizer = faiss.IndexFlatIP(self.dim)
            ivf = faiss.IndexIVFFlat(quantizer, self.dim, nlist, faiss.METRIC_INNER_PRODUCT)
            ivf.nprobe = min(nlist, 16)
            if n:
                ivf.train(train)
            else:  # nothing to train on yet: one list (exact search) until the next rebuild
                quantizer.add(np.zeros((1, self.dim), dtype=np.float32))
                ivf.is_trained = True
            return ivf
        raise ValueError(f"unknown index type {self.kind!r} (flat, hnsw or ivf)")

    def _load(self) -> faiss.Index | None:
        path, meta_path = self.directory / INDEX_FILE, self.directory / META_FILE
        if not path.exists():
            return None
        try:
            meta = json.loads(meta_path.read_text())
            index = faiss.read_index(str(path))
        except (OSError, ValueError, RuntimeError) as err:
            log.warning("Index at %s is unreadable (%s); it will be rebuilt", path, err)
            return None
        if (meta.get("kind"), meta.get("dim"), meta.get("model")) != (
            self.kind, self.dim, self.model_name
        ):
            log.info("Index at %s was built differently (%s); rebuilding", path, meta)
            return None
        if (self.kind == "ivf") != isinstance(index, faiss.IndexIVF):
            # e.g. an IVF index wrapped in an id map by an earlier version
            log.info("Index at %s has an outdated layout; rebuilding", path)
            return None
        return index

    # -- queries -----------------------------------------------------------------------------
    def __len__(self) -> int:
        return int(self._index.ntotal)

    def ids(self) -> set[int]:
        with self._lock:
            if self.kind != "ivf":
                return set(faiss.vector_to_array(self._index.id_map).tolist())
            lists, found = self._index.invlists, set()
            for n in range(lists.nlist):
                if size := lists.list_size(n):
                    found.update(faiss.rev_swig_ptr(lists.get_ids(n), size).tolist())
            return found

    def search(
        self, vector: np.ndarray, k: int, allowed: Iterable[int] | None = None
    ) -> list[tuple[int, float]]:
        with self._lock:
            if self._index.ntotal == 0 or k <= 0:
                return []
            q = np.asarray(vector, dtype=np.float32).reshape(1, -1)
            params = None
            if allowed is not None:
                allowed = np.fromiter(allowed, dtype=np.int64)
                if allowed.size == 0:
                    return []
                params = self._search_params(faiss.IDSelectorBatch(allowed))
            k = min(k, self._index.ntotal)
            scores, ids = self._index.search(q, k, params=params)
        return [(int(i), float(s)) for i, s in zip(ids[0], scores[0], strict=True) if i != -1]

    def _search_params(self, selector: faiss.IDSelector) -> faiss.SearchParameters:
        if self.kind == "ivf":
            return faiss.SearchParametersIVF(sel=selector, nprobe=self._index.nprobe)
        inner = faiss.downcast_index(self._index.index)
        if self.kind == "hnsw":
            return faiss.SearchParametersHNSW(sel=selector, efSearch=inner.hnsw.efSearch)
        return faiss.SearchParameters(sel=selector)

    # -- changes -----------------------------------------------------------------------------
    def add(self, ids: Sequence[int], vectors: np.ndarray) -> None:
        if len(ids) == 0:
            return
        with self._lock:
            self._index.add_with_ids(
                np.ascontiguousarray(vectors, dtype=np.float32), np.asarray(ids, dtype=np.int64)
            )

    def remove(self, ids: Sequence[int], rebuild_from: Iterable[tuple[np.ndarray, np.ndarray]] | None = None) -> None:
        """Drop ``ids``. HNSW cannot remove: it is rebuilt from ``rebuild_from`` (an
        iterable of (ids, vectors) batches, normally the database)."""
        if len(ids) == 0:
            return
        with self._lock:
            if self.kind == "hnsw":
                if rebuild_from is None:
                    raise ValueError("an HNSW index needs the stored vectors to remove entries")
                self.rebuild(rebuild_from)
            else:
                self._index.remove_ids(np.asarray(ids, dtype=np.int64))

    def rebuild(self, batches: Iterable[tuple[np.ndarray, np.ndarray]]) -> int:
        """Replace the whole index with the given (ids, vectors) batches."""
        all_ids, all_vecs = [], []
        for ids, vecs in batches:
            all_ids.append(ids)
            all_vecs.append(vecs)
        ids = np.concatenate(all_ids) if all_ids else np.zeros(0, dtype=np.int64)
        vecs = np.concatenate(all_vecs) if all_vecs else np.zeros((0, self.dim), np.float32)
        fresh = self._empty(train=vecs if self.kind == "ivf" and len(vecs) else None)
        if len(ids):
            fresh.add_with_ids(np.ascontiguousarray(vecs, dtype=np.float32), ids)
        with self._lock:
            self._index = fresh
        return len(ids)

    def save(self) -> None:
        """Write the index and its description atomically."""
        self.directory.mkdir(parents=True, exist_ok=True)
        with self._lock:
            for name, write in (
                (INDEX_FILE, lambda p: faiss.write_index(self._index, str(p))),
                (META_FILE, lambda p: Path(p).write_text(json.dumps(
                    {"kind": self.kind, "dim": self.dim, "model": self.model_name,
                     "count": int(self._index.ntotal)}))),
            ):
                atomic.write_file(self.directory / name, write)

    def check(self, db_ids: set[int], db_models: set[str]) -> SyncReport:
        mine = self.ids()
        return SyncReport(
            in_db=len(db_ids),
            in_index=len(mine),
            missing=len(db_ids - mine),
            stale=len(mine - db_ids),
            model_mismatch=bool(db_models) and db_models != {self.model_name},
        )
