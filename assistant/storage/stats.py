"""Counts of the feedback collected: by kind, by model version and by day."""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import date

from sqlalchemy import func, select

from assistant.storage.db import Database
from assistant.storage.ownership import Owner, visible
from assistant.storage.schema import Choice, Comparison, Conversation, Edit, Feedback, Message


@dataclass
class FeedbackStats:
    by_kind: dict[str, int] = field(default_factory=dict)
    #: version -> {"answers", "up", "down"}
    by_version: dict[str, dict[str, int]] = field(default_factory=dict)
    #: day -> {"up", "down", "edits", "choices", "votes"}
    by_day: dict[date, dict[str, int]] = field(default_factory=dict)
    tags: dict[str, int] = field(default_factory=dict)


def feedback_stats(db: Database, owner: Owner | None = None) -> FeedbackStats:
    """Current ratings (the newest per answer) and every edit, choice and vote (of the
    conversations ``owner`` sees: see ``ownership``)."""
    stats = FeedbackStats()
    mine = visible(owner)
    with db.read() as s:
        newest = (
            select(func.max(Feedback.id)).group_by(Feedback.message_id).scalar_subquery()
        )
        ratings = s.execute(
            select(Feedback.rating, Feedback.comment, Feedback.tags, Feedback.created_at,
                   Message.model_version)
            .join(Message, Message.id == Feedback.message_id)
            .join(Conversation, Conversation.id == Message.conversation_id)
            .where(Feedback.id.in_(newest), mine)
        ).all()
        edits = s.scalars(
            select(Edit.created_at)
            .join(Message, Message.id == Edit.message_id)
            .join(Conversation, Conversation.id == Message.conversation_id)
            .where(mine)
        ).all()
        choices = s.execute(
            select(Choice.created_at, Conversation.source)
            .join(Message, Message.id == Choice.question_id)
            .join(Conversation, Conversation.id == Message.conversation_id)
            .where(mine)
        ).all()
        votes = s.scalars(
            select(Comparison.voted_at)
            .join(Message, Message.id == Comparison.question_id)
            .join(Conversation, Conversation.id == Message.conversation_id)
            .where(Comparison.vote.is_not(None), mine)
        ).all()
        answers = s.execute(
            select(Message.model_version, func.count())
            .join(Conversation, Conversation.id == Message.conversation_id)
            .where(Message.role == "assistant", Conversation.source.is_(None), mine)
            .group_by(Message.model_version)
        ).all()

    kinds: Counter[str] = Counter()
    tags: Counter[str] = Counter()
    by_version: dict[str, Counter[str]] = defaultdict(Counter)
    by_day: dict[date, Counter[str]] = defaultdict(Counter)
    for version, n in answers:
        by_version[version or "?"]["answers"] += n
    for rating, comment, tag_list, created, version in ratings:
        if rating is None:
            continue
        key = "up" if rating > 0 else "down"
        kinds[f"thumbs {key}"] += 1
        kinds["comments"] += bool(comment)
        tags.update(tag_list or ())
        by_version[version or "?"][key] += 1
        by_day[created.date()][key] += 1
    for created in edits:
        kinds["edits"] += 1
        by_day[created.date()]["edits"] += 1
    for created, source in choices:
        kinds["imported pairs" if source else "best-of choices"] += 1
        if not source:
            by_day[created.date()]["choices"] += 1
    for voted in votes:
        kinds["compare votes"] += 1
        by_day[voted.date()]["votes"] += 1
    stats.by_kind = dict(kinds)
    stats.tags = dict(tags.most_common())
    stats.by_version = {v: dict(c) for v, c in sorted(by_version.items())}
    stats.by_day = {d: dict(c) for d, c in sorted(by_day.items())}
    return stats
