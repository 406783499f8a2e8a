"""Import a SQuAD file (v1.1 or v2.0) as grounded examples: the product's main job, answering
from the user's documents and citing them, as training data.

    assistant data import squad dev-v2.0.json                  # documents + examples
    assistant data import squad dev-v2.0.json --no-examples    # the articles only
    assistant data import squad dev-v2.0.json --title Normans --limit 150 --unanswerable-share 0.25

Each article becomes a document in the library (``<title>.txt``, its paragraphs, through the
normal ingest: chunked, embedded, indexed; an article already there is skipped). Each
question becomes a conversation (``source="squad:<file>:<question id>"``) whose answer is
chosen (a :class:`Choice`, so it exports as SFT and, once the model answered it wrongly,
as a preference pair: :mod:`alignment.on_policy`):

* the prompt is what the chat sends: the system prompt and the question with the sources
  that the product's own retrieval returns for it, numbered (stored as the answer's
  sources, so the export builds it with :func:`~assistant.chat.prompting.build_messages`);
* the answer is the gold span citing the source that holds it (:mod:`alignment.grounded`),
  or :data:`~alignment.grounded.ABSTENTION` when the question is unanswerable (v2's
  ``is_impossible``) or no retrieved source holds its answer.

A question whose every gold span is missing from its paragraph is skipped and counted. A
file that is not SQuAD is refused whole before anything is written. A question already
imported is skipped, so a stopped import is resumed by running it again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tqdm import tqdm

from alignment.errors import ImportFileError
from alignment.grounded import ABSTENTION, holding_sentence, holding_source, reference_answer
from assistant.storage.conversations import SourceRecord
from assistant.storage.db import Database
from assistant.storage.examples import ChosenThread, ExampleStore, Provenance
from assistant.storage.origins import SQUAD_PREFIX

if TYPE_CHECKING:
    from assistant.bootstrap import Library

log = logging.getLogger(__name__)

SQUAD_MODEL_ID = "imported:squad"
SQUAD_MODEL_VERSION = "squad"
BATCH_SIZE = 50
#: Questions picked when a limit is given are a seeded sample, spread over the articles'
#: paragraphs (the first N would all come from the first few paragraphs).
SAMPLE_SEED = 0
#: The share of the paragraphs ``data import squad --calibration`` leaves out of the examples:
#: questions no version was trained on, from which ``assistant models calibrate`` chooses a
#: version's abstention threshold (or ``eval --grounded-paragraphs rest`` evaluates without them).
CALIBRATION_SHARE = 0.3


@dataclass(frozen=True)
class SquadQuestion:
    id: str
    title: str
    question: str
    context: str
    answers: tuple[str, ...]  # empty for v2's unanswerable questions
    starts: tuple[int | None, ...]
    impossible: bool


@dataclass(frozen=True)
class SquadArticle:
    title: str
    paragraphs: tuple[str, ...]
    questions: tuple[SquadQuestion, ...]

    def document(self) -> tuple[str, bytes]:
        """The article as the file a user would upload: its paragraphs, a blank line apart."""
        name = "".join(c if c.isalnum() or c in "-_." else "_" for c in self.title) or "article"
        return f"{name}.txt", ("\n\n".join(self.paragraphs) + "\n").encode("utf-8")


@dataclass
class SquadReport:
    path: Path
    version: str = ""
    articles: int = 0
    questions: int = 0  # in the articles asked for
    picked: int = 0  # after --limit
    imported: int = 0
    duplicates: int = 0  # already imported
    answerable: int = 0  # imported with a cited answer
    unanswerable: int = 0  # imported as abstentions: v2 is_impossible
    not_retrieved: int = 0  # imported as abstentions: no retrieved source holds the answer
    span_not_in_context: int = 0  # skipped
    #: Questions (and their paragraphs) left out for calibration (``calibration=True``).
    calibration_questions: int = 0
    calibration_paragraphs: int = 0
    documents: list[str] = field(default_factory=list)  # what the ingest said, per article


# -- parsing --------------------------------------------------------------------------------
class _NotSquad(ValueError):
    pass


def _need(obj: Any, key: str, kind: type, where: str) -> Any:
    if not isinstance(obj, dict):
        raise _NotSquad(f"{where} is not a JSON object")
    value = obj.get(key)
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise _NotSquad(f"{where} has no {key!r} ({kind.__name__} expected)")
    return value


def parse_squad(path: str | Path) -> tuple[str, list[SquadArticle]]:
    """The SQuAD file's version and articles; :class:`ImportFileError` when it cannot be
    read or is not SQuAD (``{"data": [{"title", "paragraphs": [{"context", "qas": [...]}]}]}``)."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ImportFileError(path, "no such file") from None
    except IsADirectoryError:
        raise ImportFileError(path, "it is a folder; give the SQuAD .json file") from None
    except OSError as err:
        raise ImportFileError(path, err.strerror or str(err)) from None
    try:
        obj = json.loads(raw)
    except (ValueError, RecursionError) as err:
        raise ImportFileError(path, f"it is not JSON ({str(err)[:80]}); a SQuAD file is one JSON "
                                    "object with a 'data' list of articles") from None
    try:
        return _parse(obj)
    except _NotSquad as err:
        raise ImportFileError(path, f"it is not a SQuAD file: {err}") from None


