"""One builder per kind: the TRL trainer for a model, a config and the rows. Thin on purpose:
everything they share (data, model, saving, registering) lives in :mod:`.run`.

Length grouping: TRL tokenizes the rows inside the trainer, into columns that differ per
trainer (``input_ids``; ``prompt_ids`` + ``chosen_ids`` / ``rejected_ids``; ...), and the
trainer's ``LengthGroupedSampler`` only knows ``input_ids``. So once the trainer is built,
each row's length as the model sees it (prompt + its longest answer) becomes a ``length``
column, which the sampler reads (``length_column_name``) and the trainer keeps.

KTO must sample in order (its KL term pairs each row with its neighbours in the batch), so
its rows are put in a length-grouped order before TRL sees them (:func:`grouped_order`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from datasets import Dataset

from alignment.training_kinds import training_kind

if TYPE_CHECKING:
    import torch
    from peft import LoraConfig
    from transformers import PreTrainedTokenizerBase, Trainer, TrainerCallback

    from alignment.training.config import RunArgs


def _datasets(train: list[dict[str, Any]], test: list[dict[str, Any]]) -> tuple[Dataset, Dataset | None]:
    return Dataset.from_list(train), (Dataset.from_list(test) if test else None)


def prompt_completion(row: dict[str, Any]) -> dict[str, Any]:
    """An SFT row ``{"messages": [..., assistant]}`` as ``{"prompt": [...], "completion":
    [assistant]}``: TRL's SFTTrainer then computes the loss on the answer only
    (``completion_only_loss``). On ``messages`` it would train on every token, the system
    prompt, the user's words and the sources included (its ``assistant_only_loss`` needs
    ``{% generation %}`` markers that SmolLM2's chat template does not have)."""
    messages = row.get("messages")
    if not messages or messages[-1].get("role") != "assistant":
        return row
    rest = {k: v for k, v in row.items() if k != "messages"}
    return {**rest, "prompt": list(messages[:-1]), "completion": [messages[-1]]}


def build_trainer(kind: str, algo: str | None, model: torch.nn.Module, config: RunArgs,
                  train: list[dict[str, Any]], test: list[dict[str, Any]], tokenizer: PreTrainedTokenizerBase,
                  peft_config: LoraConfig | None = None, reward_model: torch.nn.Module | None = None,
                  callbacks: Sequence[TrainerCallback] = ()) -> Trainer:
    """TRL's trainer for ``kind`` (:mod:`alignment.training_kinds` names it) on these rows."""
    spec = training_kind(kind)
    cls = spec.trl_class("Trainer", algo)
    if spec.completion_only:
        train, test = [prompt_completion(r) for r in train], [prompt_completion(r) for r in test]
    if spec.ordered_by_length and config.train_sampling_strategy == "sequential":
        per_update = config.per_device_train_batch_size * config.gradient_accumulation_steps
        train = [train[i] for i in grouped_order([_text_length(r) for r in train], per_update, config.seed)]
    train_ds, test_ds = _datasets(train, test)
    common = dict(model=model, args=config, train_dataset=train_ds, eval_dataset=test_ds,
                  processing_class=tokenizer, peft_config=peft_config, callbacks=list(callbacks))
    if spec.online:
        common.pop("eval_dataset")  # evaluated by `assistant eval`, against the reward model
        return cls(reward_funcs=[reward_model], reward_processing_classes=[tokenizer], **common)
    trainer = cls(**common)
    if config.train_sampling_strategy == "group_by_length":
        _add_lengths(trainer)
    return trainer


def grouped_order(lengths: list[int], batch: int, seed: int, groups_of: int = 50) -> list[int]:
    """Indices in random order, then sorted by length within groups of ``groups_of`` batches
    (as transformers' ``LengthGroupedSampler`` does): consecutive batches hold rows of
    similar length, and the run still sees them in a shuffled order."""
    import random

    order = list(range(len(lengths)))
    random.Random(seed).shuffle(order)
    size = max(1, batch * groups_of)
    return [i for start in range(0, len(order), size)
            for i in sorted(order[start:start + size], key=lambda i: -lengths[i])]


def _text_length(row: dict[str, Any]) -> int:
    """Characters of a row's messages (a stand-in for tokens, to order rows by length)."""
    return sum(len(str(m.get("content", ""))) for k in ("prompt", "completion") for m in row.get(k) or [])


def row_lengths(dataset: object) -> list[int] | None:
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


def _add_lengths(trainer: Trainer) -> None:
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
