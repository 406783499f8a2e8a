"""One builder per kind: the TRL trainer for a model, a config and the rows. Thin on purpose:
everything they share (data, model, saving, registering) lives in :mod:`.run`.

Length grouping: TRL tokenizes the rows inside the trainer, into columns that differ per
trainer (``input_ids``; ``prompt_ids`` + ``chosen_ids`` / ``rejected_ids``; ...), and the
trainer's ``LengthGroupedSampler`` only knows ``input_ids``. So once the trainer is built,
each row's length as the model sees it (prompt + its longest answer) becomes a ``length``
column, which the sampler reads (``length_column_name``) and the trainer keeps."""

from __future__ import annotations

from typing import Any

from datasets import Dataset
from trl import DPOTrainer, GRPOTrainer, KTOTrainer, RewardTrainer, RLOOTrainer, SFTTrainer


def _datasets(train: list[dict[str, Any]], test: list[dict[str, Any]]) -> tuple[Dataset, Dataset | None]:
    return Dataset.from_list(train), (Dataset.from_list(test) if test else None)


def build_trainer(kind: str, algo: str, model, config, train, test, tokenizer,  # noqa: ANN001, ANN201
                  peft_config=None, reward_model=None, callbacks=()):  # noqa: ANN001
    train_ds, test_ds = _datasets(train, test)
    common = dict(model=model, args=config, train_dataset=train_ds, eval_dataset=test_ds,
                  processing_class=tokenizer, peft_config=peft_config, callbacks=list(callbacks))
    if kind == "rl":
        cls = GRPOTrainer if algo == "grpo" else RLOOTrainer
        common.pop("eval_dataset")  # evaluated by `assistant eval`, against the reward model
        return cls(reward_funcs=[reward_model], reward_processing_classes=[tokenizer], **common)
    classes = {"reward": RewardTrainer, "sft": SFTTrainer, "dpo": DPOTrainer, "kto": KTOTrainer}
    if kind not in classes:
        raise ValueError(f"unknown kind {kind!r}")
    trainer = classes[kind](**common)
    if config.train_sampling_strategy == "group_by_length":
        _add_lengths(trainer)
    return trainer


def row_lengths(dataset) -> list[int] | None:  # noqa: ANN001
    """Tokens of each tokenized row as the model sees it: the prompt and its longest answer
    (None: not a tokenized dataset)."""
    if not isinstance(dataset, Dataset):
        return None
    columns = set(dataset.column_names)

    def lengths(name: str) -> list[int]:
        return [len(ids) for ids in dataset[name]]

    if "input_ids" in columns:
        return lengths("input_ids")
    answers = [lengths(c) for c in ("chosen_ids", "rejected_ids", "completion_ids") if c in columns]
    if not answers:
        return None
    longest = [max(n) for n in zip(*answers, strict=True)]
    if "prompt_ids" in columns:
        longest = [a + p for a, p in zip(longest, lengths("prompt_ids"), strict=True)]
    return longest


def _add_lengths(trainer) -> None:  # noqa: ANN001
    name = trainer.args.length_column_name
    for split in ("train_dataset", "eval_dataset"):
        dataset = getattr(trainer, split, None)
        lengths = row_lengths(dataset)
        if lengths is not None and name not in dataset.column_names:
            setattr(trainer, split, dataset.add_column(name, lengths))
    # The trainer drops the columns its model does not take before the sampler reads them.
    trainer._set_signature_columns_if_needed()
    if trainer._signature_columns is not None and name not in trainer._signature_columns:
        trainer._signature_columns = [*trainer._signature_columns, name]
