"""Showing untrusted text (messages, file names, documents) as the text it is."""

from __future__ import annotations

# What formats inline in a one-line label: emphasis, code, links, HTML-like tags, tables,
# strikethrough, math and :icon: / :emoji: codes. Line-start syntax (#, 1.) cannot occur
# mid-label once the text is on one line.
_MARKDOWN = set("\\`*_[]<>|~$:")


def plain(text: str) -> str:
    """Escape Markdown (and Streamlit's :icon: / $math$ syntax) in a label."""
    return "".join("\\" + ch if ch in _MARKDOWN else ch for ch in " ".join(text.split()))
