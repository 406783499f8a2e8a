"""Domain exceptions. The library raises these; ``ui/`` and ``cli.py`` turn them into messages.

Every message says what went wrong and what to do about it.
"""

from __future__ import annotations


class AssistantError(Exception):
    """Base class: ``str(err)`` is a message fit to show a user."""


class EmptyMessage(AssistantError):
    def __init__(self) -> None:
        super().__init__("The message is empty: type something to send.")


class MessageTooLong(AssistantError):
    def __init__(self, tokens: int, limit: int, unit: str = "tokens") -> None:
        self.tokens, self.limit = tokens, limit
        super().__init__(
            f"The message is too long: {tokens:,} {unit}, and the model accepts at most "
            f"{limit:,} {unit} for a message together with the system prompt and the answer. "
            "Shorten it, lower 'max new tokens', or split it into several messages. "
            "Nothing was saved."
        )


class AnswerTooLong(AssistantError):
    def __init__(self, max_new_tokens: int, context_window: int) -> None:
        super().__init__(
            f"'Max new tokens' is {max_new_tokens:,}, but the model reads and writes at most "
            f"{context_window:,} tokens in all: lower it well below {context_window:,} to leave "
            "room for the question. Nothing was saved."
        )


class ConversationNotFound(AssistantError):
    def __init__(self, conversation_id: int) -> None:
        self.conversation_id = conversation_id
        super().__init__(f"Conversation {conversation_id} does not exist (deleted?).")


class MessageNotFound(AssistantError):
    def __init__(self, message_id: int) -> None:
        super().__init__(f"Message {message_id} does not exist (its conversation was deleted?).")


class DatabaseLocked(AssistantError):
    def __init__(self, where: str) -> None:
        super().__init__(
            f"The database {where} is locked by another process and stayed locked past the "
            "busy timeout. Nothing was changed. Close the other program (or wait for it) and "
            "try again; ASSISTANT_DB_BUSY_TIMEOUT_S sets how long to wait."
        )


class DatabaseError(AssistantError):
    """Any other storage failure (unreadable file, schema too old, ...)."""


class DatabaseUnreachable(DatabaseError):
    """The database server does not answer, or refuses the login. Nothing was written (the
    transaction, if any, was rolled back); the next operation tries again."""

    def __init__(self, where: str, reason: str, *, login: bool = False) -> None:
        self.where, self.reason = where, reason
        what = (
            "refused the login: check the user name, password and database name in "
            "ASSISTANT_DATABASE_URL"
            if login else
            "cannot be reached: check that the server is running and that ASSISTANT_DATABASE_URL "
            "names its host and port; the app tries again on the next action"
        )
        super().__init__(f"The database {where} {what}. Nothing was changed. ({reason})")


class UnsupportedDatabase(DatabaseError):
    def __init__(self, dialect: str, supported: list[str]) -> None:
        super().__init__(
            f"ASSISTANT_DATABASE_URL points at a {dialect} database, which this assistant cannot "
            f"search documents in (no full-text search for it here). Use one of: "
            f"{', '.join(supported)} (for example postgresql+psycopg://user:password@host/db), "
            "or leave ASSISTANT_DATABASE_URL unset for the SQLite file in the data folder."
        )


class ModelNotFound(AssistantError):
    pass


class CorruptCheckpoint(AssistantError):
    pass


class GenerationFailed(AssistantError):
    pass


# -- documents ---------------------------------------------------------------------------------
class DocumentError(AssistantError):
    """A file that cannot be ingested. ``filename`` names it; the message says why and what
    to do. A failed file never leaves chunks behind, and the rest of a batch still goes in."""

    def __init__(self, filename: str, reason: str) -> None:
        self.filename, self.reason = filename, reason
        super().__init__(f"{filename}: {reason}")


class UnsupportedFile(DocumentError):
    pass


class EmptyFile(DocumentError):
    pass


class DocumentTooLarge(DocumentError):
    pass


class CorruptFile(DocumentError):
    pass


class EncryptedFile(DocumentError):
    pass


class NoExtractableText(DocumentError):
    pass


class DocumentNotFound(AssistantError):
    def __init__(self, document_id: int) -> None:
        super().__init__(f"Document {document_id} does not exist (deleted?).")


class IndexOutOfSync(AssistantError):
    pass


class AlreadyVoted(AssistantError):
    def __init__(self, comparison_id: int, vote: str) -> None:
        super().__init__(
            f"Comparison {comparison_id} was already decided ({vote.replace('_', ' ')}), "
            "perhaps in another window; your vote was not counted twice."
        )


class ComparisonNotFound(AssistantError):
    def __init__(self, comparison_id: int) -> None:
        super().__init__(f"Comparison {comparison_id} does not exist (its conversation was deleted?).")


# -- adapters ----------------------------------------------------------------------------------
class AdapterError(AssistantError):
    """A LoRA adapter that cannot be loaded, switched to or unloaded. The model is left as it
    was before the call: the previous version keeps answering."""
