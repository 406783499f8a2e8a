"""Citations: which sources an answer draws on, as [n] markers.

The model's own markers come first: a ``[n]`` it wrote naming one of the sources is a
citation, and a sentence that carries one is left as it is. Small models rarely write
them, so a sentence without one may be **attributed** to a source, as a fallback, only when
the source plainly says it (:func:`supports`):

* it is not an echo of the question: at least ``MIN_NEW_WORDS`` of its content words are
  not in the question, and they make at least half of its content words;
* ONE source holds every one of those new content words (a name, a date or a number that
  no source has is the mark of an invented sentence), and
* that source shares a run of at least ``MIN_RUN`` consecutive words with the sentence
  (the same words scattered over a chunk do not make the statement).

Measured on SQuAD answers (bench/citations.py, docs/retrieval.md): the gold sentences are
attributed, question echoes, sentences with an invented answer and sentences of another
article are not. The stored answer stays exactly what the model produced; :func:`annotate`
adds the attributed markers for display, deterministically, in a form the caller chooses
(so that the UI can show them apart from the model's).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from assistant.words import WORD, content_words

MARKER = re.compile(r"\[(\d+(?:\s*,\s*\d+)*)\]")
_SENTENCE = re.compile(r"[^.!?\n]+[.!?]*[\"')\]]*\s*|\n+")
#: New (not-in-the-question) content words a sentence needs to be attributed at all.
MIN_NEW_WORDS = 3
#: Consecutive words (stopwords included) the sentence and the source must share.
MIN_RUN = 5
# Words an answer uses to talk about the sources rather than to state anything.
META_WORDS = frozenset(
    "according source sources document documents text passage context answer question "
    "mentioned mention mentions states state says said provided given based".split()
)


def _words(text: str) -> set[str]:
    return set(content_words(text)) - META_WORDS


def _ngrams(text: str, n: int) -> set[tuple[str, ...]]:
    words = WORD.findall(text.lower())
    return {tuple(words[i:i + n]) for i in range(len(words) - n + 1)}


def explicit_citations(answer: str, count: int) -> set[int]:
    """Numbers in markers like [1], [2, 3] or [1][3] that name one of ``count`` sources."""
    found = {int(n) for g in MARKER.findall(answer) for n in re.findall(r"\d+", g)}
    return {n for n in found if 1 <= n <= count}


@dataclass(frozen=True)
class _Source:
    words: set[str]
    runs: set[tuple[str, ...]]


def _prepare(sources: Sequence[str]) -> list[_Source]:
    return [_Source(_words(s), _ngrams(s, MIN_RUN)) for s in sources]


def _supporting(sentence: str, prepared: Sequence[_Source], question_words: set[str]) -> int:
    """The number of the one source that supports ``sentence`` (0: none does)."""
    words = _words(sentence)
    new = words - question_words
    if len(new) < MIN_NEW_WORDS or len(new) * 2 < len(words):
        return 0  # mostly the question's own words: an echo says nothing a source could back
    runs = _ngrams(sentence, MIN_RUN)
    for n, src in enumerate(prepared, start=1):
        if new <= src.words and runs & src.runs:
            return n
    return 0


def supports(sentence: str, source: str, question: str = "") -> bool:
    """Whether ``source`` plainly says ``sentence`` (the attribution rule; see the module)."""
    return _supporting(sentence, _prepare([source]), _words(question)) == 1


@dataclass(frozen=True)
class Citations:
    #: The answer with a marker after each attributed sentence (model markers untouched).
    text: str
    #: Sources the model cited itself with [n].
    explicit: set[int] = field(default_factory=set)
    #: Sources attributed by the fallback (not cited by the model anywhere).
    attributed: set[int] = field(default_factory=set)

    @property
    def cited(self) -> set[int]:
        return self.explicit | self.attributed


def bracket(n: int) -> str:
    return f"[{n}]"


def cite(
    answer: str, sources: Sequence[str], question: str = "", mark: Callable[[int], str] = bracket
) -> Citations:
    """The model's own citations, and for each sentence without a marker the source that
    supports it (if one does), marked with ``mark(n)`` before the sentence's end."""
    explicit = explicit_citations(answer, len(sources))
    prepared = _prepare(sources)
    question_words = _words(question)
    attributed: set[int] = set()
    out: list[str] = []
    segments = _SENTENCE.findall(answer)
    for i, sentence in enumerate(segments):
        body = sentence.rstrip()
        # A marker right after the sentence is its own: '"A quote." [2]' is cited already.
        marked = MARKER.search(body) or (i + 1 < len(segments) and MARKER.match(segments[i + 1].lstrip()))
        best = 0 if marked or not prepared else _supporting(body, prepared, question_words)
        if best:
            attributed.add(best)
            # "... May [1]." rather than "... May. [1]"
            stem, end = re.match(r"(.*?)([.!?]*[\"')\]]*)$", body, re.S).groups()
            out.append(f"{stem} {mark(best)}{end}{sentence[len(body):]}")
        else:
            out.append(sentence)
    return Citations("".join(out), explicit, attributed - explicit)


def annotate(answer: str, sources: Sequence[str], question: str = "") -> tuple[str, set[int]]:
    """The answer with a [n] after each sentence attributed to source n, and every source
    number cited (explicitly or by attribution)."""
    c = cite(answer, sources, question)
    return c.text, c.cited
