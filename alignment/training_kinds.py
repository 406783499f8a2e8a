"""The kinds of training, in one table: each entry says which TRL trainer runs it, which
export feeds it, how many rows it needs, its defaults and how its rows are handled. The
config builder, the trainer builder, data loading and readiness checks, the `assistant
train` commands and the Models page's form all read it; adding a kind (say ORPO) is one
entry here (and its test), nothing else.

Light on purpose (no torch, no TRL): the Models page and the readiness checks import it.
TRL's classes are named, not imported: ``"DPO"`` means ``trl.DPOConfig`` and
``trl.DPOTrainer``; ``"experimental.orpo.ORPO"`` means ``trl.experimental.orpo.ORPOConfig``
and ``...ORPOTrainer`` (:meth:`TrainingKind.trl_class` imports them when a run needs them).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from assistant.versions import ANSWERABILITY_KIND, REWARD_KIND as REWARD

#: What each export (data kind) holds, for messages about missing rows, and how to get more.
DATA_HINTS = MappingProxyType({
    "preference": "Preference pairs come from regenerating an answer and choosing the best, "
    "editing an answer, 👍/👎 on two answers to one question, or compare-mode votes; "
    "`assistant data import hh-rlhf FILE` adds public pairs.",
    "kto": "KTO learns from 👍 and 👎 on single answers (it needs both kinds).",
    "sft": "SFT learns from answers rated 👍, chosen as the best, or edited.",
})


@dataclass(frozen=True)
class TrainingKind:
    """One kind of training; :data:`KINDS` holds them all."""

    name: str
    #: One sentence for the CLI's help and the Models page's caption.
    help: str
    #: The export that feeds it (:mod:`alignment.export` kinds: preference, kto, sft).
    data: str
    #: Fewer training rows than this is refused with a message (``--min-rows`` overrides).
    min_rows: int
    #: What its rows are called in that message.
    rows_named: str
    #: TRL algorithms, ``algorithm name -> TRL class stem`` (``"DPO"``: DPOConfig and
    #: DPOTrainer, under ``trl``; a dotted stem names a submodule of ``trl``); the first is
    #: the default. More than one: ``--algo`` chooses.
    algorithms: Mapping[str, str]
    #: TRL config values this project sets differently from TRL's defaults.
    defaults: Mapping[str, Any] = field(default_factory=dict)
    #: Sequences one row puts through the model with gradients in a training step (DPO, ORPO
    #: and reward: the chosen and the rejected answer), for the memory estimate
    #: (:mod:`alignment.memory`). Forward passes without gradients (DPO's reference, KTO's
    #: KL mismatch) come and go before it and are not counted.
    sequences: int = 1
    #: TRL builds the whole (rows, length, vocabulary) logits (ORPO); the others project only
    #: the scored positions, in tiles (TRL's fused LM head), or score with a scalar head.
    full_logits: bool = False
    #: Keys of :func:`alignment.machine_defaults.size_defaults` it takes (sized per machine).
    sized: tuple[str, ...] = ("max_length",)
    #: Batches grouped by length (TRL's ``group_by_length``), else TRL's sampling order.
    grouped: bool = False
    #: Sampled in order, its rows put in a length-grouped order first (KTO: its KL term
    #: pairs each row with its neighbours in the batch).
    ordered_by_length: bool = False
    #: Rows fitted to ``max_length`` here, prompts shortened from the left (the others keep
    #: TRL's own handling).
    fitted: bool = False
    #: Trained on prompt/completion rows: the loss on the answer only (SFT).
    completion_only: bool = False
    #: Online: samples its own answers to the prompts and learns from a reward model's
    #: scores (only distinct prompts are used; no held-out evaluation; ``--reward``).
    online: bool = False
    #: Trains a reward model (starts from the base with a scalar head; not a chat version).
    reward: bool = False
    #: Rows of both labels needed (KTO's 👍 and 👎).
    both_labels: bool = False
    #: Named recipes (``--preset NAME``): TRL field -> value, options given win.
    presets: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    @property
    def default_algorithm(self) -> str:
        return next(iter(self.algorithms))

    def trl_stem(self, algo: str | None = None) -> str:
        """The TRL class stem of ``algo`` (None, or a kind with one algorithm: its own)."""
        algo = algo if algo and len(self.algorithms) > 1 else self.default_algorithm
        if algo not in self.algorithms:
            raise ValueError(f"{self.name} has no algorithm {algo!r} (it has {', '.join(self.algorithms)})")
        return self.algorithms[algo]

    def trl_class(self, suffix: str, algo: str | None = None) -> type:
        """TRL's ``Config`` or ``Trainer`` class of ``algo`` (imports TRL)."""
        import importlib

        module, _, stem = self.trl_stem(algo).rpartition(".")
        return getattr(importlib.import_module(f"trl.{module}" if module else "trl"), stem + suffix)

    def title(self, algo: str | None = None) -> str:
        """``rl (grpo)`` for a kind with a choice of algorithms, else its name."""
        return f"{self.name} ({algo or self.default_algorithm})" if len(self.algorithms) > 1 else self.name

    @property
    def hint(self) -> str:
        return DATA_HINTS[self.data]

    def with_preset(self, name: str, overrides: Mapping[str, Any]) -> dict[str, Any]:
        """``overrides`` (TRL field -> value, None: not given) filled from preset ``name``;
        a value given explicitly is kept. KeyError for a preset this kind does not have."""
        chosen = self.presets[name]
        return {**overrides, **{k: v for k, v in chosen.items() if overrides.get(k) is None}}


