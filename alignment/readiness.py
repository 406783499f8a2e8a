"""What data each kind of training needs, checked without loading a model or TRL.

A run checks its rows with :func:`check_rows` once it has exported them; the Models page
calls :func:`check_data` before it starts a run, so that a run that would stop at "not
enough data" (after ~20 s of loading) is refused at once, saying what is missing and how
to get it. Both raise the same errors.
"""

from __future__ import annotations

from typing import Any

from alignment.errors import NotEnoughTrainingData
from alignment.export import ExportOptions, export
from alignment.training_kinds import training_kind
from assistant.storage import Database


def distinct_prompts(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Online RL samples its own answers: only the prompts are used, each once."""
    seen: set[str] = set()
    out = []
    for row in rows:
        key = repr(row["prompt"])
        if key not in seen:
            seen.add(key)
            out.append({"prompt": row["prompt"]})
    return out


def check_rows(kind: str, train_rows: list[dict[str, Any]], min_rows: int | None = None) -> None:
    """Raise :class:`NotEnoughTrainingData` when ``train_rows`` cannot train ``kind``."""
    spec = training_kind(kind)
    need = min_rows if min_rows is not None else spec.min_rows
    if len(train_rows) < need:
        raise NotEnoughTrainingData(kind, spec.rows_named, len(train_rows), need, spec.hint)
    if spec.both_labels:
        labels = {bool(r["label"]) for r in train_rows}
        if labels != {True, False}:
            have = sum(r["label"] == (True in labels) for r in train_rows)
            missing = "👎" if True in labels else "👍"
            raise NotEnoughTrainingData(
                kind, f"rows of each label (it has {have} of one and none {missing})", 0, 1,
                spec.hint,
            )


def check_data(db: Database, kind: str, *, test_fraction: float = 0.1, split_seed: int = 0,
               limit: int | None = None, min_rows: int | None = None) -> int:
    """The training rows a ``kind`` run would get from ``db`` (the defaults are a run's);
    raises :class:`NoTrainingData` or :class:`NotEnoughTrainingData` as the run would."""
    spec = training_kind(kind)
    result = export(db, spec.data, ExportOptions(test_fraction=test_fraction, seed=split_seed))
    rows = result.train[:limit] if limit else list(result.train)
    if spec.online:
        rows = distinct_prompts(rows)
    check_rows(kind, rows, min_rows)
    return len(rows)
