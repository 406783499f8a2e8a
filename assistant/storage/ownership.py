"""Who sees which conversation when login is on.

An *owner* is anything with ``id`` and ``is_admin`` (``assistant.login.auth.User``); ``None``
means login is off, or an unrestricted caller (the CLI's admin commands), and sees all.
A user sees the conversations they own; an admin also sees those without an owner (made
while login was off). Everything hanging off a conversation (messages, ratings, choices,
edits, comparisons) follows it.
"""

from __future__ import annotations

from typing import Any, Protocol

from sqlalchemy import ColumnElement, or_, true

from assistant.storage.schema import Conversation


class Owner(Protocol):
    id: int

    @property
    def is_admin(self) -> bool: ...


def visible(owner: Owner | None) -> ColumnElement[bool]:
    """A WHERE clause on ``Conversation`` selecting what ``owner`` may see."""
    if owner is None:
        return true()
    if owner.is_admin:
        return or_(Conversation.owner_id == owner.id, Conversation.owner_id.is_(None))
    return Conversation.owner_id == owner.id


def can_see(owner: Owner | None, conversation: Any) -> bool:
    """The same rule for a loaded ``Conversation`` row."""
    if owner is None:
        return True
    return conversation.owner_id == owner.id or (owner.is_admin and conversation.owner_id is None)


def owner_id(owner: Owner | None) -> int | None:
    return None if owner is None else owner.id
