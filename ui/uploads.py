"""Ingest uploaded files with a progress bar and one message per file."""

from __future__ import annotations

import math
from collections.abc import Sequence

import streamlit as st

from assistant.bootstrap import Library
from assistant.documents.ingest import IngestResult
from ui.text import plain


def ingest_uploads(library: Library, files: Sequence) -> list[IngestResult]:
    results = []
    bar = st.progress(0.0, text="Reading documents...")
    for n, f in enumerate(files, start=1):
        bar.progress((n - 1) / len(files), text=f"Indexing {plain(f.name)} ({n}/{len(files)})...")
        results.append(library.ingestor.ingest_bytes(f.name, f.getvalue()))
    bar.empty()
    for r in results:
        if r.status == "failed":
            st.error(plain(r.describe()), icon=":material/error:")
        elif r.status == "duplicate":
            st.info(plain(r.describe()), icon=":material/content_copy:")
        else:
            st.success(plain(r.describe()), icon=":material/check_circle:")
    return results


def upload_cap_mb(limit_mb: float) -> int:
    """What the browser may send: the server's own cap, not the library's limit, so that a
    file over the limit reaches the ingestor and is refused with a message naming it (the
    browser refuses only with a tooltip, and the form then clears it without a word)."""
    return max(math.ceil(limit_mb), int(st.get_option("server.maxUploadSize")))
