"""Training sizes for the machine a run starts on (torch only: the Models page reads them
without importing TRL)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from alignment.training_kinds import TrainingKind

#: Sizes on a GPU (as before the CPU got its own) and on a CPU, where one pass over ~1,000
#: rows should end in about 30 minutes on 2 cores. ``max_length`` concerns the reward, SFT,
#: DPO and KTO trainers; online RL's cost is its samples: ``max_completion_length``.
GPU_DEFAULTS: dict[str, Any] = {"max_length": 512, "per_device_train_batch_size": 4,
                                "gradient_accumulation_steps": 1, "eval_rows": 200,
                                "max_completion_length": 64}
CPU_DEFAULTS: dict[str, Any] = {"max_length": 256, "per_device_train_batch_size": 4,
                                "gradient_accumulation_steps": 2, "eval_rows": 48,
                                "max_completion_length": 32}


def has_gpu() -> bool:
    return torch.cuda.is_available()


def size_defaults() -> dict[str, Any]:
    """:data:`GPU_DEFAULTS` with CUDA, else :data:`CPU_DEFAULTS`."""
    return dict(GPU_DEFAULTS if has_gpu() else CPU_DEFAULTS)


def run_sizes(spec: TrainingKind, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The TRL fields a ``spec`` run is sized by (batch, accumulation, lengths, held-out rows)
    and its other defaults: this machine's sizes, the kind's defaults, then ``overrides``
    (TRL field -> value; None: not given)."""
    sizes = size_defaults()
    values = {key: sizes[key] for key in ("per_device_train_batch_size", "gradient_accumulation_steps",
                                          "eval_rows", *spec.sized)}
    values.update(spec.defaults)
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return values
