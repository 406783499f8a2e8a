"""Training configuration: TRL's own config dataclasses, extended with what the assistant
adds (where the data and the starting version come from, the LoRA shape). Everything TRL
accepts (``learning_rate``, ``beta``, ``max_length``, ``num_generations``, ...) is set the
TRL way; ``make_config`` only changes defaults that are wrong for this project:

* bf16 where it is fast: on CUDA when supported, and on CPUs with AMX or AVX512_BF16 (fp32
  weights, bf16 compute: 1.5-1.7x the fp32 step, bench/dtype.py); fp32 on other CPUs (TRL
  defaults to ``bf16=True``, and bf16 matmul on CPUs without native support is many times
  slower: docs/engines.md). ``ASSISTANT_DTYPE`` (float32, bfloat16) overrides ``auto``;
* no gradient checkpointing for small models (TRL turns it on; it slows them down), no hub,
  no intermediate checkpoints (a version is registered whole or not at all), log every step;
* sized for the machine (:mod:`alignment.machine_defaults`): without CUDA, rows of at most 256 tokens,
  batches of 4 accumulated over 2 steps and 48 held-out rows, so that one pass over ~1,000
  rows takes about half an hour on a 2-core CPU (docs/training.md has the measurements);
  with CUDA, 512 tokens, batches of 4 and 200 held-out rows;
* training batches grouped by length (``train_sampling_strategy="group_by_length"``, the
  lengths given by :mod:`.trainers`): on random batches 40-47% of every batch was padding.
  KTO keeps TRL's sequential order (its KL term pairs each row with its neighbours); online
  RL batches the prompts' samples, whose lengths the sampler cannot know;
* each kind's own defaults (learning rates for LoRA, RL's samples) from its entry in
  :mod:`alignment.training_kinds`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, make_dataclass
from functools import cache
from typing import Any

import torch

from alignment.machine_defaults import has_gpu, run_sizes
from alignment.training_kinds import KINDS, training_kind

TRAIN_KINDS = tuple(KINDS)


@dataclass
class RunArgs:
    """The assistant's additions to a TRL config."""

    #: Version to continue from (its adapter keeps training; TRL keeps a frozen copy as the
    #: reference). None: the active version. Reward models always start from the base.
    parent: str | None = field(default=None, metadata={"help": "Version to start from."})
    #: rl: the reward model version that judges the samples (None: the newest).
    reward_version: str | None = field(default=None, metadata={"help": "Reward model version."})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA alpha."})
    lora_dropout: float = field(default=0.05, metadata={"help": "LoRA dropout."})
    lora_target_modules: str = field(default="all-linear", metadata={"help": "LoRA targets."})
    #: Training rows used at most (the first N of the export's train split).
    limit: int | None = field(default=None, metadata={"help": "Use at most N training rows."})
    test_fraction: float = field(default=0.1, metadata={"help": "Conversations held out."})
    split_seed: int = field(default=0, metadata={"help": "Seed of the train/test split."})
    #: Fewer training rows than this is refused with a message (None: the kind's default).
    min_rows: int | None = field(default=None, metadata={"help": "Refuse with fewer rows."})
    #: Held-out rows evaluated after training (0: none; None or negative: all).
    #: :func:`make_config` sets the machine's default: 48 on a CPU, 200 with CUDA.
    eval_rows: int | None = field(default=None, metadata={"help": "Held-out rows to evaluate."})
    #: Rows longer than max_length: False shortens their prompt from the left (answers kept
    #: whole), True drops them. Either way the counts are stored with the version.
    drop_long: bool = field(default=False, metadata={"help": "Drop over-long rows instead."})
    #: Train only on grounded rows (SQuAD / synthetic examples, answers shown sources):
    #: ``assistant train grounded``.
    grounded: bool = field(default=False, metadata={"help": "Only grounded rows."})


def config_class(kind: str, algo: str | None = None) -> type[RunArgs]:
    """TRL's config for ``kind`` (and its algorithm) with :class:`RunArgs` added, e.g.
    ``DPORunConfig(RunArgs, trl.DPOConfig)``."""
    return _run_config(training_kind(kind).trl_class("Config", algo))


@cache
def _run_config(trl_config: type) -> type[RunArgs]:
    name = trl_config.__name__.removesuffix("Config") + "RunConfig"
    cls = make_dataclass(name, [], bases=(RunArgs, trl_config))
    # A module attribute, so that pickle finds it: the trainer saves its args with torch.save.
    cls.__module__ = __name__
    globals()[name] = cls
    return cls


RUN_ARG_NAMES = frozenset(f.name for f in fields(RunArgs))


def device_defaults(precision: str = "auto") -> dict[str, Any]:
    """Where and in what precision to train; ``precision`` is ``ASSISTANT_DTYPE``."""
    from assistant.cpu import bf16_fast

    gpu = has_gpu()
    if precision == "auto":
        bf16 = torch.cuda.is_bf16_supported() if gpu else bf16_fast()
    else:
        bf16 = precision == "bfloat16"
    return {"bf16": bf16, "fp16": gpu and precision == "float16", "use_cpu": not gpu}


def precision_reason(config: Any, precision: str = "auto") -> str:
    """What the run computes in, and why, for its log."""
    from assistant.cpu import bf16_reason

    what = "bf16" if config.bf16 else "fp16" if config.fp16 else "fp32"
    if precision != "auto":
        return f"{what} (ASSISTANT_DTYPE={precision})"
    if has_gpu():
        return f"{what} (auto, on the GPU)"
    return f"{what} (auto: bf16 is {bf16_reason()} on this CPU)"


def make_config(kind: str, output_dir: str, algo: str | None = None, precision: str = "auto",
                **overrides: Any) -> RunArgs:
    """The TRL config for ``kind`` with this project's defaults; ``overrides`` win (any
    field of the TRL config or of :class:`RunArgs`). ``precision`` is ``ASSISTANT_DTYPE``."""
    spec = training_kind(kind)
    cls = config_class(kind, algo)
    values: dict[str, Any] = {
        **device_defaults(precision),
        "output_dir": output_dir,
        "report_to": [],
        "save_strategy": "no",
        "logging_steps": 1,
        # The step bar with its estimate; transformers would hide it whenever its own logging
        # is quieter than warnings (the CLI quiets the libraries' noise: assistant.cli_quiet).
        "disable_tqdm": False,
        "activation_checkpointing": False,  # transformers' name; gradient_checkpointing is its alias
        "per_device_eval_batch_size": 4,
        "num_train_epochs": 1.0,
        "seed": 0,
    }
    if spec.grouped:
        values["train_sampling_strategy"] = "group_by_length"
    overrides = dict(overrides)
    asked = overrides.pop("gradient_checkpointing", None)  # --gradient-checkpointing, --set
    if asked is not None and overrides.get("activation_checkpointing") is None:
        overrides["activation_checkpointing"] = asked
    values.update(run_sizes(spec, overrides))
    return cls(**values)


def config_record(config: RunArgs) -> dict[str, Any]:
    """The config as stored with a version: TRL's ``to_dict`` (JSON-safe), no paths of
    this machine's temporary folders."""
    record = config.to_dict()
    record.pop("output_dir", None)
    record.pop("logging_dir", None)
    record["trl_config"] = type(config).__mro__[2].__name__
    return record
