"""Citations: which sources an answer draws on, as [n] markers.

Markers the model wrote itself count first. Small models rarely write them, so each
sentence without one is also attributed to the source that contains most of its content
words (when most of them are there). The stored answer stays exactly what the model
produced; :func:`annotate` adds the attributed markers for display, deterministically.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from assistant.words import content_words

_MARKER = re.compile(r"\[(\d+(?:\s*,\s*\d+)*)\]")
_SENTENCE = re.compile(r"[^.!?\n]+[.!?]*[\"')\]]*\s*|\n+")
MIN_SHARE = 0.6
MIN_WORDS = 3


def _content_words(text: str) -> set[str]:
    return set(content_words(text, min_len=3))


def explicit_citations(answer: str, count: int) -> set[int]:
    """Numbers in markers like [1], [2, 3] or [1][3] that name one of ``count`` sources."""
    found = {int(n) for g in _MARKER.findall(answer) for n in re.findall(r"\d+", g)}
    return {n for n in found if 1 <= n <= count}


def annotate(answer: str, sources: Sequence[str]) -> tuple[str, set[int]]:
    """The answer with a [n] after each sentence attributed to source n, and every source
    number cited (explicitly or by attribution)."""
    cited = explicit_citations(answer, len(sources))
    vocab = [_content_words(s) for s in sources]
    out: list[str] = []
    for sentence in _SENTENCE.findall(answer):
        body = sentence.rstrip()
        if _MARKER.search(body) or not vocab:
            out.append(sentence)
            continue
        words = _content_words(body)
        best, share = 0, 0.0
        if len(words) >= MIN_WORDS:
            for n, v in enumerate(vocab, start=1):
                s = len(words & v) / len(words)
                if s > share:
                    best, share = n, s
        if best and share >= MIN_SHARE:
            cited.add(best)
            # "... May [1]." rather than "... May. [1]"
            stem, end = re.match(r"(.*?)([.!?]*[\"')\]]*)$", body, re.S).groups()
            out.append(f"{stem} [{best}]{end}{sentence[len(body):]}")
        else:
            out.append(sentence)
    return "".join(out), cited
