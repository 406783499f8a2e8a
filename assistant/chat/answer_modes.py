"""How an answer from the documents is formed, and the evidence stored with it.

Three modes (the ``answers.mode`` setting), one function (:func:`compose`), used by the
chat, the terminal chat and ``assistant eval`` alike (``data on-policy`` judges the model's
own words, which is what training changes, and rejects a misquote):

* ``free``: the model's answer as it wrote it (what the product did before); the evidence
  of each source it cites (or that citation attribution gives it) is the sentence of that
  source that holds the answer's own words, when one does.
* ``quoted``: the source sentence that answers the question best (the model's first
  sentence breaking near-ties), quoted word for word with its ``[n]``, after the model's
  first sentence when that sentence backs it (holds most of the model's own words); the
  model's words are left out when it does not, so that nothing unsupported is shown as if
  the quote backed it.
* ``extractive``: no language model at all: the source sentence that answers the question
  best (:func:`assistant.chat.evidence.best_for_question`), quoted with its ``[n]``.

In the two quoting modes the answer is :data:`ABSTENTION` when no source sentence is similar
enough to the question (``answers.min_similarity``), and a quote is never altered: it is a
slice of the source's stored text. In quoted mode the model's own "The documents do not
say." is kept when the model gave it at least ``answers.min_abstain_probability`` (the
product of its tokens' probabilities, when the engine gives them); a less sure abstention is
answered with the best source sentence instead, quoted.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from assistant.chat.citations import cite, explicit_citations
from assistant.chat.evidence import (
    MIN_ANSWER_COVER,
    Evidence,
    Similarity,
    best_for_question,
    sentences,
    supporting,
    verbatim,
)
from assistant.engines.generation import FINISH_STOP, GenerationStats, TokenStream, leading_probability

if TYPE_CHECKING:
    from assistant.documents.embedding import Embedder

#: The answer to a question the sources do not answer (the training data teaches it, the
#: evaluation counts it as abstaining).
ABSTENTION = "The documents do not say."
MODES = ("free", "quoted", "extractive")
#: Modes that need no language model.
WITHOUT_MODEL = ("extractive",)
_FIRST_SENTENCE = re.compile(r"(.+?[.!?](?:\s*\[\d+(?:\s*,\s*\d+)*\])*[\"')\]]*)(?=\s|$)", re.S)
_QUOTE = re.compile(r'"([^"\n]+)"\s*\[(\d+)\]')


@dataclass(frozen=True)
class Composed:
    """An answer as shown and stored, and the evidence of each source (by its [n])."""

    text: str
    evidence: dict[int, tuple[tuple[int, int], ...]] = field(default_factory=dict)
    #: How it was formed: "model", "model+quote", "quote" (extractive), "abstained", "head"
    #: (abstained by the answerability head, the model not asked), or "plain" (no sources: a
    #: chat answer).
    how: str = "model"


def first_sentence(text: str) -> str:
    """The first sentence of ``text`` (with the markers right after it), or all of its first
    line when it has no sentence end."""
    line = text.strip().split("\n", 1)[0].strip()
    m = _FIRST_SENTENCE.match(line)
    return (m.group(1) if m else line).strip()


def abstains(answer: str) -> bool:
    """Whether the first sentence of ``answer`` (a model's) says :data:`ABSTENTION`."""
    return ABSTENTION.lower().rstrip(".") in first_sentence(answer).lower()


def sentence_done(text: str) -> bool:
    """Whether ``text`` (a stream so far) already holds its first whole sentence: something
    follows it, so its markers are complete."""
    stripped = text.lstrip()
    if "\n" in stripped.rstrip("\n") or stripped.endswith("\n\n"):
        return bool(stripped.strip())
    first = first_sentence(stripped)
    rest = stripped[len(first):]
    return bool(first) and bool(rest.strip()) and not rest.lstrip().startswith("[")


def quotes(answer: str) -> list[tuple[str, int]]:
    """The ``"quote" [n]`` pairs of an answer."""
    return [(q, int(n)) for q, n in _QUOTE.findall(answer)]


def unverified_quotes(answer: str, sources: Sequence[str]) -> list[tuple[str, int]]:
    """The ``"quote" [n]`` pairs of ``answer`` that are not word for word in source n (or
    name no source): the app shows them as not verified, never as quotes."""
    return [(q, n) for q, n in quotes(answer)
            if not (1 <= n <= len(sources) and verbatim(q, sources[n - 1]))]


def _misquotes(sentence: str, sources: Sequence[str]) -> bool:
    """Whether ``sentence`` puts in quotation marks words that no source has as they are."""
    return any(not any(verbatim(q, s) for s in sources)
               for q in re.findall(r'"([^"\n]+)"', sentence))


def _with_marker(sentence: str, n: int) -> str:
    """``sentence`` citing source ``n`` (after its end: what was streamed stays as it was)."""
    return sentence if re.search(r"\[\d+", sentence) else f"{sentence} [{n}]"


def quoted(sentence: str, source: int) -> str:
    """``sentence`` of source ``source`` (1-based) quoted as answers quote it: ``"..." [n]``."""
    return f'"{sentence}" [{source}]'


def _quoted(e: Evidence) -> str:
    return quoted(e.text, e.source)


def _span(e: Evidence) -> dict[int, tuple[tuple[int, int], ...]]:
    return {e.source: ((e.start, e.end),)}


def _relevant(best: Evidence | None, min_similarity: float) -> bool:
    if best is None:
        return False
    return (best.similarity if best.similarity is not None else best.cover) >= min_similarity


def extract(question: str, sources: Sequence[str], similarity: Similarity | None = None,
            min_similarity: float = 0.0) -> Composed:
    """The extractive answer: the best source sentence, quoted, or the abstention when none
    is similar enough to the question."""
    best = best_for_question(question, sources, similarity)
    if not _relevant(best, min_similarity):
        return Composed(ABSTENTION, how="abstained")
    return Composed(_quoted(best), _span(best), "quote")


def evidence_of(answer: str, sources: Sequence[str], question: str = "",
                cited: set[int] | None = None) -> dict[int, tuple[tuple[int, int], ...]]:
    """For each source the answer cites (or is attributed to: ``cited``, when the caller
    has it from :func:`assistant.chat.citations.cite`), the sentences that back its sentences:
    each sentence of the answer is matched within the sources it cites itself, else within
    all the answer cites."""
    cited = sorted(cite(answer, sources, question).cited if cited is None else cited)
    found: dict[int, list[tuple[int, int]]] = {}
    for a, b in sentences(answer) if cited else ():
        sentence = answer[a:b]
        own = sorted(explicit_citations(sentence, len(sources))) or cited
        e = supporting(sentence, sources, question, among=own)
        if e is not None and (e.start, e.end) not in found.get(e.source, []):
            found.setdefault(e.source, []).append((e.start, e.end))
    return {n: tuple(sorted(spans)) for n, spans in sorted(found.items())}


#: ``answers.min_abstain_probability`` for a version that was not calibrated (``assistant
#: models calibrate``): chosen on a trained version's questions of its own article (the
#: trade-off is in docs/training.md).
DEFAULT_MIN_ABSTAIN_PROBABILITY = 0.2


def abstain_threshold(setting: float | None, calibrated: float | None) -> float:
    """The ``answers.min_abstain_probability`` in force: the setting when it is set, else the
    answering version's own (``calibrated``), else :data:`DEFAULT_MIN_ABSTAIN_PROBABILITY`."""
    if setting is not None:
        return setting
    return DEFAULT_MIN_ABSTAIN_PROBABILITY if calibrated is None else calibrated


def compose(mode: str, answer: str, question: str, sources: Sequence[str],
            similarity: Similarity | None = None, min_similarity: float = 0.0,
            probability: float | None = None, min_abstain_probability: float = 0.0,
            unanswerable: bool = False) -> Composed:
    """The answer shown for the model's ``answer`` (ignored in extractive mode) to
    ``question`` with ``sources`` (texts in [n] order), in ``mode``. ``probability``: the
    probability the model gave its first sentence (None: not known); in quoted mode an
    abstention given less than ``min_abstain_probability`` is not trusted: the best source
    sentence is quoted instead. ``unanswerable``: the answerability head judged that the
    sources do not answer the question (:mod:`assistant.chat.answerability`); quoted mode
    then abstains."""
    if mode not in MODES:
        raise ValueError(f"Unknown answer mode {mode!r}; the modes are {', '.join(MODES)}.")
    if not sources:
        return Composed(answer, how="plain")
    if mode == "free":
        return Composed(answer, evidence_of(answer, sources, question), "model")
    if mode == "extractive":
        return extract(question, sources, similarity, min_similarity)
    if unanswerable:
        return Composed(ABSTENTION, how="head")
    if abstains(answer):
        if probability is not None and probability < min_abstain_probability:
            return extract(question, sources, similarity, min_similarity)  # an unsure abstention
        return Composed(ABSTENTION, how="abstained")
    short = first_sentence(answer)
    best = best_for_question(question, sources, similarity, answer=short)
    if not _relevant(best, min_similarity):
        return Composed(ABSTENTION, how="abstained")
    if (best.answer_cover or 0.0) < MIN_ANSWER_COVER or _misquotes(short, sources):
        return Composed(_quoted(best), _span(best), "quote")  # the model's words lack support
    text = f"{_with_marker(short, best.source)}\n\n{_quoted(best)}"
    return Composed(text, _span(best), "model+quote")


def engine_without_model(how: str) -> str:
    """What the stored answer names as its engine when no language model wrote any of it."""
    return "answerability head (no model)" if how == "head" else "extractive (no model)"


def similarity_of(embedder: Embedder) -> Similarity:
    """The cosine similarity of a question to texts by ``embedder`` (normalized vectors)."""
    def similarity(question: str, texts: Sequence[str]) -> list[float]:
        vectors = embedder.encode([question, *texts])
        return [float(x) for x in vectors[1:] @ vectors[0]]
    return similarity


#: Shown (in the terminal) when the model's streamed sentence is replaced by the quote.
REPLACED = "[the sources do not back that; what they say:]"


class ComposedStream:
    """A token stream (:class:`assistant.engines.generation.TokenStream`) of a composed answer.

    The model's stream (None in extractive mode) is shown as it comes up to the end of its
    first sentence, then stopped; ``compose`` makes the answer of that sentence (given the
    probability the model gave it, when its stream has log-probabilities), and the
    rest of it (the quote) follows. When the composed answer does not begin with what was
    shown (the sources do not back the model's sentence), :data:`REPLACED` and the whole
    answer follow, ``replaced`` is set, and ``composed.text`` is the answer to store: the
    app shows the stored answer once the stream ends. Stopping it (the user) before the
    sentence ends keeps what was shown, composed with nothing."""

    def __init__(self, compose: Callable[[str, float | None], Composed], inner: TokenStream | None,
                 version: str, started: float | None = None) -> None:
        self._compose = compose
        self._inner = inner
        #: Whether a language model writes part of the answer (not in extractive mode).
        self.uses_model = inner is not None
        self.stats = inner.stats if inner is not None else GenerationStats()
        self.version = inner.version if inner is not None else version
        self.composed: Composed | None = None
        #: What the model wrote before it was stopped ("" in extractive mode).
        self.model_text = ""
        self.replaced = False
        self._stopped = threading.Event()
        #: When the wait began (``started``: before the answerability head was asked).
        self._started = time.perf_counter() if started is None else started

    def __iter__(self) -> Iterator[str]:
        said = shown = ""
        if self._inner is not None:
            for chunk in self._inner:
                said += chunk
                if sentence_done(said):
                    self._inner.stop()  # the rest would not be shown
                    break
                new = said.strip()[len(shown):]  # white space waits for the next word
                if new:
                    shown += new
                    yield new
        if self._stopped.is_set():
            self.stats.stopped = True
            return
        self.model_text = said.strip()
        probability = None
        if self._inner is not None:
            probability = leading_probability(self._inner.stats.logprobs, first_sentence(said))
        self.composed = self._compose(said, probability)
        s = self.stats
        s.stopped = False
        s.finish_reason = FINISH_STOP
        s.latency_ms = (time.perf_counter() - self._started) * 1000
        if s.ttft_ms is None or self._inner is None:
            s.ttft_ms = s.latency_ms
        text = self.composed.text
        if text.startswith(shown):
            if text[len(shown):]:
                yield text[len(shown):]
        else:
            self.replaced = True
            yield f"\n{REPLACED}\n{text}"

    def stop(self) -> None:
        self._stopped.set()
        if self._inner is not None:
            self._inner.stop()
        self.stats.stopped = True
