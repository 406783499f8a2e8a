"""Conversations, their messages and ratings: the only code that writes those tables.

Just over 500 lines: one store, whose writes share the same transactions and ownership
checks; the snapshot for export (:mod:`.snapshot`) and the examples (:mod:`.examples`) are
already apart.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, func, select, update

from assistant.errors import ConversationNotFound, EmptyEdit, InvalidRating, MessageNotFound, NotAnAnswer
from assistant.storage.db import Database
from assistant.storage.ownership import Owner, can_see, owner_id, visible
from assistant.storage.schema import (
    Choice,
    Conversation,
    DocumentChunk,
    Edit,
    Feedback,
    Message,
    MessageSource,
    utcnow,
)

if TYPE_CHECKING:
    from sqlalchemy import Select
    from sqlalchemy.orm import Session

DEFAULT_TITLE = "New chat"
TITLE_MAX = 200


@dataclass(frozen=True)
class DocumentChoice:
    """Whether a conversation's answers use the documents, and which (None = all)."""

    use_documents: bool = True
    document_ids: tuple[int, ...] | None = None


@dataclass(frozen=True)
class StoredConversation:
    id: int
    title: str
    created_at: datetime
    updated_at: datetime
    documents: DocumentChoice = DocumentChoice()


@dataclass(frozen=True)
class SourceRecord:
    """A chunk shown to the model as source [rank], as it was at that moment."""

    rank: int
    chunk_id: int | None
    document_name: str
    location: str | None
    text: str
    score: float
    cited: bool = False
    #: The sentences of ``text`` that back the answer, as ``(start, end)`` offsets.
    evidence: tuple[tuple[int, int], ...] = ()

    @property
    def evidence_text(self) -> list[str]:
        return [self.text[a:b] for a, b in self.evidence]


@dataclass(frozen=True)
class AnswerRecord:
    """What produced an assistant answer; stored beside its text."""

    model_id: str
    model_version: str
    params: dict[str, Any]
    prompt_tokens: int
    completion_tokens: int
    latency_ms: float
    ttft_ms: float | None
    stopped: bool = False
    trimmed_turns: int = 0
    #: What ran the model ("llama.cpp (Q4_1)", "transformers (fp32)", ...); None: unknown
    #: (answers stored before engines were recorded).
    engine: str | None = None
    #: What retrieval gave the answer: one of RETRIEVAL's keys; None: not recorded (older
    #: answers).
    retrieval: str | None = None
    #: Why the answer ended: "stop" (the model ended it), "length" (cut at the token limit:
    #: it can be continued); None: stopped by the user, or not known.
    finish_reason: str | None = None

    @property
    def cut_at_limit(self) -> bool:
        return self.finish_reason == "length" and not self.stopped


#: What retrieval gave an answer, and what the answer says about it.
RETRIEVAL = {
    "used": "Answered from the sources shown.",
    "none relevant": "No document was used: none of the documents searched is relevant to "
                     "this question, so it was answered as a plain chat.",
    "nothing to search": "No document was used: there was no document to search.",
    "none fit": "No document was used: the relevant sources did not fit in the model's "
                "context window.",
    "off": "No document was used: documents are switched off for this conversation.",
}


@dataclass(frozen=True)
class StoredMessage:
    id: int
    conversation_id: int
    role: str
    content: str
    created_at: datetime
    record: AnswerRecord | None = None
    rating: int | None = None
    comment: str | None = None
    sources: tuple[SourceRecord, ...] = ()
    tags: tuple[str, ...] = ()
    reply_to_id: int | None = None
    active: bool = True
    #: All answers to the same question (this one included), oldest first.
    alternatives: tuple[int, ...] = ()
    #: The user marked this answer the best of its alternatives.
    chosen: bool = False
    #: The user's corrected text of this answer, if any (newest edit).
    edited: str | None = None


def _conv(row: Conversation) -> StoredConversation:
    ids = tuple(row.document_ids) if row.document_ids is not None else None
    return StoredConversation(
        row.id, row.title, row.created_at, row.updated_at,
        DocumentChoice(bool(row.use_documents), ids),
    )


def _source(row: MessageSource) -> SourceRecord:
    values = {f.name: getattr(row, f.name) for f in fields(SourceRecord)}
    values["evidence"] = tuple((int(a), int(b)) for a, b in values["evidence"] or ())
    return SourceRecord(**values)


def _msg(
    row: Message,
    fb: Feedback | None = None,
    sources: tuple[SourceRecord, ...] = (),
    **extra,
) -> StoredMessage:
    record = None
    if row.role == "assistant" and row.model_id is not None:
        record = AnswerRecord(**{f.name: getattr(row, f.name) for f in fields(AnswerRecord)})
    return StoredMessage(
        id=row.id,
        conversation_id=row.conversation_id,
        role=row.role,
        content=row.content,
        created_at=row.created_at,
        record=record,
        rating=fb.rating if fb else None,
        comment=fb.comment if fb else None,
        sources=sources,
        tags=tuple(fb.tags or ()) if fb else (),
        reply_to_id=row.reply_to_id,
        active=row.active,
        **extra,
    )


