"""Browse and delete the preference signals behind exported pairs: best-of choices (also
made by compare votes, imports and on-policy answers to grounded examples) and edits."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.orm import aliased

from assistant.storage.db import Database
from assistant.storage.origins import matches, origin_of
from assistant.storage.ownership import Owner, visible
from assistant.storage.schema import Choice, Conversation, Edit, Message


@dataclass(frozen=True)
class PairSignal:
    kind: str  # "choice" or "edit"
    id: int
    conversation_id: int
    source: str | None
    question: str
    chosen: str
    rejected: tuple[str, ...]
    model_version: str | None
    created_at: datetime

    @property
    def origin(self) -> str:
        """feedback, imported or synthetic (:mod:`assistant.storage.origins`)."""
        return origin_of(self.source)


def list_pairs(
    db: Database, source: str = "all", model_version: str | None = None, limit: int = 200,
    owner: Owner | None = None, origin: str = "all",
) -> list[PairSignal]:
    """The newest signals first, of the conversations ``owner`` sees. ``source``: "chats",
    "imports" or "all"; ``origin``: "all", "feedback", "imported" or "synthetic"."""
    q, a = aliased(Message), aliased(Message)
    out: list[PairSignal] = []
    with db.read() as s:
        choices = s.execute(
            select(Choice, q, a, Conversation.source)
            .join(q, q.id == Choice.question_id)
            .join(a, a.id == Choice.chosen_id)
            .join(Conversation, Conversation.id == q.conversation_id)
            .where(visible(owner))
            .order_by(Choice.id.desc())
            .limit(limit)
        ).all()
        for choice, question, chosen, src in choices:
            others = s.scalars(
                select(Message.content).where(
                    Message.reply_to_id == question.id, Message.id != chosen.id
                ).order_by(Message.id)
            ).all()
            out.append(PairSignal("choice", choice.id, question.conversation_id, src,
                                  question.content, chosen.content, tuple(others),
                                  chosen.model_version, choice.created_at))
        edits = s.execute(
            select(Edit, a, q, Conversation.source)
            .join(a, a.id == Edit.message_id)
            .outerjoin(q, q.id == a.reply_to_id)
            .join(Conversation, Conversation.id == a.conversation_id)
            .where(visible(owner))
            .order_by(Edit.id.desc())
            .limit(limit)
        ).all()
        for edit, answer, question, src in edits:
            out.append(PairSignal("edit", edit.id, answer.conversation_id, src,
                                  question.content if question else "", edit.text,
                                  (answer.content,), answer.model_version, edit.created_at))
    out = [
        p for p in out
        if (source == "all" or (source == "imports") == (p.source is not None))
        and matches(p.source, origin)
        and (model_version is None or p.model_version == model_version)
    ]
    return sorted(out, key=lambda p: p.created_at, reverse=True)[:limit]


def delete_pair(db: Database, kind: str, signal_id: int, owner: Owner | None = None) -> bool:
    """Delete one bad signal (the user's explicit decision) of a conversation ``owner``
    sees. Returns whether it existed. For a choice, an earlier choice of the same question
    (if any) counts again."""
    table = {"choice": Choice, "edit": Edit}[kind]
    message = Choice.question_id if kind == "choice" else Edit.message_id
    mine = (
        select(Message.id)
        .join(Conversation, Conversation.id == Message.conversation_id)
        .where(visible(owner))
    )
    with db.write() as s:
        return s.execute(
            delete(table).where(table.id == signal_id, message.in_(mine))
        ).rowcount > 0
