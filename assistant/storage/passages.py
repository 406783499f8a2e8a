"""The values that cross from chunking to storage to citations: a chunk of a document and
where it stands in it. Kept apart from parsing and chunking so that the stores need neither
(nor the parsers' libraries)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Chunk:
    position: int  # order within the document
    text: str
    token_count: int
    page: int | None = None
    heading: str | None = None


def format_location(page: int | None, heading: str | None) -> str | None:
    """Where a text is, for a citation: "page 3", "Install > Linux", "page 3 · Install"."""
    parts = [f"page {page}"] if page is not None else []
    if heading:
        parts.append(heading)
    return " · ".join(parts) or None