def _parse(obj: Any) -> tuple[str, list[SquadArticle]]:
    data = _need(obj, "data", list, "the file")
    version = str(obj.get("version", ""))
    articles = []
    for a, article in enumerate(data):
        where = f"article {a + 1}"
        title = _need(article, "title", str, where)
        paragraphs, questions = [], []
        for p, para in enumerate(_need(article, "paragraphs", list, where)):
            pw = f"{where} paragraph {p + 1}"
            context = _need(para, "context", str, pw)
            paragraphs.append(context)
            for q, qa in enumerate(_need(para, "qas", list, pw)):
                qw = f"{pw} question {q + 1}"
                impossible = bool(isinstance(qa, dict) and qa.get("is_impossible", False))
                answers = _need(qa, "answers", list, qw)
                texts, starts = [], []
                for ans in answers:
                    texts.append(_need(ans, "text", str, f"{qw}'s answer"))
                    start = ans.get("answer_start")
                    starts.append(start if isinstance(start, int) and not isinstance(start, bool) else None)
                if not impossible and not texts:
                    raise _NotSquad(f"{qw} has no answers and is not marked is_impossible")
                questions.append(SquadQuestion(
                    str(_need(qa, "id", str, qw)), title, _need(qa, "question", str, qw), context,
                    () if impossible else tuple(texts), () if impossible else tuple(starts), impossible,
                ))
        articles.append(SquadArticle(title, tuple(paragraphs), tuple(questions)))
    if not articles:
        raise _NotSquad("its 'data' list is empty")
    return version or ("2.0" if any(q.impossible for a in articles for q in a.questions) else "1.1"), articles


def span_in_context(q: SquadQuestion) -> bool:
    """Whether some gold span is in the paragraph (at its answer_start, or anywhere)."""
    if q.impossible:
        return True
    for text, start in zip(q.answers, q.starts, strict=True):
        if text and (start is not None and q.context[start:start + len(text)] == text or text in q.context):
            return True
    return False


