"""Everything the training-data export reads (``alignment.export``), as plain values: every
conversation's source, every message, the newest rating of each answer, its sources, edits
and the newest choice of each question, read in one transaction (one query per table)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select

from assistant.storage.conversations import SourceRecord
from assistant.storage.db import Database
from assistant.storage.schema import Choice, Conversation, Edit, Feedback, Message, MessageSource


@dataclass(frozen=True)
class StoredTurn:
    """A message with what the export needs of it."""

    id: int
    conversation_id: int
    role: str
    content: str
    created_at: datetime
    reply_to_id: int | None
    active: bool
    model_version: str | None
    params: dict[str, Any] | None
    trimmed_turns: int


@dataclass(frozen=True)
class Rating:
    rating: int | None  # None: cleared
    tags: tuple[str, ...]


@dataclass(frozen=True)
class StoredEdit:
    created_at: datetime
    text: str


@dataclass(frozen=True)
class FeedbackSnapshot:
    """Everything the export reads, as plain values."""

    #: conversation id -> its ``source`` (None for chats held in the app)
    conversations: dict[int, str | None]
    #: conversation id -> its messages, in id order
    messages: dict[int, list[StoredTurn]]
    #: answer id -> its newest rating
    ratings: dict[int, Rating]
    #: answer id -> the sources it was shown, in [n] order
    sources: dict[int, tuple[SourceRecord, ...]]
    #: answer id -> its edits, oldest first
    edits: dict[int, list[StoredEdit]]
    #: question id -> the answer chosen last
    choices: dict[int, int]


def feedback_snapshot(db: Database) -> FeedbackSnapshot:
    """Read the conversations, messages and feedback the export is built from."""
    with db.read() as s:
        conversations = dict(s.execute(select(Conversation.id, Conversation.source)).all())
        messages: dict[int, list[StoredTurn]] = {}
        cols = (
            Message.id, Message.conversation_id, Message.role, Message.content,
            Message.created_at, Message.reply_to_id, Message.active, Message.model_version,
            Message.params, Message.trimmed_turns,
        )
        for row in s.execute(select(*cols).order_by(Message.id)):
            messages.setdefault(row[1], []).append(StoredTurn(*row))
        ratings = {}
        for message_id, rating, tags in s.execute(
            select(Feedback.message_id, Feedback.rating, Feedback.tags).order_by(Feedback.id)
        ):
            ratings[message_id] = Rating(rating, tuple(tags or ()))  # the newest row wins
        sources: dict[int, list[SourceRecord]] = {}
        src_cols = (
            MessageSource.message_id, MessageSource.rank, MessageSource.chunk_id,
            MessageSource.document_name, MessageSource.location, MessageSource.text,
            MessageSource.score, MessageSource.cited,
        )
        for message_id, *rest in s.execute(
            select(*src_cols).order_by(MessageSource.message_id, MessageSource.rank)
        ):
            sources.setdefault(message_id, []).append(SourceRecord(*rest))
        edits: dict[int, list[StoredEdit]] = {}
        for message_id, created_at, text in s.execute(
            select(Edit.message_id, Edit.created_at, Edit.text).order_by(Edit.id)
        ):
            edits.setdefault(message_id, []).append(StoredEdit(created_at, text))
        choices = dict(
            s.execute(select(Choice.question_id, Choice.chosen_id).order_by(Choice.id)).all()
        )
    return FeedbackSnapshot(
        conversations, messages, ratings,
        {k: tuple(v) for k, v in sources.items()}, edits, choices,
    )