#: In the order the Models page offers them (the first is its default).
KINDS: Mapping[str, TrainingKind] = MappingProxyType({k.name: k for k in (
    TrainingKind(
        "dpo", "DPO: learns from preference pairs: regenerate and mark the best, edits, compare "
        "votes, imported pairs (DPOTrainer).",
        data="preference", min_rows=8, rows_named="preference pairs", algorithms={"dpo": "DPO"},
        # TRL's 1e-6 is tuned for full fine-tuning, not LoRA.
        defaults={"learning_rate": 5e-5}, sequences=2, grouped=True, fitted=True,
        # "cpu": of the measured points (learning rate, steps, beta, LoRA rank), the one that
        # moved the embedded model in under 30 minutes on 2 cores (its sweep and caveats:
        # docs/training.md, "A DPO recipe for a CPU").
        presets={"cpu": {"learning_rate": 5e-4, "max_steps": 56, "max_length": 256,
                         "per_device_train_batch_size": 4, "gradient_accumulation_steps": 2}}),
    TrainingKind(
        "kto", "KTO: learns from unpaired 👍 / 👎 ratings on single answers (KTOTrainer).",
        data="kto", min_rows=8, rows_named="rated answers", algorithms={"kto": "KTO"},
        defaults={"learning_rate": 5e-5}, ordered_by_length=True, fitted=True, both_labels=True),
    TrainingKind(
        "sft", "SFT: imitates answers rated 👍, chosen as the best, or edited (SFTTrainer).",
        data="sft", min_rows=4, rows_named="good answers", algorithms={"sft": "SFT"},
        # TRL's 2e-5 is tuned for full fine-tuning, not LoRA.
        defaults={"learning_rate": 2e-4}, grouped=True, completion_only=True),
    TrainingKind(
        "orpo", "ORPO: learns from preference pairs like DPO, without a reference model, so "
        "with no second forward pass per pair (TRL's experimental ORPOTrainer).",
        data="preference", min_rows=8, rows_named="preference pairs",
        algorithms={"orpo": "experimental.orpo.ORPO"},
        # TRL's 1e-6 is tuned for full fine-tuning, not LoRA (as DPO's).
        defaults={"learning_rate": 5e-5}, sequences=2, full_logits=True, fitted=True),
    TrainingKind(
        REWARD, "Reward model: learns to score answers from preference pairs. It does not chat; "
        "online RL and `assistant eval` use it as the judge (RewardTrainer).",
        data="preference", min_rows=8, rows_named="preference pairs", algorithms={"reward": "Reward"},
        sequences=2, grouped=True, fitted=True, reward=True),
    TrainingKind(
        "rl", "Online RL (GRPO or RLOO): samples answers to the feedback's prompts and learns "
        "from a reward model's scores (GRPOTrainer, RLOOTrainer; TRL has no PPOTrainer since 2026).",
        data="preference", min_rows=4, rows_named="distinct prompts",
        algorithms={"grpo": "GRPO", "rloo": "RLOO"}, sized=("max_completion_length",),
        defaults={"learning_rate": 1e-5, "num_generations": 4, "per_device_train_batch_size": 4,
                  "gradient_accumulation_steps": 1},
        online=True),
)})


#: Every kind of version training makes: the table's, and answerability heads (trained with
#: transformers' Trainer, not TRL: alignment.answerability).
VERSION_KINDS: tuple[str, ...] = (*KINDS, ANSWERABILITY_KIND)


def training_kind(name: str) -> TrainingKind:
    """The kind called ``name``; ValueError naming the known ones otherwise."""
    try:
        return KINDS[name]
    except KeyError:
        raise ValueError(f"unknown training kind {name!r} (known: {', '.join(KINDS)})") from None


def policy_kinds() -> tuple[str, ...]:
    """The kinds whose versions chat (every kind but reward models)."""
    return tuple(k.name for k in KINDS.values() if not k.reward)


__all__ = ["DATA_HINTS", "KINDS", "REWARD", "VERSION_KINDS", "TrainingKind", "policy_kinds", "training_kind"]
