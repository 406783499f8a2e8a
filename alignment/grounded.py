"""Grounded answers: what a good answer from retrieved sources is, and how one is judged.

Pure Python (no model, no database): the SQuAD import builds the reference answers here,
the on-policy pairs and ``assistant eval`` judge the model's answers here, by one set of
rules stated once:

* an answer is **correct** when its first :data:`MAX_JUDGED_WORDS` words contain a gold
  answer, both normalised the SQuAD way (lower case, no punctuation, no articles, single
  spaces); to an unanswerable question the correct answer is the abstention;
* it **abstains** when it contains :data:`ABSTENTION` (normalised the same way), the one
  sentence the training data teaches for "the sources do not say";
* its **citation is right** when a source it cites with ``[n]`` holds a gold answer;
* its **quotes are verbatim** when each ``"quote" [n]`` is word for word in source n;
* the reference answer is the gold span followed by the ``[n]`` of the source that holds it.
"""

from __future__ import annotations

import re
import string
from collections.abc import Sequence
from dataclasses import dataclass

from assistant.chat.answer_modes import ABSTENTION, quotes
from assistant.chat.citations import explicit_citations
from assistant.chat.evidence import verbatim

#: Words of an answer that are judged: a longer answer cannot win by its length (a gold span
#: said somewhere in 200 words is not an answer a reader finds).
MAX_JUDGED_WORDS = 50

#: Characters of the context on each side of a gold span that locate it in a chunk (a
#: short answer like "France" may be in several chunks: the one with its surroundings is
#: the one it came from).
SPAN_WINDOW = 40


def normalize(text: str) -> str:
    """SQuAD's answer normalisation: lower case, no punctuation, no articles, one space."""
    text = text.lower().translate(str.maketrans("", "", string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def contains_answer(text: str, answers: Sequence[str]) -> bool:
    said = normalize(text)
    return any(normalize(a) and normalize(a) in said for a in answers)


def is_abstention(answer: str) -> bool:
    return normalize(ABSTENTION) in normalize(answer)


def cited(answer: str, sources: int) -> set[int]:
    """The source numbers the answer cites itself with ``[n]`` (1-based)."""
    return explicit_citations(answer, sources)


def reference_answer(span: str, source: int | None, sentence: str | None = None) -> str:
    """The answer the model is taught: the gold span citing source ``source`` (1-based), or
    the abstention when no source holds it. With ``sentence`` (the source's sentence that
    holds the span), that sentence follows, quoted word for word: the answer the quoted
    answer mode shows, so the model learns to answer, quote and cite."""
    if source is None:
        return ABSTENTION
    span = " ".join(span.split()).rstrip(".")
    short = f"{span} [{source}]."
    if not sentence:
        return short
    from assistant.chat.answer_modes import quoted

    return f"{short}\n\n{quoted(sentence, source)}"


def holding_sentence(span: str, source: str) -> str | None:
    """The sentence of ``source`` that holds ``span`` (verbatim, as the source words it; the
    first such sentence), or None when no single sentence holds it."""
    from assistant.chat.evidence import sentences

    span = " ".join(span.split())
    if not span:
        return None
    for start, end in sentences(source):
        if span in " ".join(source[start:end].split()):
            return source[start:end]
    return None


def holding_source(span: str, context: str, start: int | None, sources: Sequence[str]) -> int | None:
    """The 1-based number of the source the gold span came from: the first that holds the
    span with its surroundings in ``context``, else the first that holds the span at all
    (normalised), else None."""
    if not span.strip():
        return None
    flat = [" ".join(s.split()) for s in sources]
    if start is not None and 0 <= start <= len(context):
        for before, after in ((SPAN_WINDOW, SPAN_WINDOW), (SPAN_WINDOW, 0), (0, SPAN_WINDOW)):
            snippet = " ".join(context[max(0, start - before): start + len(span) + after].split())
            for n, text in enumerate(flat, start=1):
                if snippet and snippet in text:
                    return n
    for n, text in enumerate(sources, start=1):
        if contains_answer(text, [span]):
            return n
    return None


@dataclass(frozen=True)
class Verdict:
    """One answer judged against its grounded example."""

    correct: bool  # holds a gold answer (answerable) or abstains (unanswerable)
    abstained: bool
    #: A cited source holds a gold answer (None: the question has no answer to cite).
    cites_right: bool | None
    cites_any: bool
    #: Every quote is word for word in the source it names (None: the answer quotes nothing).
    quotes_verbatim: bool | None = None

    @property
    def good(self) -> bool:
        """What the on-policy pairs keep as it is: right, cited right (or rightly abstaining),
        and quoting only what its sources say."""
        return self.correct and self.cites_right is not False and self.quotes_verbatim is not False


def judge(answer: str, answers: Sequence[str], sources: Sequence[str]) -> Verdict:
    """Judge ``answer`` to a question with gold ``answers`` (empty: unanswerable from these
    sources) given ``sources`` (their texts, in [n] order)."""
    numbers = cited(answer, len(sources))
    abstained = is_abstention(answer)
    quoted = quotes(answer)
    exact = all(1 <= n <= len(sources) and verbatim(q, sources[n - 1]) for q, n in quoted) \
        if quoted else None
    if not answers:
        return Verdict(abstained, abstained, None, bool(numbers), exact)
    judged = " ".join(answer.split()[:MAX_JUDGED_WORDS])
    correct = contains_answer(judged, answers) and not abstained
    right = any(contains_answer(sources[n - 1], answers) for n in numbers)
    return Verdict(correct, abstained, right, bool(numbers), exact)
