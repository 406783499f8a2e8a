"""Grounded examples made from the documents already in the library, without gold data.

    assistant data synth --limit 100            # the active version writes the questions
    assistant data synth --version v3 --limit 50

For each chunk (in document order, at most ``--limit`` this run) the model is asked, through
the chat's engine, for one question the passage answers and its short answer. The pair is
**kept only when it can be checked against the chunk**: the answer (at most
:data:`MAX_ANSWER_WORDS` words) occurs in the chunk word for word (normalised as SQuAD does),
the question is a question (ends with "?", at least :data:`MIN_QUESTION_WORDS` words) and does
not itself contain the answer. A kept question is then grounded like an imported SQuAD one
(:func:`alignment.squad.ground`: the sources the product's retrieval returns for it, the
answer citing the one that holds it, or the abstention) and stored with
``source="synth:library:<chunk id>"`` (origin ``synthetic``). A chunk already tried is not
tried again, so a stopped run resumes; the report says the share kept.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import select
from tqdm import tqdm

from alignment.errors import AlignmentError
from alignment.grounded import contains_answer, normalize
from alignment.squad import SquadQuestion, write_examples, ground
from assistant import atomic
from assistant.prompting import Messages
from assistant.storage.db import Database
from assistant.storage.origins import SYNTH_PREFIX
from assistant.storage.schema import Conversation

if TYPE_CHECKING:
    from assistant.bootstrap import Library

log = logging.getLogger(__name__)

PREFIX = f"{SYNTH_PREFIX}library:"
MAX_ANSWER_WORDS = 8
MIN_QUESTION_WORDS = 4
BATCH_SIZE = 8
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


@dataclass
class SynthReport:
    chunks: int = 0  # in the library
    tried_before: int = 0
    tried: int = 0
    kept: int = 0
    #: Why the others were dropped: unparsed, answer_not_in_chunk, answer_too_long,
    #: not_a_question, question_gives_answer.
    dropped: dict[str, int] | None = None

    @property
    def kept_share(self) -> float:
        return self.kept / self.tried if self.tried else 0.0


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
    with db.read() as s:
        done |= {int(src.rsplit(":", 1)[-1]) for src in s.scalars(
            select(Conversation.source).where(Conversation.source.like(f"{PREFIX}%")))}
    return done


def _remember(state: Path | None, tried: set[int]) -> None:
    if state is not None:
        atomic.write_text(state, json.dumps(sorted(tried)))


def synthesize(db: Database, library: Library, answer: Callable[[list[Messages]], list[str]],
               system_prompt: str, *, state: Path | None = None, limit: int | None = None,
               batch_size: int = BATCH_SIZE) -> SynthReport:
    """Make grounded examples from the library's chunks with ``answer`` (prompts -> replies,
    the model writing the questions); see the module docstring."""
    documents = library.store.list_documents()
    chunks = [c for d in documents for c in library.store.document_chunks(d.id)]
    if not chunks:
        raise EmptyLibrary()
    tried = _tried(db, state)
    report = SynthReport(chunks=len(chunks), dropped={})
    todo = [c for c in chunks if c.id not in tried]
    report.tried_before = len(chunks) - len(todo)
    todo = todo[:limit] if limit is not None else todo
    with tqdm(total=len(todo), desc="Writing questions from the library", unit="chunk") as bar:
        for i in range(0, len(todo), batch_size):
            batch = todo[i:i + batch_size]
            replies = answer([prompt(c.text) for c in batch])
            examples = []
            for chunk, reply in zip(batch, replies, strict=True):
                report.tried += 1
                result = check(reply, chunk.text)
                if isinstance(result, str):
                    report.dropped[result] = report.dropped.get(result, 0) + 1
                    continue
                question, span = result
                start = chunk.text.lower().find(span.lower())
                q = SquadQuestion(str(chunk.id), chunk.document_name, question, chunk.text, (span,),
                                  (start if start >= 0 else None,), False)
                examples.append(ground(q, library))
            if examples:
                report.kept += write_examples(db, PREFIX, examples, system_prompt)
            tried |= {c.id for c in batch}
            _remember(state, tried)
            bar.update(len(batch))
    return report
