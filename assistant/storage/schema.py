"""ORM models (SQLAlchemy 2.0). Changed only together with a migration in ``migrations/versions``."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    JSON,
    Boolean,
    LargeBinary,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    false,
)
from sqlalchemy import true as sa_true
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

if TYPE_CHECKING:
    from sqlalchemy.engine import Dialect


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator):
    """Aware UTC datetimes on every backend (SQLite stores them without a zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime: pass an aware UTC datetime")
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value


def without_nul(value: str | None) -> str | None:
    """Text as every database stores it: without NUL characters, which PostgreSQL rejects in
    text ("cannot contain NUL (0x00) bytes"). Applied to every text column on every
    database (through the two types below), so that SQLite and PostgreSQL store the same text
    and a message with a stray NUL (pasted binary) is saved instead of failing."""
    return value.replace("\x00", "") if value is not None and "\x00" in value else value


class CleanText(TypeDecorator):
    """``Text`` without NUL characters (:func:`without_nul`)."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: str | None, dialect: Dialect) -> str | None:
        return without_nul(value)


class CleanString(TypeDecorator):
    """``String(n)`` without NUL characters (:func:`without_nul`)."""

    impl = String
    cache_ok = True

    def process_bind_param(self, value: str | None, dialect: Dialect) -> str | None:
        return without_nul(value)


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UTCDateTime}


class User(Base):
    """A login (only used when ``ASSISTANT_AUTH=password``). Users are disabled, never
    deleted, so what they wrote keeps its owner."""

    __tablename__ = "users"
    __table_args__ = (
        CheckConstraint("role IN ('user', 'admin')", name="ck_users_role"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(CleanString(64), unique=True)
    #: argon2id, in the PHC string format (algorithm, parameters, salt and hash).
    password_hash: Mapped[str] = mapped_column(CleanString(200))
    role: Mapped[str] = mapped_column(CleanString(16))
    disabled: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class AppSetting(Base):
    """A setting every process must agree on, whatever its environment (``login``)."""

    __tablename__ = "app_settings"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(String(200))
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class LoginFailure(Base):
    """A failed login, counted per name and per client (``assistant.login.auth`` throttling)."""

    __tablename__ = "login_failures"
    __table_args__ = (
        Index("ix_login_failures_name_at", "name", "at"),
        Index("ix_login_failures_client_at", "client", "at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64))
    client: Mapped[str] = mapped_column(String(200))
    at: Mapped[float] = mapped_column(Float)  # seconds since the epoch


class LoginSession(Base):
    """A browser login that lasts across reloads; the token itself is never stored."""

    __tablename__ = "login_sessions"

    id: Mapped[int] = mapped_column(primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]


class Conversation(Base):
    __tablename__ = "conversations"

    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(CleanString(200))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)

    # Where the conversation came from: NULL for chats, "hh-rlhf:<file>:<line hash>" for imports.
    source: Mapped[str | None] = mapped_column(CleanString(300), index=True)
    # Retrieval choices of this conversation: use documents at all, and which (None = all).
    use_documents: Mapped[bool] = mapped_column(Boolean, default=True, server_default=sa_true())
    document_ids: Mapped[list[int] | None] = mapped_column(JSON)
    #: Who it belongs to when login is on; NULL: made with login off (or imported).
    owner_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), index=True)

    messages: Mapped[list[Message]] = relationship(
        back_populates="conversation",
        cascade="all, delete-orphan",
        passive_deletes=True,
        order_by="Message.id",
    )


class Message(Base):
    """One turn. Assistant turns record everything that produced them."""

    __tablename__ = "messages"
    __table_args__ = (
        CheckConstraint("role IN ('user', 'assistant')", name="ck_messages_role"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    conversation_id: Mapped[int] = mapped_column(
        ForeignKey("conversations.id", ondelete="CASCADE"), index=True
    )
    role: Mapped[str] = mapped_column(CleanString(16))
    content: Mapped[str] = mapped_column(CleanText)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    # Provenance of assistant answers (NULL on user turns).
    model_id: Mapped[str | None] = mapped_column(CleanString(500))
    model_version: Mapped[str | None] = mapped_column(CleanString(200))
    params: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    prompt_tokens: Mapped[int | None] = mapped_column(Integer)
    completion_tokens: Mapped[int | None] = mapped_column(Integer)
    latency_ms: Mapped[float | None] = mapped_column(Float)
    ttft_ms: Mapped[float | None] = mapped_column(Float)
    stopped: Mapped[bool] = mapped_column(default=False, server_default=false())
    trimmed_turns: Mapped[int] = mapped_column(default=0, server_default="0")
    engine: Mapped[str | None] = mapped_column(String(200))
    # What retrieval gave the answer (conversations.RETRIEVAL); NULL before it was recorded.
    retrieval: Mapped[str | None] = mapped_column(String(20))
    #: "stop", "length" (cut at the token limit), None (stopped, or not known): AnswerRecord.
    finish_reason: Mapped[str | None] = mapped_column(String(32))
    # Alternatives: every answer to the same question points at it; one is shown (active).
    reply_to_id: Mapped[int | None] = mapped_column(
        ForeignKey("messages.id", ondelete="CASCADE"), index=True
    )
    active: Mapped[bool] = mapped_column(default=True, server_default=sa_true())

    conversation: Mapped[Conversation] = relationship(back_populates="messages")
    feedback: Mapped[list[Feedback]] = relationship(
        back_populates="message",
        cascade="all, delete-orphan",
        passive_deletes=True,
        order_by="Feedback.id",
    )


class Feedback(Base):
    """A rating event. Append-only: the newest row of a message is its current rating,
    earlier rows stay as history (a cleared rating is a row with ``rating`` NULL)."""

    __tablename__ = "feedback"
    __table_args__ = (
        CheckConstraint("rating IS NULL OR rating IN (-1, 1)", name="ck_feedback_rating"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    message_id: Mapped[int] = mapped_column(
        ForeignKey("messages.id", ondelete="CASCADE"), index=True
    )
    rating: Mapped[int | None] = mapped_column(Integer)
    comment: Mapped[str | None] = mapped_column(CleanText)
    tags: Mapped[list[str] | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    message: Mapped[Message] = relationship(back_populates="feedback")


class Document(Base):
    """An uploaded document. Its chunks (text, location, embedding) are the source of
    truth for the FAISS index, which can always be rebuilt from them."""

    __tablename__ = "documents"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(CleanString(255), index=True)
    kind: Mapped[str] = mapped_column(CleanString(16))
    content_hash: Mapped[str] = mapped_column(CleanString(64), unique=True)
    size_bytes: Mapped[int] = mapped_column(Integer)
    embed_model: Mapped[str] = mapped_column(CleanString(200))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    chunks: Mapped[list[DocumentChunk]] = relationship(
        back_populates="document", cascade="all, delete-orphan", passive_deletes=True,
        order_by="DocumentChunk.position",
    )


class DocumentChunk(Base):
    __tablename__ = "chunks"
    # Never reuse a deleted chunk's id: the FAISS index is keyed by it, and an index left
    # behind by a crash must not mistake a new chunk for an old one.
    __table_args__ = {"sqlite_autoincrement": True}

    id: Mapped[int] = mapped_column(primary_key=True)
    document_id: Mapped[int] = mapped_column(
        ForeignKey("documents.id", ondelete="CASCADE"), index=True
    )
    position: Mapped[int] = mapped_column(Integer)
    text: Mapped[str] = mapped_column(CleanText)
    token_count: Mapped[int] = mapped_column(Integer)
    #: Words as full-text search counts them (``words.search_word_count``): BM25's length.
    word_count: Mapped[int] = mapped_column(Integer, server_default="0")
    page: Mapped[int | None] = mapped_column(Integer)
    heading: Mapped[str | None] = mapped_column(CleanString(500))
    embedding: Mapped[bytes] = mapped_column(LargeBinary)  # float32, normalised

    document: Mapped[Document] = relationship(back_populates="chunks")


class MessageSource(Base):
    """A chunk shown to the model for an answer, snapshotted: the text stays even when the
    document is later replaced or deleted, so feedback and training see the real context."""

    __tablename__ = "message_sources"

    id: Mapped[int] = mapped_column(primary_key=True)
    message_id: Mapped[int] = mapped_column(
        ForeignKey("messages.id", ondelete="CASCADE"), index=True
    )
    rank: Mapped[int] = mapped_column(Integer)  # the [n] the model saw
    chunk_id: Mapped[int | None] = mapped_column(
        ForeignKey("chunks.id", ondelete="SET NULL"), index=True
    )
    document_name: Mapped[str] = mapped_column(CleanString(255))
    location: Mapped[str | None] = mapped_column(CleanString(600))
    text: Mapped[str] = mapped_column(CleanText)
    score: Mapped[float] = mapped_column(Float)
    cited: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    #: The sentences of ``text`` that back the answer: ``[[start, end], ...]`` offsets.
    evidence: Mapped[list[list[int]] | None] = mapped_column(JSON)


class Choice(Base):
    """The user marked one alternative answer to a question as the best. Append-only: the
    newest choice of a question counts; the other alternatives become "rejected"."""

    __tablename__ = "choices"

    id: Mapped[int] = mapped_column(primary_key=True)
    question_id: Mapped[int] = mapped_column(ForeignKey("messages.id", ondelete="CASCADE"), index=True)
    chosen_id: Mapped[int] = mapped_column(ForeignKey("messages.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Edit(Base):
    """A user's corrected version of an answer: "chosen" against the original "rejected".
    Append-only; the newest edit of a message counts."""

    __tablename__ = "edits"

    id: Mapped[int] = mapped_column(primary_key=True)
    message_id: Mapped[int] = mapped_column(ForeignKey("messages.id", ondelete="CASCADE"), index=True)
    text: Mapped[str] = mapped_column(CleanText)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Comparison(Base):
    """Two answers to one question side by side (arena); the model versions stay hidden
    until the vote, which is cast once."""

    __tablename__ = "comparisons"
    __table_args__ = (
        CheckConstraint("vote IS NULL OR vote IN ('a', 'b', 'tie', 'both_bad')", name="ck_vote"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    question_id: Mapped[int] = mapped_column(ForeignKey("messages.id", ondelete="CASCADE"), index=True)
    a_id: Mapped[int] = mapped_column(ForeignKey("messages.id", ondelete="CASCADE"))
    b_id: Mapped[int] = mapped_column(ForeignKey("messages.id", ondelete="CASCADE"))
    vote: Mapped[str | None] = mapped_column(CleanString(16))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    voted_at: Mapped[datetime | None] = mapped_column()


class ModelVersion(Base):
    """A trained LoRA adapter (or reward model) in the registry, named ``v<id>``. Written
    once, after its files are complete; its lineage, data and config never change."""

    __tablename__ = "model_versions"
    #: No CHECK on ``kind``: the kinds of training are the training code's table, and the
    #: registry checks a kind's shape when it registers a version (migration 0013).
    __table_args__ = {"sqlite_autoincrement": True}

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(CleanString(40), unique=True)
    kind: Mapped[str] = mapped_column(CleanString(16))
    #: The base model's id (as the chat names it) and a fingerprint of its architecture.
    base_model: Mapped[str] = mapped_column(CleanString(500))
    base_fingerprint: Mapped[str] = mapped_column(CleanString(64))
    #: The version trained on top of ("base" for the bare base model).
    parent: Mapped[str] = mapped_column(CleanString(40))
    #: Folder under ``data_dir/versions`` with adapter/, data/, curve.png, logs.
    path: Mapped[str] = mapped_column(CleanString(300))
    #: {"kind", "rows", "sha256", "export": report}: exactly what it was trained on.
    data: Mapped[dict[str, Any]] = mapped_column(JSON)
    config: Mapped[dict[str, Any]] = mapped_column(JSON)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Activation(Base):
    """Append-only log of which version the chat uses; the newest row is the active one
    (none: the base model). One INSERT switches versions atomically."""

    __tablename__ = "activations"

    id: Mapped[int] = mapped_column(primary_key=True)
    version: Mapped[str] = mapped_column(CleanString(40))
    forced: Mapped[bool] = mapped_column(Boolean, default=False)
    reason: Mapped[str] = mapped_column(CleanString(200), default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Evaluation(Base):
    """``assistant eval``: a candidate version measured against a baseline version."""

    __tablename__ = "evaluations"

    id: Mapped[int] = mapped_column(primary_key=True)
    candidate: Mapped[str] = mapped_column(CleanString(40), index=True)
    baseline: Mapped[str] = mapped_column(CleanString(40))
    reward_model: Mapped[str | None] = mapped_column(CleanString(40))
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
