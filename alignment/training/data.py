"""The rows a run trains on: the feedback export (the same code as `assistant data export`),
cut to ``limit``, checked against a minimum, and written into the version's folder so that
the version records exactly what it learned from (with a SHA-256 of the files)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from alignment.export import ExportOptions, ExportReport, ExportResult, export, write_export
from alignment.readiness import DATA_KIND, check_rows, distinct_prompts
from assistant.generation import template_input
from assistant.storage import Database


@dataclass
class TrainingData:
    train: list[dict[str, Any]]
    test: list[dict[str, Any]]
    #: Stored with the version: kind, rows, sha256, the export report.
    record: dict[str, Any]
    report: ExportReport


def prepare(db: Database, kind: str, config, folder: Path) -> TrainingData:  # noqa: ANN001
    data_kind = DATA_KIND[kind]
    options = ExportOptions(test_fraction=config.test_fraction, seed=config.split_seed)
    result = export(db, data_kind, options)  # raises NoTrainingData when there is none
    train_rows = result.train[: config.limit] if config.limit else list(result.train)
    test_rows = result.test if config.eval_rows is None else result.test[: config.eval_rows]
    if kind == "rl":  # online RL samples its own answers: only the prompts are used
        train_rows, test_rows = distinct_prompts(train_rows), distinct_prompts(test_rows)

    check_rows(kind, train_rows, config.min_rows)

    used = ExportResult(train_rows, test_rows, replace(result.report, train=len(train_rows), test=len(test_rows)))
    write_export(used, folder, "jsonl")
    record = {
        "kind": data_kind, "train_rows": len(train_rows), "test_rows": len(test_rows),
        "sha256": _sha256(folder), "limit": config.limit, "test_fraction": config.test_fraction,
        "split_seed": config.split_seed, "export": vars(result.report),
    }
    return TrainingData(train_rows, test_rows, record, used.report)


def defuse(data: TrainingData, tokenizer, folder: Path) -> TrainingData:  # noqa: ANN001
    """The rows as the chat gives text to the model: no message text becomes a special token
    (``generation.template_input``; TRL would read a literal ``<|im_end|>`` in a message as a
    turn boundary). When that changes a row, the version's files are written again, so that
    they stay exactly what it learned from."""
    def fix(row: dict[str, Any]) -> dict[str, Any]:
        return {k: template_input(tokenizer, v) if _is_messages(v) else v for k, v in row.items()}

    train, test = [fix(r) for r in data.train], [fix(r) for r in data.test]
    if (train, test) == (data.train, data.test):
        return data
    write_export(ExportResult(train, test, data.report), folder, "jsonl")
    return TrainingData(train, test, {**data.record, "sha256": _sha256(folder),
                                      "special_tokens_defused": True}, data.report)


def _sha256(folder: Path) -> str:
    """One hash of the files a version trains on (train.jsonl, then test.jsonl)."""
    digest = hashlib.sha256()
    for name in ("train.jsonl", "test.jsonl"):
        digest.update((folder / name).read_bytes())
    return digest.hexdigest()


def _is_messages(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(
        isinstance(m, dict) and "content" in m for m in value)
