"""How much memory a training or evaluation run needs, and whether the machine has it.

The rule: a run needs a fixed part, 1 GiB (Python, torch, TRL, the tokenizer, the data)
plus the model's weights in float32 (LoRA: the base is frozen, and DPO's reference is the
same weights with the adapter off), and a part that grows with the tokens of one training
batch (rows x the longest row, two sequences per row for pairs): per token, the activations
the backward pass keeps, :data:`ACTIVATION_COPIES` floats per layer and hidden unit (the
blocks' inputs, LoRA's dropout copies, bf16 casts). TRL's trainers score only the answer's
positions, in tiles, without the whole logits (its fused LM head); a kind whose trainer
builds them (ORPO) counts them too, :data:`LOGIT_COPIES` float32 copies per token.

Fitted on the embedded 135M model (30 layers of 576), peak RSS of SFT runs with bf16
compute on a CPU at batch 4: 3.4 GiB at ~1,024 tokens per batch, 5.8 GiB at ~2,048, 9.9 GiB
at ~4,096 (``train grounded``'s batch 4 x 1,024: the first batch is the longest). A long run
whose batches vary in length grows past its first step's peak (:data:`VARIED_GROWTH`):
``train grounded``'s estimate counts that growth. The old
rule, one size for any run (1.5 GiB + 10 x fp32 weights, 6.9 GB), was right at ~2,000
tokens and let a grounded run start on a machine it could not finish on.

The shape comes from the checkpoint: parameter counts from its safetensors headers (not
file sizes, so a bf16 checkpoint is counted as it is trained on a CPU: fp32), vocabulary
and layers from its config.json. A model that is only a hub id has no local checkpoint to
read: no estimate, no check.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from assistant.config import EMBEDDED_MODEL, Settings

BASE_BYTES = 2**30
#: Floats per layer and hidden unit a token keeps for the backward pass (fitted: see above).
ACTIVATION_COPIES = 34
#: Float32 copies of a token's logits where a trainer builds them whole (not measured: the
#: logits, their log-softmax and its gradient, and a bf16 cast).
LOGIT_COPIES = 4
#: Growth of the batch's part over a long run whose batches vary in length (measured: a
#: grounded SFT run, 40 steps of rows of 600-1,024 tokens, grew from 9.9 GiB at its first
#: step to 15.7 GiB: glibc's allocator keeps the freed blocks of each batch's shapes).
VARIED_GROWTH = 1.7
#: Online RL has no ``max_length``: its rows are a prompt and a sampled answer.
PROMPT_TOKENS = 256


@dataclass(frozen=True)
class ModelShape:
    parameters: int
    vocabulary: int
    layers: int
    hidden: int


@dataclass(frozen=True)
class Estimate:
    """Bytes a run needs: ``fixed`` plus ``per_token`` for each of the ``tokens`` of a batch
    of ``batch`` rows."""

    fixed: int
    per_token: int
    tokens: int
    batch: int
    accumulation: int = 1
    #: How much the batch's part grows over the run (1: as at the first step).
    growth: float = 1.0

    @property
    def need(self) -> int:
        return self.fixed + int(self.per_token * self.tokens * self.growth)

    def against(self, free: int) -> str:
        """``Memory: about 10.5 GB (...); 21.9 GB free``: the estimate against ``free`` bytes."""
        return f"Memory: about {self.need / 2**30:.1f} GB ({self.parts()}); {free / 2**30:.1f} GB free"

    def parts(self) -> str:
        """``1.5 GB for the model, 9.0 GB for a batch of 4,096 tokens``."""
        text = f"{self.fixed / 2**30:.1f} GB for the model"
        if self.tokens:
            text += (f", {self.per_token * self.tokens * self.growth / 2**30:.1f} GB for a batch of "
                     f"{self.tokens:,} tokens")
            if self.growth > 1:
                text += f" x{self.growth:g}, the growth of a long run of rows of varied lengths"
        return text

    def advice(self, free: int) -> str:
        """The sentence offering the batch size that fits in ``free`` bytes ("": none smaller
        does)."""
        fits = self.batch_that_fits(free)
        if not 0 < fits < self.batch:
            return ""
        steps = -(-self.batch * self.accumulation // fits)
        return (f"A batch size of {fits} fits (`--batch-size {fits} --grad-accum {steps}`: about "
                "the same rows per optimizer step). ")

    def batch_that_fits(self, free: int) -> int:
        """The largest batch size (rows) whose run fits in ``free`` bytes (0: none does)."""
        if not self.tokens or not self.batch:
            return self.batch if self.need <= free else 0
        per_row = self.per_token * self.tokens * self.growth / self.batch
        return max(0, min(self.batch, int((free - self.fixed) // per_row)))


def _parameters(file: Path) -> int:
    with open(file, "rb") as fh:
        size = int.from_bytes(fh.read(8), "little")
        header = json.loads(fh.read(size))
    return sum(math.prod(t["shape"]) for k, t in header.items() if k != "__metadata__")


def _checkpoint_dirs(settings: Settings) -> list[Path]:
    if settings.model == EMBEDDED_MODEL:  # converted once into folders under the cache
        root = settings.resolved_model_cache_dir
        return sorted({f.parent for f in root.glob("*/*.safetensors")}) if root.is_dir() else []
    path = Path(settings.model).expanduser()
    return [path] if path.is_dir() else []


def _shape(folder: Path) -> ModelShape:
    config = json.loads((folder / "config.json").read_text())
    config = config.get("text_config", config)  # a multimodal checkpoint's language model
    return ModelShape(parameters=sum(_parameters(f) for f in folder.glob("*.safetensors")),
                      vocabulary=int(config["vocab_size"]), layers=int(config["num_hidden_layers"]),
                      hidden=int(config["hidden_size"]))


def model_shape(settings: Settings) -> ModelShape | None:
    """The base model's size, read from its local checkpoint (None: none found)."""
    shapes = []
    for folder in _checkpoint_dirs(settings):
        try:
            shapes.append(_shape(folder))
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return max(shapes, key=lambda s: s.parameters) if shapes else None


