"""Evidence: the sentences of the sources that back an answer, found without a model.

Pure Python (no model, no database). Every span it returns is a slice of a source's text,
so a quote built from it is verbatim by construction.

* :func:`sentences` cuts a source into sentences (a line with no sentence end is one unit;
  a unit longer than :data:`MAX_WORDS` words, such as a table row or code, is cut into
  windows), as ``(start, end)`` character offsets.
* :func:`best_for_question` is the extractive answer: the sentence of the shown sources that
  shares the most question words (weighted by how rare each word is among the sources'
  sentences), mixed with its embedding similarity to the question when one is given.
* :func:`supporting` finds, for an answer, the sentence of a source that holds the answer's
  own words (those not in the question): the evidence shown beside it.

Words are matched by a crude stem (their first :data:`STEM` letters), so "located" meets
"location" and "Normans" meets "Norman".
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from assistant.chat.citations import MARKER, META_WORDS
from assistant.words import STOPWORDS, WORD

#: Longest unit quoted, in words: a longer run without a sentence end is cut into windows.
MAX_WORDS = 60
#: Letters a word is matched by.
STEM = 5
#: The share of a sentence's score that is its embedding similarity to the question (the
#: rest: the share of the question's words it holds). On the SQuAD articles of the tests'
#: data (bench/evidence.py), the sentence picked holds a gold answer for 0.64 of the
#: questions by words alone, 0.64 by similarity alone, 0.71 mixed half and half.
DENSE_MIX = 0.5
#: What a model's answer adds to a sentence's score: this times the share of the answer's own
#: words the sentence holds. A hint, not the rule: the 135M model's sentence is right about a
#: third of the time, so the question decides and the answer breaks near-ties (on the
#: held-out article, 0.2 picked a gold sentence for 0.785 of the questions, 0 for 0.763,
#: 1.0 for 0.667).
ANSWER_WEIGHT = 0.2
#: Least share of an answer's own (weighted) words the supporting sentence must hold.
MIN_ANSWER_COVER = 0.5
# Sentence ends: . ! or ? (with closing quotes or brackets) before a space and an opening
# capital, digit or quote; line breaks always end a unit.
_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+(?=[\"'(\[]?[A-Z0-9])|\n+")
# Words that talk about the sources or the question rather than about the subject: the
# citation rule's, and words of questions ("what is it named", "how many").
_META = META_WORDS | frozenset("name named many much".split())


@dataclass(frozen=True)
class Evidence:
    """A sentence of source ``source`` (1-based, the [n] shown to the model)."""

    source: int
    start: int
    end: int
    text: str
    #: How much of what it was matched against it holds (0-1, by word weight).
    cover: float
    #: Its similarity to the question (None: not computed).
    similarity: float | None = None
    #: The share of an answer's own words it holds (None: no answer was given).
    answer_cover: float | None = None


def stems(text: str) -> list[str]:
    """The content words of ``text`` as stems, in order."""
    words = WORD.findall(MARKER.sub(" ", text.lower()))
    return [w[:STEM] for w in words
            if w not in STOPWORDS and w not in _META and not (w.isdigit() and len(w) == 1)]


def sentences(text: str) -> list[tuple[int, int]]:
    """``text`` cut into sentences: ``(start, end)`` offsets of each, stripped of white
    space, never longer than :data:`MAX_WORDS` words; units without a word are left out."""
    spans: list[tuple[int, int]] = []
    start = 0
    for m in _END.finditer(text):
        spans.extend(_windows(text, start, m.start()))
        start = m.end()
    spans.extend(_windows(text, start, len(text)))
    return spans


def _windows(text: str, start: int, end: int) -> list[tuple[int, int]]:
    words = list(re.finditer(r"\S+", text[start:end]))
    if not any(WORD.search(w.group()) for w in words):
        return []
    out = []
    for i in range(0, len(words), MAX_WORDS):
        chunk = words[i:i + MAX_WORDS]
        out.append((start + chunk[0].start(), start + chunk[-1].end()))
    return out


@dataclass(frozen=True)
class _Unit:
    source: int
    start: int
    end: int
    text: str
    stems: frozenset[str]


def _units(sources: Sequence[str]) -> list[_Unit]:
    return [_Unit(n, a, b, text[a:b], frozenset(stems(text[a:b])))
            for n, text in enumerate(sources, start=1) for a, b in sentences(text)]


def _weights(units: Sequence[_Unit]) -> dict[str, float]:
    """Inverse sentence frequency of each stem among ``units``: a word every sentence has
    tells them apart less than a rare one."""
    df: dict[str, int] = {}
    for u in units:
        for s in u.stems:
            df[s] = df.get(s, 0) + 1
    n = len(units)
    return {s: math.log(1 + n / d) for s, d in df.items()}


def _cover(words: set[str], unit: _Unit, weight: dict[str, float], default: float) -> float:
    total = sum(weight.get(w, default) for w in words)
    return sum(weight.get(w, default) for w in words & unit.stems) / total if total else 0.0


def _evidence(unit: _Unit, cover: float, similarity: float | None = None,
              answer_cover: float | None = None) -> Evidence:
    return Evidence(unit.source, unit.start, unit.end, unit.text, round(cover, 3),
                    None if similarity is None else round(similarity, 3),
                    None if answer_cover is None else round(answer_cover, 3))


#: A function giving the similarity (cosine, -1 to 1) of a question to each of some texts
#: (the embedding model's), or None: words alone.
Similarity = Callable[[str, Sequence[str]], Sequence[float]]


def best_for_question(question: str, sources: Sequence[str], similarity: Similarity | None = None,
                      mix: float = DENSE_MIX, answer: str = "",
                      answer_weight: float = ANSWER_WEIGHT) -> Evidence | None:
    """The sentence of ``sources`` that answers ``question`` best: the largest weighted
    share of the question's words it holds (``cover``), mixed with its ``similarity`` to the
    question when given (``mix`` of the score; ``Evidence.similarity``), plus
    ``answer_weight`` times the share of ``answer``'s own words it holds (a model's answer
    as a hint; ``Evidence.answer_cover``). Ties: the earlier source, then the earlier
    sentence. None when there is no sentence or no question word."""
    units = _units(sources)
    words = set(stems(question))
    if not units or not words:
        return None
    weight = _weights(units)
    default = math.log(1 + len(units))  # a question word no sentence has: the rarest
    covers = [_cover(words, u, weight, default) for u in units]
    own = set(stems(answer)) - words
    hints = [_cover(own, u, weight, default) for u in units] if own else [0.0] * len(units)
    sims = list(similarity(question, [u.text for u in units])) if similarity else None
    scores = [((mix * sims[i] + (1 - mix) * c) if sims else c) + answer_weight * hints[i]
              for i, c in enumerate(covers)]
    i = max(range(len(units)), key=lambda i: (scores[i], -units[i].source, -units[i].start))
    return _evidence(units[i], covers[i], float(sims[i]) if sims else None,
                     hints[i] if own else None)


def supporting(answer: str, sources: Sequence[str], question: str = "",
               among: Sequence[int] | None = None,
               min_cover: float = MIN_ANSWER_COVER) -> Evidence | None:
    """The sentence that backs ``answer``: of the sources numbered in ``among`` (default:
    all), the one holding the largest weighted share of the answer's own words (those not
    in ``question``), the question's words breaking ties; None when the answer has no words
    of its own or no sentence holds ``min_cover`` of them."""
    every = _units(sources)
    units = [u for u in every if among is None or u.source in among]
    question_words = set(stems(question))
    own = set(stems(answer)) - question_words
    if not units or not own:
        return None
    weight = _weights(every)
    default = math.log(1 + len(units))
    best = max(units, key=lambda u: (_cover(own, u, weight, default),
                                     _cover(question_words, u, weight, default), -u.source, -u.start))
    cover = _cover(own, best, weight, default)
    return _evidence(best, cover) if cover >= min_cover else None


def verbatim(quote: str, source: str) -> bool:
    """Whether ``quote`` is in ``source`` word for word (white space aside)."""
    q = " ".join(quote.split())
    return bool(q) and q in " ".join(source.split())
