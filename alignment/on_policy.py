"""Preference pairs with on-policy negatives: the active model answers each grounded example
(:mod:`alignment.squad`, synthetic examples) exactly as the chat would, and an answer that is
wrong, cites no source that holds the answer, or fails to abstain becomes the rejected side
of a pair whose chosen side is the grounded answer.

    assistant data on-policy                    # every grounded example not yet answered
    assistant data on-policy --limit 100 --max-new-tokens 48

The model's answer is stored as another (hidden) alternative of the example's question,
with the same sources, so that the existing export pairs it with the chosen grounded answer
(``preference``) and the Feedback page shows and deletes it like any pair. An answer judged
good (:func:`alignment.grounded.judge`) makes no pair. Either way the grounded answer
records that the version answered it (``params["on_policy"][version]``): each batch is
committed as it ends, so a stopped run keeps what it made and the next one skips what was
done.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from tqdm import tqdm

from alignment.grounded import Verdict, cited, judge
from assistant.engines.messages import Messages
from assistant.chat.prompting import build_messages
from assistant.storage.conversations import SourceRecord
from assistant.storage.db import Database
from assistant.storage.examples import Answered, ExampleStore, Provenance, Rejected
from assistant.storage.origins import GROUNDED_PREFIXES

if TYPE_CHECKING:
    from assistant.config import Settings

log = logging.getLogger(__name__)

BATCH_SIZE = 8
MAX_NEW_TOKENS = 48


@dataclass(frozen=True)
class StoredExample:
    """A grounded example as stored: its question, reference answer and sources."""

    conversation_id: int
    question_id: int
    answer_id: int
    question: str
    reference: str
    system_prompt: str
    sources: tuple[SourceRecord, ...]
    #: Gold answers a reply must contain (empty: it must abstain).
    answers: tuple[str, ...]
    #: version -> "rejected" (a pair was made) or "kept" (its answer was good).
    answered: dict[str, str]

    def messages(self) -> Messages:
        """The prompt the chat sends for this question with these sources."""
        return build_messages(self.system_prompt, [], self.question, self.sources)


def grounded_examples(db: Database) -> list[StoredExample]:
    """Every grounded example in the database (the chosen answer of a grounded
    conversation that carries ``params["grounded"]``), oldest first."""
    out: dict[int, StoredExample] = {}  # the newest choice of a question counts
    for row in ExampleStore(db).chosen_answers(GROUNDED_PREFIXES):
        params = row.params or {}
        g = params.get("grounded")
        if not isinstance(g, dict):
            continue
        answers = tuple(g.get("answers") or ()) if g.get("gold_source") is not None else ()
        out[row.question_id] = StoredExample(
            row.conversation_id, row.question_id, row.answer_id, row.question, row.answer,
            params.get("system_prompt") or "", row.sources, answers, dict(params.get("on_policy") or {}))
    return list(out.values())


@dataclass
class OnPolicyReport:
    version: str
    examples: int = 0  # grounded examples in the database
    done_before: int = 0  # answered by this version in an earlier run
    answered: int = 0
    rejected: int = 0  # pairs made
    kept: int = 0  # good answers (no pair)
    #: Why answers were rejected: abstained (said the documents do not say, though a source
    #: holds the answer), wrong, uncited (right but citing no source that holds the answer),
    #: misquoted (a "quote" [n] that is not word for word in source n), not_abstained.
    reasons: dict[str, int] = field(default_factory=dict)
    repetition_penalty: float = 1.0  # of the answers (the chat's, unless told otherwise)


def reason(verdict: Verdict, should_abstain: bool) -> str | None:
    """Why an answer is rejected, or None when it is good."""
    if should_abstain:
        return None if verdict.abstained else "not_abstained"
    if verdict.quotes_verbatim is False:
        return "misquoted"
    if not verdict.correct:
        return "abstained" if verdict.abstained else "wrong"
    if not verdict.cites_right:
        return "uncited"
    return None


#: (prompts) -> answers, in order: the active version answering through the chat's engine.
AnswerFn = Callable[[list[Messages]], list[str]]


def collect(db: Database, answer: AnswerFn, version: str, model_id: str, engine: str,
            *, limit: int | None = None, batch_size: int = BATCH_SIZE,
            max_new_tokens: int = MAX_NEW_TOKENS, repetition_penalty: float = 1.0) -> OnPolicyReport:
    """Have ``version`` answer the grounded examples it has not answered yet (at most
    ``limit``) and store a pair for each bad answer; see the module docstring."""
    examples = grounded_examples(db)
    report = OnPolicyReport(version, examples=len(examples), repetition_penalty=repetition_penalty)
    todo = [e for e in examples if version not in e.answered]
    report.done_before = len(examples) - len(todo)
    if limit is not None:
        todo = todo[:limit]
    with tqdm(total=len(todo), desc=f"{version} answers grounded examples", unit="question") as bar:
        for i in range(0, len(todo), batch_size):
            batch = todo[i:i + batch_size]
            said = answer([e.messages() for e in batch])
            _store(db, batch, said, version, model_id, engine, max_new_tokens, report)
            bar.update(len(batch))
    log.info("on-policy %s: %d answered, %d pairs, %d kept", version, report.answered,
             report.rejected, report.kept)
    return report


def _store(db: Database, batch: list[StoredExample], said: list[str], version: str, model_id: str,
           engine: str, max_new_tokens: int, report: OnPolicyReport) -> None:
    """One transaction per batch: its pairs and the marks that it was answered."""
    answered: list[Answered] = []
    reasons: dict[int, str | None] = {}
    for example, text in zip(batch, said, strict=True):
        verdict = judge(text, example.answers, [src.text for src in example.sources])
        why = reasons[example.answer_id] = reason(verdict, not example.answers)
        answered.append(Answered(example.conversation_id, example.question_id, example.answer_id,
                                 None if why is None else _rejected(example, text, why, version, model_id,
                                                                    engine, max_new_tokens, report)))
    found = ExampleStore(db).record_answered(version, answered)
    report.answered += len(batch)
    for example in batch:
        if example.answer_id not in found:  # deleted meanwhile (the Feedback page)
            continue
        why = reasons[example.answer_id]
        if why is None:
            report.kept += 1
        else:
            report.rejected += 1
            report.reasons[why] = report.reasons.get(why, 0) + 1


def _rejected(example: StoredExample, text: str, why: str, version: str, model_id: str, engine: str,
              max_new_tokens: int, report: OnPolicyReport) -> Rejected:
    """The bad answer as stored: a hidden alternative of the question, with how it was made
    and the sources it was shown (those it cites marked)."""
    numbers = cited(text, len(example.sources))
    params: dict[str, Any] = {
        "temperature": 0.0, "top_p": 1.0, "max_new_tokens": max_new_tokens,
        "repetition_penalty": report.repetition_penalty, "system_prompt": example.system_prompt,
        "on_policy": {"rejected": why},
    }
    return Rejected(text, Provenance(model_id, version, params, engine=engine),
                    tuple(replace(src, cited=src.rank in numbers) for src in example.sources))


def run(settings: Settings, db: Database, *, version: str | None = None, limit: int | None = None,
        batch_size: int = BATCH_SIZE, max_new_tokens: int = MAX_NEW_TOKENS,
        repetition_penalty: float | None = None) -> OnPolicyReport:
    """:func:`collect` with ``version`` (default: the active one) answering greedily through
    the chat's engine (``bootstrap.build_engine``: llama.cpp by default), with the chat's
    repetition penalty (``generation.repetition_penalty``) unless ``repetition_penalty`` is
    given: the rejected answers are the ones users would read."""
    from alignment.answering import answering, penalty_of
    from assistant.bootstrap import open_registry

    registry = open_registry(settings, db)
    version = version or registry.active()
    registry.get(version)
    penalty = penalty_of(settings, repetition_penalty)
    if not grounded_examples(db):  # nothing to answer: do not load a model for it
        return OnPolicyReport(version, repetition_penalty=penalty)
    with answering(settings, registry, {version}, repetition_penalty=penalty) as models:
        def answer(prompts: list[Messages]) -> list[str]:
            return models.generate(version, prompts, max_new_tokens, batch_size)

        return collect(db, answer, version, models.generator.model_id, models.engine,
                       limit=limit, batch_size=batch_size, max_new_tokens=max_new_tokens,
                       repetition_penalty=penalty)
