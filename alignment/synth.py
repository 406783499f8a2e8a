"""Grounded examples made from the documents already in the library, without gold data.

    assistant data synth --limit 100            # the active version writes the questions
    assistant data synth --version v3 --limit 50 --per-chunk 3 --document guide.pdf

For each chunk (in document order, at most ``--limit`` this run; only those of the
``--document`` names when given) the model is asked, through the chat's engine, for a question
the passage answers and its short answer: ``--per-chunk K`` times, the first greedy, the
others sampled (:data:`SAMPLED`) so that they differ. A pair is **kept only when it can be
checked against the chunk**: the answer (at most :data:`MAX_ANSWER_WORDS` words) occurs in the
chunk word for word (normalised as SQuAD does), the question is a question (ends with "?", at
least :data:`MIN_QUESTION_WORDS` words) and does not itself contain the answer; a question the
chunk already got (normalised) is dropped as a duplicate. A kept question is then grounded
like an imported SQuAD one (:func:`alignment.squad.ground`: the sources the product's
retrieval returns for it, the answer citing the one that holds it, or the abstention) and
stored with ``source="synth:library:<chunk id>"`` for the chunk's first attempt and
``"synth:library:<chunk id>:<attempt>"`` for the others (origin ``synthetic``). A chunk already
tried (with however many attempts) is not tried again, so a stopped run resumes (a run the
model fails mid-way keeps what it kept; the failed batch is tried again next time); the report
says the share of attempts kept; each kept example records who wrote its question
(``grounded.question_by``). ``--teacher-url`` has an OpenAI-compatible server write the
questions instead (:mod:`alignment.teacher`).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from tqdm import tqdm

from alignment.errors import AlignmentError
from alignment.grounded import contains_answer, normalize
from alignment.squad import SquadQuestion, write_examples, ground
from assistant import atomic
from assistant.errors import AssistantError
from assistant.engines.generation import GenerationParams
from assistant.engines.messages import Messages
from assistant.storage.db import Database
from assistant.storage.examples import ExampleStore
from assistant.storage.origins import SYNTH_PREFIX

if TYPE_CHECKING:
    from assistant.bootstrap import Library
    from assistant.storage.documents import StoredChunk

log = logging.getLogger(__name__)

PREFIX = f"{SYNTH_PREFIX}library:"
MAX_ANSWER_WORDS = 8
MIN_QUESTION_WORDS = 4
BATCH_SIZE = 8
MAX_NEW_TOKENS = 64
#: The first attempt at a chunk, and the others (sampled, so that they differ: each sample
#: continues the engine's random state; no engine takes a per-request seed).
GREEDY = GenerationParams(temperature=0.0, top_p=1.0, max_new_tokens=MAX_NEW_TOKENS)
SAMPLED = GenerationParams(temperature=0.8, top_p=0.95, max_new_tokens=MAX_NEW_TOKENS)
#: The file (in the data folder) that remembers the chunks tried and dropped, so that a run
#: resumes; kept ones are remembered by their stored example.
TRIED_FILE = "synth_tried.json"

INSTRUCTION = (
    "Read the passage. Write one question that the passage answers, and the answer: a few "
    "words copied exactly from the passage. Reply in two lines:\nQuestion: ...\nAnswer: ..."
)
_LINE = re.compile(r"^\s*(question|answer)\s*:\s*(.+?)\s*$", re.IGNORECASE | re.MULTILINE)


class EmptyLibrary(AlignmentError):
    def __init__(self) -> None:
        super().__init__("The library has no documents to make questions from: upload some "
                         "(`assistant ingest FILES` or the Documents page), then run "
                         "`assistant data synth` again. Nothing was made.")


class UnknownDocument(AlignmentError):
    def __init__(self, unknown: list[str], known: list[str]) -> None:
        names = ", ".join(repr(n) for n in unknown)
        have = ", ".join(repr(n) for n in known) or "none"
        super().__init__(f"No document named {names} in the library (`assistant documents list`); "
                         f"it has: {have}. Nothing was made.")


class SynthStopped(AlignmentError):
    """The model writing the questions failed mid-run: what was kept stays, the chunks not
    answered are not marked tried."""

    def __init__(self, err: Exception, report: SynthReport) -> None:
        self.report = report
        super().__init__(
            f"{err} Stopped after {report.tried} chunks: the {report.kept} grounded examples kept "
            "stay, and the chunks not answered are not marked tried; run `assistant data synth` "
            "again to resume.")


@dataclass
class SynthReport:
    chunks: int = 0  # in the library (in the chosen documents)
    tried_before: int = 0
    tried: int = 0  # chunks this run
    attempts: int = 0  # questions asked for this run (up to per_chunk a chunk)
    kept: int = 0
    #: Attempts whose question the chunk already got (normalised): not stored again.
    duplicates: int = 0
    #: Why the others were dropped: unparsed, answer_not_in_chunk, answer_too_long,
    #: not_a_question, question_gives_answer.
    dropped: dict[str, int] | None = None

    @property
    def kept_share(self) -> float:
        """Of the attempts."""
        return self.kept / self.attempts if self.attempts else 0.0


def prompt(chunk_text: str) -> Messages:
    return [{"role": "user", "content": f"{INSTRUCTION}\n\nPassage:\n{chunk_text}"}]


def check(reply: str, chunk_text: str) -> tuple[str, str] | str:
    """``(question, answer)`` when the reply passes the check against the chunk (see the
    module docstring), else the reason it does not."""
    found = {k.lower(): v for k, v in _LINE.findall(reply)}
    question, answer = found.get("question", ""), found.get("answer", "").rstrip(".")
    if not question or not answer:
        return "unparsed"
    if len(answer.split()) > MAX_ANSWER_WORDS:
        return "answer_too_long"
    if not contains_answer(chunk_text, [answer]):
        return "answer_not_in_chunk"
    if not question.endswith("?") or len(question.split()) < MIN_QUESTION_WORDS:
        return "not_a_question"
    if normalize(answer) in normalize(question):
        return "question_gives_answer"
    return question, answer


def _tried(db: Database, state: Path | None) -> set[int]:
    done: set[int] = set()
    if state is not None and state.is_file():
        try:
            done = {int(i) for i in json.loads(state.read_text())}
        except (ValueError, TypeError):
            log.warning("%s is unreadable: its chunks are tried again", state)
    # "<chunk id>" (a chunk's first attempt) or "<chunk id>:<attempt>".
    done |= {int(src[len(PREFIX):].split(":", 1)[0]) for src in ExampleStore(db).sources(PREFIX)}
    return done


def _remember(state: Path | None, tried: set[int]) -> None:
    if state is not None:
        atomic.write_text(state, json.dumps(sorted(tried)))


def chunks_of(library: Library, documents: Sequence[str] = ()) -> list[StoredChunk]:
    """The library's chunks in document order, only those of ``documents`` (names) when given.
    Raises :class:`EmptyLibrary` or :class:`UnknownDocument` (before anything is made)."""
    stored = library.store.list_documents()
    if not stored:
        raise EmptyLibrary()
    if documents:
        unknown = sorted(set(documents) - {d.name for d in stored})
        if unknown:
            raise UnknownDocument(unknown, sorted({d.name for d in stored}))
        stored = [d for d in stored if d.name in set(documents)]
    chunks = [c for d in stored for c in library.store.document_chunks(d.id)]
    if not chunks:
        raise EmptyLibrary()
    return chunks


def synthesize(db: Database, library: Library,
               answer: Callable[[list[Messages], GenerationParams], list[str]],
               system_prompt: str, *, state: Path | None = None, limit: int | None = None,
               batch_size: int = BATCH_SIZE, per_chunk: int = 1,
               documents: Sequence[str] = (), written_by: str | None = None) -> SynthReport:
    """Make grounded examples from the library's chunks with ``answer`` (prompts and the
    sampling -> replies, the model writing the questions: ``written_by`` names it, stored with
    each example); see the module docstring."""
    if per_chunk < 1:
        raise ValueError("per_chunk must be at least 1")
    chunks = chunks_of(library, documents)
    tried = _tried(db, state)
    report = SynthReport(chunks=len(chunks), dropped={})
    todo = [c for c in chunks if c.id not in tried]
    report.tried_before = len(chunks) - len(todo)
    todo = todo[:limit] if limit is not None else todo
    with tqdm(total=len(todo), desc="Writing questions from the library", unit="chunk") as bar:
        for i in range(0, len(todo), batch_size):
            batch = todo[i:i + batch_size]
            prompts = [prompt(c.text) for c in batch]
            try:
                replies = [answer(prompts, GREEDY if k == 0 else SAMPLED) for k in range(per_chunk)]
            except AssistantError as err:  # e.g. the engine's server gone
                raise SynthStopped(err, report) from err
            examples = []
            for chunk, chunk_replies in zip(batch, zip(*replies, strict=True), strict=True):
                report.tried += 1
                seen: set[str] = set()
                for k, reply in enumerate(chunk_replies):
                    report.attempts += 1
                    result = check(reply, chunk.text)
                    if isinstance(result, str):
                        report.dropped[result] = report.dropped.get(result, 0) + 1
                        continue
                    question, span = result
                    if normalize(question) in seen:
                        report.duplicates += 1
                        continue
                    seen.add(normalize(question))
                    start = chunk.text.lower().find(span.lower())
                    qid = str(chunk.id) if k == 0 else f"{chunk.id}:{k + 1}"
                    q = SquadQuestion(qid, chunk.document_name, question, chunk.text, (span,),
                                      (start if start >= 0 else None,), False)
                    examples.append(ground(q, library))
            if examples:
                report.kept += write_examples(db, PREFIX, examples, system_prompt, written_by)
            tried |= {c.id for c in batch}
            _remember(state, tried)
            bar.update(len(batch))
    return report