def run_estimate(settings: Settings, kind: str | None = None, sizes: Mapping[str, Any] | None = None,
                 varied: bool = False) -> Estimate | None:
    """What a ``kind`` training run with these TRL ``sizes`` (batch, max length; missing ones
    are the machine's and the kind's defaults) needs, by the rule above; ``varied``: its rows'
    lengths vary widely (grounded rows), and its batch part grows by :data:`VARIED_GROWTH`
    over a long run. ``kind`` None or not a training kind (an evaluation): the fixed part
    with a judge's weights too, no training batch; with a GPU the batch is in its memory and
    not counted. None: the model is not local."""
    from alignment.training_kinds import KINDS

    shape = model_shape(settings)
    if shape is None:
        return None
    weights = 4 * shape.parameters
    spec = KINDS.get(kind or "")
    if spec is None:
        return Estimate(fixed=BASE_BYTES + 2 * weights, per_token=0, tokens=0, batch=0)
    from alignment.machine_defaults import has_gpu, run_sizes

    values = run_sizes(spec, sizes)
    batch = int(values["per_device_train_batch_size"])
    length = (int(values["max_completion_length"]) + PROMPT_TOKENS if spec.online
              else int(values["max_length"]))
    per_token = 4 * ACTIVATION_COPIES * shape.layers * shape.hidden
    if spec.full_logits:
        per_token += 4 * LOGIT_COPIES * shape.vocabulary
    if has_gpu():  # the batch lives in the GPU's memory, not in the machine's
        per_token = 0
    fixed = BASE_BYTES + weights * (2 if spec.online else 1)  # online RL: the judge's weights too
    return Estimate(fixed=fixed, per_token=per_token, tokens=batch * spec.sequences * length, batch=batch,
                    accumulation=int(values["gradient_accumulation_steps"]),
                    growth=VARIED_GROWTH if varied and per_token else 1.0)


def _meminfo(field: str) -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def available() -> int | None:
    """Memory the kernel can hand out now without swapping (Linux: MemAvailable)."""
    return _meminfo("MemAvailable")


def total() -> int | None:
    """The machine's memory (Linux: MemTotal)."""
    return _meminfo("MemTotal")
