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


class AuthError(AssistantError):
    """Base class of login and permission errors (``assistant.login.auth``)."""


class UserError(AuthError):
    """A user could not be added or changed (the message says why)."""


class ModelNotFound(AssistantError):
    pass


class CorruptCheckpoint(AssistantError):
    pass


class GenerationFailed(AssistantError):
    pass


class EngineUnavailable(AssistantError):
    """The configured engine cannot run here (not installed, server unreachable or refusing);
    the message says what to do. Nothing was stored for the question that met it, beyond
    the question itself."""


class ConversionFailed(AssistantError):
    """A checkpoint or adapter could not be converted for an engine; nothing half-written
    was left where a reader would find it."""


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


class OverBudget(DocumentError):
    """A file over one of the parsing budgets (``ASSISTANT_RETRIEVAL__PARSE__*``): refused
    before it could use up the machine's memory or time."""

    def __init__(self, filename: str, found: str, budget: str, setting: str) -> None:
        self.found, self.limit, self.budget = found, budget, setting
        super().__init__(
            filename,
            f"refused: {found}, over the parsing budget of {budget} "
            f"(ASSISTANT_RETRIEVAL__PARSE__{setting.upper()}); split the file, or raise the "
            "budget if you trust it",
        )


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


# -- refusals ----------------------------------------------------------------------------------
class Refused(AssistantError, ValueError):
    """A request that the stored data does not allow (rating a question, an empty edit, ...);
    nothing was changed. Also a ``ValueError``: the request's arguments were wrong."""


class NotAnAnswer(Refused):
    """An action for answers, asked of another message."""

    def __init__(self, message_id: int, rule: str) -> None:
        self.message_id = message_id
        super().__init__(f"Message {message_id} cannot be used here: {rule}. Nothing was changed.")


class NotAQuestion(Refused):
    """An action for questions, asked of another message."""

    def __init__(self, message_id: int, rule: str) -> None:
        self.message_id = message_id
        super().__init__(f"Message {message_id} cannot be used here: {rule}. Nothing was changed.")


class EmptyEdit(Refused):
    def __init__(self) -> None:
        super().__init__("The edited answer is empty: write the better answer, or leave the "
                         "original as it is. Nothing was saved.")


class InvalidRating(Refused):
    def __init__(self, rating: object) -> None:
        super().__init__(f"A rating is +1 (thumbs up), -1 (thumbs down) or None (cleared), "
                         f"not {rating!r}. Nothing was saved.")


class InvalidVote(Refused):
    def __init__(self, vote: object, votes: tuple[str, ...]) -> None:
        super().__init__(f"A compare vote is one of {', '.join(votes)}, not {vote!r}. "
                         "Nothing was saved.")


class IncompleteComparison(Refused):
    def __init__(self) -> None:
        super().__init__("Both answers must be complete to compare them: an interrupted pair "
                         "is not recorded. Answer again to compare.")


# -- adapters ----------------------------------------------------------------------------------
class AdapterError(AssistantError):
    """A LoRA adapter that cannot be loaded, switched to or unloaded. The model is left as it
    was before the call: the previous version keeps answering."""