def source_row(message_id: int, src: SourceRecord, chunk_id: int | None) -> MessageSource:
    """The row of ``src`` shown to answer ``message_id``, linked to ``chunk_id`` (None: the
    chunk is gone, the snapshot stays)."""
    return MessageSource(message_id=message_id, **{
        **asdict(src), "chunk_id": chunk_id, "evidence": [list(span) for span in src.evidence] or None,
    })


def show_only(session: Session, question_id: int, answer_id: int) -> None:
    """Make ``answer_id`` the one alternative of ``question_id`` that is shown."""
    session.execute(
        update(Message).where(Message.reply_to_id == question_id)
        .values(active=Message.id == answer_id)
    )


def thread_key(message_id: int, role: str, reply_to_id: int | None) -> tuple[int, int, int]:
    """Sort key of a conversation thread: each question, then its answers. Ids alone would
    put an answer regenerated later after the turns that followed its question."""
    if role == "assistant" and reply_to_id is not None:
        return (reply_to_id, 1, message_id)
    return (message_id, 0 if role == "user" else 1, message_id)


def title_from(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= 60 else line[:57].rstrip() + "..."


class ConversationStore:
    """Conversations as ``owner`` sees them (see ``ownership``): with an owner, others'
    conversations and messages do not exist (ConversationNotFound / MessageNotFound)."""

    def __init__(self, db: Database, owner: Owner | None = None) -> None:
        self.db = db
        self.owner = owner

    def for_owner(self, owner: Owner | None) -> ConversationStore:
        return ConversationStore(self.db, owner)

    # -- conversations -------------------------------------------------------------------
    def create_conversation(self, title: str = DEFAULT_TITLE) -> StoredConversation:
        with self.db.write() as s:
            row = Conversation(title=_clean_title(title), owner_id=owner_id(self.owner))
            s.add(row)
            s.flush()
            return _conv(row)

    def list_conversations(self, chats_only: bool = False) -> list[StoredConversation]:
        """Newest first; ``chats_only`` leaves out imported conversations (e.g. hh-rlhf)."""
        with self.db.read() as s:
            q = (
                select(Conversation)
                .where(visible(self.owner))
                .order_by(Conversation.updated_at.desc(), Conversation.id.desc())
            )
            if chats_only:
                q = q.where(Conversation.source.is_(None))
            return [_conv(r) for r in s.scalars(q)]

    def get_conversation(self, conversation_id: int) -> StoredConversation:
        with self.db.read() as s:
            return _conv(self._get(s, conversation_id))

    def rename_conversation(self, conversation_id: int, title: str) -> StoredConversation:
        with self.db.write() as s:
            row = self._get(s, conversation_id)
            row.title = _clean_title(title)
            return _conv(row)

    def delete_conversation(self, conversation_id: int) -> None:
        with self.db.write() as s:
            result = s.execute(
                delete(Conversation).where(Conversation.id == conversation_id, visible(self.owner))
            )
            if result.rowcount == 0:
                raise ConversationNotFound(conversation_id)

    # -- messages ------------------------------------------------------------------------
    def messages(self, conversation_id: int, include_inactive: bool = False) -> list[StoredMessage]:
        """The conversation's thread: every question and the answer shown for it (all
        alternatives with ``include_inactive``), with ratings, sources, choice and edit."""
        with self.db.read() as s:
            self._get(s, conversation_id)
            rows = sorted(
                s.scalars(select(Message).where(Message.conversation_id == conversation_id)),
                key=lambda r: thread_key(r.id, r.role, r.reply_to_id),
            )
            answers = [r for r in rows if r.role == "assistant"]
            answer_ids = [r.id for r in answers]
            latest = self._latest_feedback(s, answer_ids)
            sources: dict[int, list[SourceRecord]] = {}
            edits: dict[int, str] = {}
            chosen: dict[int, int] = {}
            if answer_ids:
                for src in s.scalars(
                    select(MessageSource)
                    .where(MessageSource.message_id.in_(answer_ids))
                    .order_by(MessageSource.message_id, MessageSource.rank)
                ):
                    sources.setdefault(src.message_id, []).append(_source(src))
                for e in s.scalars(select(Edit).where(Edit.message_id.in_(answer_ids)).order_by(Edit.id)):
                    edits[e.message_id] = e.text
                questions = {r.reply_to_id for r in answers if r.reply_to_id}
                for c in s.scalars(
                    select(Choice).where(Choice.question_id.in_(questions)).order_by(Choice.id)
                ):
                    chosen[c.question_id] = c.chosen_id
            siblings: dict[int | None, list[int]] = {}
            for r in answers:
                siblings.setdefault(r.reply_to_id, []).append(r.id)
            return [
                _msg(
                    r, latest.get(r.id), tuple(sources.get(r.id, ())),
                    alternatives=tuple(siblings.get(r.reply_to_id, [r.id])) if r.role == "assistant" else (),
                    chosen=r.role == "assistant" and chosen.get(r.reply_to_id) == r.id,
                    edited=edits.get(r.id),
                )
                for r in rows
                if include_inactive or r.active
            ]

    def get_message(self, message_id: int) -> StoredMessage:
        with self.db.read() as s:
            row = s.get(Message, message_id)
            if row is None or not can_see(self.owner, row.conversation):
                raise MessageNotFound(message_id)
        return next(
            m for m in self.messages(row.conversation_id, include_inactive=True) if m.id == message_id
        )

    def history_before(self, question_id: int) -> list[StoredMessage]:
        """The shown thread up to (not including) a question: the context to answer it again."""
        q = self.get_message(question_id)
        before = thread_key(q.id, q.role, q.reply_to_id)
        return [
            m for m in self.messages(q.conversation_id)
            if thread_key(m.id, m.role, m.reply_to_id) < before
        ]

    def set_active(self, message_id: int) -> None:
        """Show this alternative for its question (the others are kept, hidden)."""
        with self.db.write() as s:
            row = self._answer(s, message_id, "only answers to a question have alternatives",
                               needs_question=True)
            show_only(s, row.reply_to_id, message_id)

    def set_document_choice(self, conversation_id: int, choice: DocumentChoice) -> None:
        with self.db.write() as s:
            _apply_choice(self._get(s, conversation_id), choice)

    def add_user_message(
        self, conversation_id: int | None, text: str, documents: DocumentChoice | None = None
    ) -> StoredMessage:
        """Store a user turn, creating the conversation when ``conversation_id`` is None
        (and recording ``documents`` as its document choice when given).

        One transaction: either both the conversation and the message exist afterwards, or
        neither does.
        """
        with self.db.write() as s:
            if conversation_id is None:
                conv = Conversation(title=title_from(text), owner_id=owner_id(self.owner))
                s.add(conv)
                s.flush()
            else:
                conv = self._get(s, conversation_id)
                if conv.title == DEFAULT_TITLE and not conv.messages:
                    conv.title = title_from(text)
            if documents is not None:
                _apply_choice(conv, documents)
            row = Message(conversation_id=conv.id, role="user", content=text)
            s.add(row)
            conv.updated_at = utcnow()
            s.flush()
            return _msg(row)

    def add_assistant_message(
        self,
        conversation_id: int,
        text: str,
        record: AnswerRecord,
        sources: tuple[SourceRecord, ...] = (),
        reply_to_id: int | None = None,
    ) -> StoredMessage:
        """Store an answer to question ``reply_to_id`` with its provenance and the sources
        it was shown, together. Earlier answers to that question stay, as alternatives."""
        with self.db.write() as s:
            conv = self._get(s, conversation_id)
            # AnswerRecord's fields are exactly the provenance columns of Message.
            if reply_to_id is not None:  # a new alternative is the one shown
                s.execute(
                    update(Message).where(Message.reply_to_id == reply_to_id).values(active=False)
                )
            row = Message(
                conversation_id=conversation_id, role="assistant", content=text,
                reply_to_id=reply_to_id, active=True, **asdict(record),
            )
            s.add(row)
            s.flush()
            # A source's document may have been replaced or deleted while the answer streamed:
            # keep the snapshot unlinked, as its later deletion would (SET NULL).
            ids = {src.chunk_id for src in sources if src.chunk_id is not None}
            live = set(s.scalars(select(DocumentChunk.id).where(DocumentChunk.id.in_(ids)))) if ids else set()
            s.add_all(
                source_row(row.id, src, src.chunk_id if src.chunk_id in live else None)
                for src in sources
            )
            conv.updated_at = utcnow()
            new_id = row.id
        return self.get_message(new_id)

    def extend_answer(self, message_id: int, text: str, record: AnswerRecord,
                      cited: set[int] = frozenset()) -> StoredMessage:
        """Append ``text`` to answer ``message_id`` (continued after the token limit cut it):
        the tokens and time add up, and ``record`` says how the continuation ended; sources
        numbered in ``cited`` are now cited."""
        with self.db.write() as s:
            row = self._answer(s, message_id, "only answers can be continued")
            row.content = row.content + text
            row.completion_tokens = (row.completion_tokens or 0) + record.completion_tokens
            row.latency_ms = (row.latency_ms or 0.0) + record.latency_ms
            row.stopped = record.stopped
            row.finish_reason = record.finish_reason
            if cited:
                s.execute(update(MessageSource).where(MessageSource.message_id == message_id,
                                                      MessageSource.rank.in_(cited))
                          .values(cited=True))
            row.conversation.updated_at = utcnow()
        return self.get_message(message_id)

    # -- feedback ------------------------------------------------------------------------
    def rate(
        self,
        message_id: int,
        rating: int | None,
        comment: str | None = None,
        tags: Sequence[str] = (),
    ) -> None:
        """Record a rating (+1, -1, or None to clear) with an optional comment.

        Appends a row; earlier ratings of the message are kept as its history. A rating
        identical to the current one adds nothing.
        """
        if rating not in (-1, 1, None):
            raise InvalidRating(rating)
        comment = (comment or "").strip() or None
        with self.db.write() as s:
            self._answer(s, message_id, "only assistant messages can be rated")
            tag_list = sorted({t.strip().lower() for t in tags if t.strip()}) or None
            latest = self._latest_feedback(s, [message_id]).get(message_id)
            if latest is not None and (latest.rating, latest.comment, latest.tags) == (
                rating, comment, tag_list
            ):
                return  # unchanged (e.g. rating and comment widgets fired together)
            s.add(Feedback(message_id=message_id, rating=rating, comment=comment, tags=tag_list))

    def choose(self, message_id: int) -> None:
        """Mark an answer the best of its alternatives (and show it)."""
        with self.db.write() as s:
            row = self._answer(s, message_id, "only answers to a question can be chosen",
                               needs_question=True)
            s.add(Choice(question_id=row.reply_to_id, chosen_id=message_id))
            show_only(s, row.reply_to_id, message_id)

    def edit(self, message_id: int, text: str) -> None:
        """Record the user's better version of an answer (the original stays as it was)."""
        text = text.strip()
        if not text:
            raise EmptyEdit()
        with self.db.write() as s:
            row = self._answer(s, message_id, "only answers can be edited")
            newest = s.scalar(
                select(Edit.text).where(Edit.message_id == message_id).order_by(Edit.id.desc())
            )
            if text == (newest if newest is not None else row.content.strip()):
                return  # unchanged: nothing to record
            s.add(Edit(message_id=message_id, text=text))

    def feedback_history(self, message_id: int) -> list[tuple[int | None, str | None]]:
        with self.db.read() as s:
            row = s.get(Message, message_id)
            if row is None or not can_see(self.owner, row.conversation):
                raise MessageNotFound(message_id)
            rows = s.scalars(
                select(Feedback).where(Feedback.message_id == message_id).order_by(Feedback.id)
            )
            return [(r.rating, r.comment) for r in rows]

    def counts(self) -> dict[str, int]:
        with self.db.read() as s:
            def count(q: Select[int]) -> int:
                return s.scalar(q.where(visible(self.owner))) or 0

            return {
                "conversations": count(select(func.count(Conversation.id))),
                "messages": count(select(func.count(Message.id)).join(Message.conversation)),
                "feedback": count(
                    select(func.count(Feedback.id)).join(Feedback.message).join(Message.conversation)
                ),
            }

    # -- helpers -------------------------------------------------------------------------
    def _get(self, s: Session, conversation_id: int) -> Conversation:
        row = s.get(Conversation, conversation_id)
        if row is None or not can_see(self.owner, row):
            raise ConversationNotFound(conversation_id)
        return row

    def _answer(self, s: Session, message_id: int, refusal: str, needs_question: bool = False) -> Message:
        """The assistant message ``message_id``; ``refusal`` is the error for other roles
        (and, with ``needs_question``, for answers not tied to a question)."""
        row = s.get(Message, message_id)
        if row is None or not can_see(self.owner, row.conversation):
            raise MessageNotFound(message_id)
        if row.role != "assistant" or (needs_question and row.reply_to_id is None):
            raise NotAnAnswer(message_id, refusal)
        return row

    @staticmethod
    def _latest_feedback(s: Session, message_ids: list[int]) -> dict[int, Feedback]:
        if not message_ids:
            return {}
        latest: dict[int, Feedback] = {}
        rows = s.scalars(
            select(Feedback).where(Feedback.message_id.in_(message_ids)).order_by(Feedback.id)
        )
        for fb in rows:
            latest[fb.message_id] = fb
        return latest


def _apply_choice(conv: Conversation, choice: DocumentChoice) -> None:
    conv.use_documents = choice.use_documents
    conv.document_ids = list(choice.document_ids) if choice.document_ids is not None else None


def _clean_title(title: str) -> str:
    title = " ".join(title.split())
    return title[:TITLE_MAX] or DEFAULT_TITLE
