"""The rows a run trains on: the feedback export (the same code as `assistant data export`),
cut to ``limit``, checked against a minimum, and written into the version's folder so that
the version records exactly what it learned from (with a SHA-256 of the files)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from alignment.errors import RowsTooLong
from alignment.export import ExportOptions, ExportReport, ExportResult, export, write_export
from alignment.readiness import check_rows, distinct_prompts
from alignment.training_kinds import training_kind
from alignment.training.lengths import fit_rows
from assistant.engines.chat_template import template_input
from assistant.storage import Database

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from alignment.training.config import RunArgs


@dataclass
class TrainingData:
    train: list[dict[str, Any]]
    test: list[dict[str, Any]]
    #: Stored with the version: kind, rows, sha256, the export report.
    record: dict[str, Any]
    report: ExportReport


def prepare(db: Database, kind: str, config: RunArgs, folder: Path) -> TrainingData:
    spec = training_kind(kind)
    options = ExportOptions(test_fraction=config.test_fraction, seed=config.split_seed,
                            grounded=bool(getattr(config, "grounded", False)))
    result = export(db, spec.data, options)  # raises NoTrainingData when there is none
    train_rows = result.train[: config.limit] if config.limit else list(result.train)
    everything = config.eval_rows is None or config.eval_rows < 0
    test_rows = list(result.test) if everything else result.test[: config.eval_rows]
    if spec.online:  # online RL samples its own answers: only the prompts are used
        train_rows, test_rows = distinct_prompts(train_rows), distinct_prompts(test_rows)

    check_rows(kind, train_rows, config.min_rows)

    used = ExportResult(train_rows, test_rows, replace(result.report, train=len(train_rows), test=len(test_rows)))
    write_export(used, folder, "jsonl")
    record = {
        "kind": spec.data, "train_rows": len(train_rows), "test_rows": len(test_rows),
        "sha256": _sha256(folder), "limit": config.limit, "test_fraction": config.test_fraction,
        "split_seed": config.split_seed, "export": vars(result.report),
    }
    return TrainingData(train_rows, test_rows, record, used.report)


def defuse(data: TrainingData, tokenizer: PreTrainedTokenizerBase, folder: Path) -> TrainingData:
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


def fit(data: TrainingData, tokenizer: PreTrainedTokenizerBase, config: RunArgs, kind: str,
        folder: Path) -> TrainingData:
    """Rows fitted to ``config.max_length`` (:mod:`.lengths`): prompts shortened from the left
    by default, over-long rows dropped with ``config.drop_long``. The counts go into the
    record under ``lengths``; a split emptied (or the training split left under its minimum)
    by the limit is refused with a message naming the limit."""
    spec = training_kind(kind)  # SFT and online RL keep TRL's handling of long rows
    max_length = getattr(config, "max_length", None) if spec.fitted else None
    drop = bool(getattr(config, "drop_long", False))
    train, train_report = fit_rows(data.train, tokenizer, max_length, drop)
    test, test_report = fit_rows(data.test, tokenizer, max_length, drop)
    need = config.min_rows if config.min_rows is not None else spec.min_rows
    if max_length is not None and data.test and not test:
        raise RowsTooLong(kind, "held-out", len(data.test), 0, max_length, drop)
    if max_length is not None and len(train) < need <= len(data.train):
        raise RowsTooLong(kind, "training", len(data.train), len(train), max_length, drop, need)
    lengths = {"train": train_report.as_dict(), "test": test_report.as_dict()}
    record = {**data.record, "lengths": lengths, "train_rows": len(train), "test_rows": len(test)}
    if (train, test) == (data.train, data.test):
        return TrainingData(train, test, record, data.report)
    write_export(ExportResult(train, test, data.report), folder, "jsonl")
    return TrainingData(train, test, {**record, "sha256": _sha256(folder)}, data.report)


def row_counts(data: TrainingData, trained_rows: int, heldout_rows: int | None, steps: int,
               rows_per_step: int, drop_long: bool) -> dict[str, Any]:
    """Rows given, used and dropped (and why), as every run reports them: the export's own
    drops (empty, identical, duplicate), the length limit's, the trainer's (``trained_rows``:
    the rows TRL's dataset kept, which should be all of them), and how many a run of
    ``steps`` updates of ``rows_per_step`` rows actually saw."""
    e = data.record.get("export", {})
    lengths = data.record.get("lengths", {})
    train_len, test_len = lengths.get("train", {}), lengths.get("test", {})
    fitted_train = train_len.get("used", len(data.train))
    fitted_test = test_len.get("used", len(data.test))
    return {
        "export_rows_in": e.get("rows_in"),
        "dropped_empty": e.get("skipped_empty", 0),
        "dropped_identical": e.get("skipped_identical", 0),
        "dropped_duplicate": e.get("duplicates_dropped", 0),
        "train_given": train_len.get("given", len(data.train)),
        "train_truncated": train_len.get("truncated", 0),
        "train_dropped_too_long": train_len.get("dropped_too_long", 0)
        + max(0, fitted_train - trained_rows),
        "train_used": trained_rows,
        "train_seen": min(trained_rows, steps * rows_per_step),
        "train_row_passes": round(steps * rows_per_step / trained_rows, 3) if trained_rows else 0.0,
        "heldout_given": test_len.get("given", len(data.test)),
        "heldout_truncated": test_len.get("truncated", 0),
        "heldout_dropped_too_long": test_len.get("dropped_too_long", 0)
        + (max(0, fitted_test - heldout_rows) if heldout_rows is not None else 0),
        "heldout_used": heldout_rows if heldout_rows is not None else 0,
        "max_length": train_len.get("max_length"),
        "long_rows": "dropped" if drop_long else "prompt shortened",
    }


def describe_counts(rows: dict[str, Any]) -> list[str]:
    """The counts as lines for a terminal (and the Models page)."""
    if not rows:
        return []
    long_rule = (f"over {rows['max_length']} tokens" if rows.get("max_length") else "too long")
    lines = [
        f"training rows: {rows['train_given']} given, {rows['train_used']} used "
        f"({rows['train_truncated']} with the prompt shortened, {rows['train_dropped_too_long']} "
        f"dropped as {long_rule}); {rows['train_seen']} seen by the "
        f"{'updates' if rows['train_row_passes'] else 'run'}"
        + (f" ({rows['train_row_passes']:g} passes)" if rows["train_row_passes"] > 1 else ""),
        f"held-out rows: {rows['heldout_given']} given, {rows['heldout_used']} used "
        f"({rows['heldout_truncated']} with the prompt shortened, "
        f"{rows['heldout_dropped_too_long']} dropped as {long_rule})",
    ]
    if rows.get("export_rows_in") is not None:
        lines.append(
            f"export: {rows['export_rows_in']} rows built, {rows['dropped_empty']} dropped as "
            f"empty, {rows['dropped_identical']} as identical, {rows['dropped_duplicate']} as duplicates"
        )
    return lines


def _sha256(folder: Path) -> str:
    """One hash of the files a version trains on (train.jsonl, then test.jsonl)."""
    digest = hashlib.sha256()
    for name in ("train.jsonl", "test.jsonl"):
        digest.update((folder / name).read_bytes())
    return digest.hexdigest()


def _is_messages(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(
        isinstance(m, dict) and "content" in m for m in value)
