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
from assistant.storage import Database

#: Which export feeds which trainer.
DATA_KIND = {"reward": "preference", "dpo": "preference", "rl": "preference", "kto": "kto", "sft": "sft"}
MIN_ROWS = {"reward": 8, "dpo": 8, "kto": 8, "sft": 4, "rl": 4}

HINTS = {
    "preference": "Preference pairs come from regenerating an answer and choosing the best, "
    "editing an answer, 👍/👎 on two answers to one question, or compare-mode votes; "
    "`assistant data import hh-rlhf FILE` adds public pairs.",
    "kto": "KTO learns from 👍 and 👎 on single answers (it needs both kinds).",
    "sft": "SFT learns from answers rated 👍, chosen as the best, or edited.",
}


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
    data_kind = DATA_KIND[kind]
    need = min_rows if min_rows is not None else MIN_ROWS[kind]
    what = {"preference": "preference pairs", "kto": "rated answers", "sft": "good answers"}[data_kind]
    if kind == "rl":
        what = "distinct prompts"
    if len(train_rows) < need:
        raise NotEnoughTrainingData(kind, what, len(train_rows), need, HINTS[data_kind])
    if kind == "kto":
        labels = {bool(r["label"]) for r in train_rows}
        if labels != {True, False}:
            have = sum(r["label"] == (True in labels) for r in train_rows)
            missing = "👎" if True in labels else "👍"
            raise NotEnoughTrainingData(
                kind, f"rows of each label (it has {have} of one and none {missing})", 0, 1,
                HINTS["kto"],
            )


def check_data(db: Database, kind: str, *, test_fraction: float = 0.1, split_seed: int = 0,
               limit: int | None = None, min_rows: int | None = None) -> int:
    """The training rows a ``kind`` run would get from ``db`` (the defaults are a run's);
    raises :class:`NoTrainingData` or :class:`NotEnoughTrainingData` as the run would."""
    result = export(db, DATA_KIND[kind], ExportOptions(test_fraction=test_fraction, seed=split_seed))
    rows = result.train[:limit] if limit else list(result.train)
    if kind == "rl":
        rows = distinct_prompts(rows)
    check_rows(kind, rows, min_rows)
    return len(rows)
