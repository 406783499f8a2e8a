"""One builder per kind: the TRL trainer for a model, a config and the rows. Thin on purpose:
everything they share (data, model, saving, registering) lives in :mod:`.run`."""

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
    if kind == "reward":
        return RewardTrainer(**common)
    if kind == "sft":
        return SFTTrainer(**common)
    if kind == "dpo":
        return DPOTrainer(**common)
    if kind == "kto":
        return KTOTrainer(**common)
    if kind == "rl":
        cls = GRPOTrainer if algo == "grpo" else RLOOTrainer
        common.pop("eval_dataset")  # evaluated by `assistant eval`, against the reward model
        return cls(reward_funcs=[reward_model], reward_processing_classes=[tokenizer], **common)
    raise ValueError(f"unknown kind {kind!r}")
