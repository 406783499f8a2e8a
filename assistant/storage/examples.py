"""Training examples written into the database without a chat: imported conversations with a
chosen answer (hh-rlhf pairs, SQuAD and synthetic grounded examples) and the on-policy
answers a version gave to grounded examples. ``alignment/`` decides what to write; this is
the code that writes (and reads back) those conversations, messages, sources and choices.

Imported conversations have no owner (an admin sees them; see ``ownership``) and a
``source`` naming where they came from (:mod:`assistant.storage.origins`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import aliased

from assistant.storage.conversations import DEFAULT_TITLE, SourceRecord, source_row, title_from
from assistant.storage.db import Database
from assistant.storage.schema import Choice, Conversation, Message, MessageSource

#: Sources are read this many answers at a time (SQL parameter limits).
_SOURCE_BATCH = 500


@dataclass(frozen=True)
class Provenance:
    """The provenance columns of an answer no chat produced (imported or on-policy); a
    None leaves its column empty."""

    model_id: str
    model_version: str
    params: dict[str, Any]
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    latency_ms: float | None = None
    engine: str | None = None


@dataclass(frozen=True)
class ChosenThread:
    """A conversation to import: ``turns`` ((role, text), "user" or "assistant") ending on
    the question, the answer chosen for it (shown) and, optionally, a rejected one (hidden)."""

    source: str
    turns: tuple[tuple[str, str], ...]
    chosen: str
    #: Of every answer of the thread (earlier assistant turns, chosen and rejected).
    provenance: Provenance
    rejected: str | None = None
    #: The sources the chosen answer was shown, stored as given (``cited`` included).
    sources: tuple[SourceRecord, ...] = ()


@dataclass(frozen=True)
class ChosenAnswer:
    """A question of an imported conversation and an answer chosen for it, as stored."""

    conversation_id: int
    question_id: int
    question: str
    answer_id: int
    answer: str
    params: dict[str, Any] | None
    #: The sources the answer was shown, in [n] order (without ``cited`` and evidence).
    sources: tuple[SourceRecord, ...]


@dataclass(frozen=True)
class Rejected:
    """An answer judged bad, stored as a hidden alternative of the example's question."""

    text: str
    provenance: Provenance
    #: What it was shown, stored as given (``cited``: the sources it cites).
    sources: tuple[SourceRecord, ...]


@dataclass(frozen=True)
class Answered:
    """A version answered the grounded example whose chosen answer is ``reference_id``:
    ``rejected`` holds its answer when it was judged bad (None: kept, nothing stored)."""

    conversation_id: int
    question_id: int
    reference_id: int
    rejected: Rejected | None = None


def _answer_row(conversation: Conversation, text: str, provenance: Provenance,
                active: bool = True) -> Message:
    return Message(conversation=conversation, role="assistant", content=text, active=active,
                   ttft_ms=None, **asdict(provenance))


