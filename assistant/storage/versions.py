"""The model registry's rows: trained versions (``model_versions``), the append-only log of
activations and the evaluations, as plain values. What they mean (the version folders, the
activation stack, the eval gate) is :mod:`assistant.registry`'s."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select

from assistant.storage.db import Database
from assistant.storage.schema import Activation, Evaluation, ModelVersion


@dataclass(frozen=True)
class NewVersion:
    """What a version is registered with (its name and folder come from its id)."""

    kind: str
    base_model: str
    base_fingerprint: str
    parent: str
    data: dict[str, Any]
    config: dict[str, Any]
    metrics: dict[str, Any]


@dataclass(frozen=True)
class StoredVersion:
    name: str
    kind: str
    base_model: str
    base_fingerprint: str
    parent: str
    #: Its folder, relative to the registry's root.
    path: str
    data: dict[str, Any]
    config: dict[str, Any]
    metrics: dict[str, Any]
    created_at: datetime


@dataclass(frozen=True)
class EvalRecord:
    candidate: str
    baseline: str
    reward_model: str | None
    metrics: dict[str, Any]
    created_at: datetime


@dataclass(frozen=True)
class ActivationRecord:
    version: str
    forced: bool
    reason: str
    created_at: datetime


def _stored(row: ModelVersion) -> StoredVersion:
    return StoredVersion(row.name, row.kind, row.base_model, row.base_fingerprint, row.parent, row.path,
                         dict(row.data), dict(row.config), dict(row.metrics), row.created_at)


def _eval(row: Evaluation) -> EvalRecord:
    return EvalRecord(row.candidate, row.baseline, row.reward_model, dict(row.metrics), row.created_at)


class VersionStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    # -- versions --------------------------------------------------------------------------
    def add(self, new: NewVersion, place: Callable[[str], None], undo: Callable[[str], None]) -> StoredVersion:
        """Insert the version named ``v<id>`` (its folder too), in one transaction that also
        runs ``place(name)`` (moving the files into place) once the name is known. When the
        name cannot be written after that, ``undo(name)`` runs before the error is raised."""
        with self.db.write() as s:
            # Within the column's 40 characters (PostgreSQL enforces it; SQLite did not).
            row = ModelVersion(name=f".pending-{uuid.uuid4().hex[:24]}", path="", **asdict(new))
            s.add(row)
            s.flush()
            row.name = row.path = f"v{row.id}"
            place(row.name)
            try:
                s.flush()
            except BaseException:
                undo(row.name)
                raise
            return _stored(row)

    def find(self, name: str) -> StoredVersion | None:
        with self.db.read() as s:
            row = s.scalar(select(ModelVersion).where(ModelVersion.name == name))
            return _stored(row) if row is not None else None

    def update_metrics(self, name: str, updates: dict[str, Any]) -> StoredVersion | None:
        """Merge ``updates`` into the version's metrics (what was measured of it after it was
        registered; its lineage, data and config never change). None: no such version."""
        with self.db.write() as s:
            row = s.scalar(select(ModelVersion).where(ModelVersion.name == name))
            if row is None:
                return None
            row.metrics = {**(row.metrics or {}), **updates}  # a new dict: the JSON column sees it
            return _stored(row)

    def all(self) -> list[StoredVersion]:
        """Every version, oldest first."""
        with self.db.read() as s:
            return [_stored(r) for r in s.scalars(select(ModelVersion).order_by(ModelVersion.id))]

    def newest(self, kind: str) -> StoredVersion | None:
        with self.db.read() as s:
            row = s.scalar(
                select(ModelVersion).where(ModelVersion.kind == kind).order_by(ModelVersion.id.desc())
            )
            return _stored(row) if row else None

    # -- activations -----------------------------------------------------------------------
    def activations(self) -> list[ActivationRecord]:
        """The log, oldest first."""
        with self.db.read() as s:
            rows = s.scalars(select(Activation).order_by(Activation.id))
            return [ActivationRecord(r.version, r.forced, r.reason, r.created_at) for r in rows]

    def newest_activation(self) -> str | None:
        """The version the newest activation names (None: the log is empty)."""
        with self.db.read() as s:
            return s.scalar(select(Activation.version).order_by(Activation.id.desc()).limit(1))

    def add_activation(self, version: str, forced: bool, reason: str) -> None:
        with self.db.write() as s:
            s.add(Activation(version=version, forced=forced, reason=reason))

    # -- evaluations -----------------------------------------------------------------------
    def add_evaluation(self, candidate: str, baseline: str, reward_model: str | None,
                       metrics: dict[str, Any]) -> EvalRecord:
        with self.db.write() as s:
            row = Evaluation(candidate=candidate, baseline=baseline, reward_model=reward_model,
                             metrics=metrics)
            s.add(row)
            s.flush()
            return EvalRecord(candidate, baseline, reward_model, dict(metrics), row.created_at)

    def evaluations(self, candidate: str | None = None) -> list[EvalRecord]:
        """Oldest first; only those of ``candidate`` when given."""
        with self.db.read() as s:
            q = select(Evaluation).order_by(Evaluation.id)
            if candidate is not None:
                q = q.where(Evaluation.candidate == candidate)
            return [_eval(r) for r in s.scalars(q)]
