"""Compare mode (an arena): two answers to one question side by side, one vote each.

A vote is cast once: the UPDATE only succeeds while no vote is stored, so two sessions
voting on the same comparison at once cannot both count. Voting A or B also records a
Choice of the winner, so the vote becomes a preference pair like any other choice.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import select, update
from sqlalchemy.orm import aliased

from assistant.errors import AlreadyVoted, ComparisonNotFound, InvalidVote
from assistant.storage.conversations import show_only
from assistant.storage.db import Database
from assistant.storage.ownership import Owner, can_see, visible
from assistant.storage.schema import Choice, Comparison, Conversation, Message, utcnow

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

VOTES = ("a", "b", "tie", "both_bad")


@dataclass(frozen=True)
class StoredComparison:
    id: int
    question_id: int
    a_id: int
    b_id: int
    vote: str | None
    created_at: datetime
    voted_at: datetime | None


@dataclass(frozen=True)
class Outcome:
    """A decided comparison, by model version (for the leaderboard)."""

    a_version: str
    b_version: str
    vote: str


def _cmp(row: Comparison) -> StoredComparison:
    return StoredComparison(
        row.id, row.question_id, row.a_id, row.b_id, row.vote, row.created_at, row.voted_at
    )


class ComparisonStore:
    """Comparisons as ``owner`` sees them (those in their conversations; see ``ownership``)."""

    def __init__(self, db: Database, owner: Owner | None = None) -> None:
        self.db = db
        self.owner = owner

    def _check(self, s: Session, question_id: int, comparison_id: int) -> None:
        question = s.get(Message, question_id)
        if question is None or not can_see(self.owner, question.conversation):
            raise ComparisonNotFound(comparison_id)

    def create(self, question_id: int, a_id: int, b_id: int) -> StoredComparison:
        with self.db.write() as s:
            self._check(s, question_id, 0)
            row = Comparison(question_id=question_id, a_id=a_id, b_id=b_id)
            s.add(row)
            s.flush()
            return _cmp(row)

    def get(self, comparison_id: int) -> StoredComparison:
        with self.db.read() as s:
            row = s.get(Comparison, comparison_id)
            if row is None:
                raise ComparisonNotFound(comparison_id)
            self._check(s, row.question_id, comparison_id)
            return _cmp(row)

    def for_conversation(self, conversation_id: int) -> dict[int, StoredComparison]:
        """The newest comparison of each question in a conversation, by question id."""
        with self.db.read() as s:
            rows = s.scalars(
                select(Comparison)
                .join(Message, Message.id == Comparison.question_id)
                .join(Conversation, Conversation.id == Message.conversation_id)
                .where(Message.conversation_id == conversation_id, visible(self.owner))
                .order_by(Comparison.id)
            )
            return {r.question_id: _cmp(r) for r in rows}

    def vote(self, comparison_id: int, vote: str) -> StoredComparison:
        if vote not in VOTES:
            raise InvalidVote(vote, VOTES)
        with self.db.write() as s:
            row = s.get(Comparison, comparison_id)
            if row is None:
                raise ComparisonNotFound(comparison_id)
            self._check(s, row.question_id, comparison_id)
            done = s.execute(
                update(Comparison)
                .where(Comparison.id == comparison_id, Comparison.vote.is_(None))
                .values(vote=vote, voted_at=utcnow())
            )
            if done.rowcount == 0:
                s.refresh(row)
                raise AlreadyVoted(comparison_id, row.vote or "?")
            if vote in ("a", "b"):
                winner = row.a_id if vote == "a" else row.b_id
                s.add(Choice(question_id=row.question_id, chosen_id=winner))
                show_only(s, row.question_id, winner)
            return _cmp(row)

    def outcomes(self) -> list[Outcome]:
        a, b = aliased(Message), aliased(Message)
        with self.db.read() as s:
            rows = s.execute(
                select(a.model_version, b.model_version, Comparison.vote)
                .join(a, a.id == Comparison.a_id)
                .join(b, b.id == Comparison.b_id)
                .join(Message, Message.id == Comparison.question_id)
                .join(Conversation, Conversation.id == Message.conversation_id)
                .where(Comparison.vote.is_not(None), visible(self.owner))
                .order_by(Comparison.id)
            ).all()
        return [Outcome(av or "?", bv or "?", v) for av, bv, v in rows]