def calibration_paragraph(q: SquadQuestion) -> bool:
    """Whether ``q``'s paragraph is one of the :data:`CALIBRATION_SHARE` left for calibration:
    a hash of its article's title and its text, so the import and the calibration agree on
    every run with nothing stored."""
    digest = hashlib.sha256(f"{SAMPLE_SEED}:{q.title}\n{q.context}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < CALIBRATION_SHARE


def pick(questions: Sequence[SquadQuestion], limit: int | None, seed: int = SAMPLE_SEED,
         unanswerable_share: float | None = None) -> list[SquadQuestion]:
    """At most ``limit`` questions: a seeded sample kept in file order (all without a limit).
    ``unanswerable_share`` caps the share of v2's unanswerable questions in it (SQuAD v2's
    dev set has about half: trained on that, a small model learns to abstain too often)."""
    rng = random.Random(seed)
    indices = list(range(len(questions)))
    if unanswerable_share is not None:
        impossible = [i for i in indices if questions[i].impossible]
        possible = [i for i in indices if not questions[i].impossible]
        total = len(questions) if limit is None else min(limit, len(questions))
        # As many unanswerable as the share allows, the answerable ones fill the rest.
        n_imp = min(len(impossible), int(round(total * unanswerable_share)))
        n_pos = min(len(possible), total - n_imp)
        if unanswerable_share < 1 and n_pos:
            n_imp = min(n_imp, int(n_pos * unanswerable_share / (1 - unanswerable_share)))
        chosen = set(rng.sample(impossible, n_imp)) | set(rng.sample(possible, n_pos))
        return [q for i, q in enumerate(questions) if i in chosen]
    if limit is None or limit >= len(questions):
        return list(questions)
    chosen = set(rng.sample(indices, limit))
    return [q for i, q in enumerate(questions) if i in chosen]


def select_articles(articles: Sequence[SquadArticle], titles: Sequence[str]) -> list[SquadArticle]:
    if not titles:
        return list(articles)
    known = {a.title for a in articles}
    unknown = [t for t in titles if t not in known]
    if unknown:
        from alignment.errors import AlignmentError

        raise AlignmentError(f"No article titled {unknown[0]!r} in the file; its articles are: "
                             f"{', '.join(sorted(known))}. Nothing was imported.")
    return [a for a in articles if a.title in titles]


# -- grounded examples ----------------------------------------------------------------------
@dataclass(frozen=True)
class GroundedExample:
    """A question with the sources the chat's retrieval gives it and the reference answer."""

    question: SquadQuestion
    sources: tuple[SourceRecord, ...]
    #: The 1-based source holding the gold span (None: the answer is the abstention).
    gold_source: int | None
    #: Whether the reference answer quotes the source's sentence that holds the span.
    quote: bool = False

    @property
    def answer(self) -> str:
        span = self.question.answers[0] if self.question.answers else ""
        sentence = None
        if self.gold_source is not None:
            # The span as the holding source words it (the first gold answer it holds).
            text = self.sources[self.gold_source - 1].text
            span = next((a for a in self.question.answers if a in text), span)
            if self.quote:
                sentence = holding_sentence(span, text)
        return reference_answer(span, self.gold_source, sentence)

    @property
    def judged_answers(self) -> tuple[str, ...]:
        """The answers a model's reply is judged against (empty: it should abstain)."""
        return self.question.answers if self.gold_source is not None else ()


def ground(question: SquadQuestion, library: Library, quote: bool = False) -> GroundedExample:
    """Retrieve sources for ``question`` as the chat does (only the relevant ones: the
    chat's gate) and build its reference answer (``quote``: with the supporting sentence)."""
    hits = library.retriever.relevant(question.question).hits
    sources = tuple(
        SourceRecord(rank=n, chunk_id=h.chunk_id, document_name=h.document_name,
                     location=h.location, text=h.text, score=h.score)
        for n, h in enumerate(hits, start=1)
    )
    gold = None
    texts = [s.text for s in sources]
    for span, start in zip(question.answers, question.starts, strict=True):
        gold = holding_source(span, question.context, start, texts)
        if gold is not None:
            break
    return GroundedExample(question, sources, gold, quote)


def grounded_params(example: GroundedExample, system_prompt: str,
                    written_by: str | None = None) -> dict[str, Any]:
    """What the reference answer stores beside its text: the system prompt the export puts
    in its prompt, what judging a model's answer to it needs, and (synthetic examples) the
    model that wrote the question."""
    q = example.question
    grounded = {"id": q.id, "title": q.title, "answers": list(q.answers),
                "impossible": q.impossible, "gold_source": example.gold_source,
                "target": "quoted" if example.quote else "short"}
    if written_by:
        grounded["question_by"] = written_by
    return {"system_prompt": system_prompt, "grounded": grounded}


def _stored_ids(db: Database, prefix: str) -> set[str]:
    return {src[len(prefix):] for src in ExampleStore(db).sources(prefix)}


def import_squad(
    db: Database,
    library: Library,
    path: str | Path,
    system_prompt: str,
    *,
    documents: bool = True,
    examples: bool = True,
    titles: Sequence[str] = (),
    limit: int | None = None,
    unanswerable_share: float | None = None,
    batch_size: int = BATCH_SIZE,
    quote: bool = False,
    calibration: bool = False,
) -> SquadReport:
    """Import the SQuAD file at ``path``; see the module docstring. With ``calibration``, the
    questions of the paragraphs :func:`calibration_paragraph` picks are left out."""
    path = Path(path)
    version, articles = parse_squad(path)
    articles = select_articles(articles, titles)
    report = SquadReport(path, version, len(articles), sum(len(a.questions) for a in articles))
    if documents:
        for article in articles:
            name, data = article.document()
            result = library.ingestor.ingest_bytes(name, data)
            report.documents.append(result.describe())
    if not examples:
        return report
    # Conversation.source holds 300 characters: "squad:" + name + ":" + the question id.
    prefix = f"{SQUAD_PREFIX}{path.name[:150]}:"
    done = _stored_ids(db, prefix)
    asked = [q for a in articles for q in a.questions]
    if calibration:
        left = {q.id for q in asked if calibration_paragraph(q)}
        report.calibration_questions = len(left)
        report.calibration_paragraphs = len({(q.title, q.context) for q in asked if q.id in left})
        asked = [q for q in asked if q.id not in left]
    questions = pick(asked, limit, unanswerable_share=unanswerable_share)
    report.picked = len(questions)
    pending: list[GroundedExample] = []
    for q in tqdm(questions, desc=f"Grounding {path.name}", unit="question"):
        if q.id in done:
            report.duplicates += 1
            continue
        if not span_in_context(q):
            report.span_not_in_context += 1
            continue
        example = ground(q, library, quote)
        done.add(q.id)
        if q.impossible:
            report.unanswerable += 1
        elif example.gold_source is None:
            report.not_retrieved += 1
        else:
            report.answerable += 1
        pending.append(example)
        if len(pending) >= batch_size:
            report.imported += write_examples(db, prefix, pending, system_prompt)
            pending = []
    if pending:
        report.imported += write_examples(db, prefix, pending, system_prompt)
    log.info("Imported %d grounded examples from %s", report.imported, path)
    return report


def write_examples(db: Database, prefix: str, batch: list[GroundedExample], system_prompt: str,
                   written_by: str | None = None) -> int:
    """One transaction: every example of the batch, or none of them. ``written_by``: the model
    that wrote the questions (synthetic examples), kept with each as ``grounded.question_by``.
    Each example is a conversation of its question and the reference answer, chosen, shown the
    example's sources (the one holding the answer cited)."""
    return ExampleStore(db).add_threads([
        ChosenThread(
            source=f"{prefix}{ex.question.id}", turns=(("user", ex.question.question),),
            chosen=ex.answer,
            provenance=Provenance(SQUAD_MODEL_ID, SQUAD_MODEL_VERSION,
                                  grounded_params(ex, system_prompt, written_by),
                                  prompt_tokens=0, completion_tokens=0, latency_ms=0.0),
            sources=tuple(replace(src, cited=src.rank == ex.gold_source) for src in ex.sources),
        )
        for ex in batch
    ])


__all__ = ["ABSTENTION", "GroundedExample", "SquadReport", "ground", "import_squad", "parse_squad"]