class ExampleStore:
    """Imported conversations and on-policy answers (no owner: see the module docstring)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def sources(self, prefix: str) -> list[str]:
        """The ``source`` of every conversation whose source starts with ``prefix`` (a LIKE
        pattern: what an import already holds, so that it skips it)."""
        with self.db.read() as s:
            return list(s.scalars(select(Conversation.source).where(Conversation.source.like(f"{prefix}%"))))

    def add_threads(self, threads: Sequence[ChosenThread]) -> int:
        """Store every thread with its choice, in one transaction (all or none); returns how
        many. Each conversation is titled from its first turn."""
        with self.db.write() as s:
            # Messages are added in turn order and inserted in that order, so their ids give
            # the thread order (what ConversationStore.messages relies on). reply_to_id and
            # the choice need those ids: a second flush fills them in.
            rows: list[tuple[ChosenThread, list[Message], Message, Message | None]] = []
            for t in threads:
                conv = Conversation(title=title_from(t.turns[0][1]) or DEFAULT_TITLE, source=t.source)
                s.add(conv)
                msgs = [
                    Message(conversation=conv, role="user", content=text) if role == "user"
                    else _answer_row(conv, text, t.provenance)
                    for role, text in t.turns
                ]
                chosen = _answer_row(conv, t.chosen, t.provenance)
                rejected = None if t.rejected is None else _answer_row(conv, t.rejected, t.provenance, False)
                s.add_all([*msgs, chosen, *([rejected] if rejected is not None else [])])
                rows.append((t, msgs, chosen, rejected))
            s.flush()
            for t, msgs, chosen, rejected in rows:
                question = None
                for m in msgs:
                    if m.role == "user":
                        question = m
                    else:
                        m.reply_to_id = question.id if question is not None else None
                chosen.reply_to_id = msgs[-1].id
                if rejected is not None:
                    rejected.reply_to_id = msgs[-1].id
                s.add(Choice(question_id=msgs[-1].id, chosen_id=chosen.id))
                s.add_all(source_row(chosen.id, src, src.chunk_id) for src in t.sources)
        return len(threads)

    def chosen_answers(self, prefixes: Sequence[str]) -> list[ChosenAnswer]:
        """Every choice in the conversations whose source starts with one of ``prefixes``,
        by conversation, oldest choice first (the newest choice of a question counts)."""
        q, a = aliased(Message), aliased(Message)
        with self.db.read() as s:
            rows = s.execute(
                select(Conversation.id, q.id, q.content, a.id, a.content, a.params)
                .join(q, q.conversation_id == Conversation.id)
                .join(Choice, Choice.question_id == q.id)
                .join(a, a.id == Choice.chosen_id)
                .where(or_(*[Conversation.source.like(f"{p}%") for p in prefixes]))
                .order_by(Conversation.id, Choice.id)
            ).all()
            ids = [r[3] for r in rows]
            sources: dict[int, list[SourceRecord]] = {}
            for i in range(0, len(ids), _SOURCE_BATCH):
                for row in s.execute(
                    select(MessageSource.message_id, MessageSource.rank, MessageSource.chunk_id,
                           MessageSource.document_name, MessageSource.location, MessageSource.text,
                           MessageSource.score)
                    .where(MessageSource.message_id.in_(ids[i:i + _SOURCE_BATCH]))
                    .order_by(MessageSource.message_id, MessageSource.rank)
                ):
                    sources.setdefault(row[0], []).append(SourceRecord(*row[1:]))
        return [ChosenAnswer(conv, qid, question, aid, answer, params, tuple(sources.get(aid, ())))
                for conv, qid, question, aid, answer, params in rows]

    def record_answered(self, version: str, answered: Sequence[Answered]) -> set[int]:
        """In one transaction: store each rejected answer (hidden, with its sources) and mark
        its reference answer ``params["on_policy"][version]`` "kept" or "rejected". An example
        whose reference answer was deleted meanwhile is left out; returns the reference ids
        that were there."""
        found: set[int] = set()
        with self.db.write() as s:
            for item in answered:
                reference = s.get(Message, item.reference_id)
                if reference is None:  # deleted meanwhile (the Feedback page)
                    continue
                found.add(item.reference_id)
                if item.rejected is not None:
                    alternative = Message(
                        conversation_id=item.conversation_id, role="assistant",
                        content=item.rejected.text, reply_to_id=item.question_id, active=False,
                        **asdict(item.rejected.provenance),
                    )
                    s.add(alternative)
                    s.flush()
                    s.add_all(source_row(alternative.id, src, src.chunk_id) for src in item.rejected.sources)
                params: dict[str, Any] = dict(reference.params or {})
                params["on_policy"] = {**(params.get("on_policy") or {}),
                                       version: "kept" if item.rejected is None else "rejected"}
                reference.params = params  # a new dict: JSON columns track assignment, not mutation
        return found
