"""How much memory a training or evaluation run needs, and whether the machine has it.

The rule: a run needs 1.5 GiB (Python, torch, the tokenizer, the data) plus ten times the
model's weights in float32 (the weights, the frozen reference, LoRA's gradients and
optimizer state, and the activations of a batch of a few hundred tokens). With the
embedded 135M model (538 MB in fp32) that is ~6.9 GB; a DPO or reward run measured ~7 GB.
The size comes from the checkpoint's safetensors headers (parameter counts, not file
sizes, so a bf16 checkpoint is counted as it will be trained on a CPU: fp32). A model
that is only a hub id has no local checkpoint to read: no estimate, no check.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from assistant.config import EMBEDDED_MODEL, Settings

BASE_BYTES = int(1.5 * 2**30)
WEIGHT_FACTOR = 10


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


def model_parameters(settings: Settings) -> int | None:
    """The base model's parameter count, read from its local checkpoint (None: none found)."""
    counts = []
    for folder in _checkpoint_dirs(settings):
        try:
            counts.append(sum(_parameters(f) for f in folder.glob("*.safetensors")))
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return max(counts) if counts else None


def run_estimate(settings: Settings) -> int | None:
    """Bytes of memory one run needs, by the rule above (None: the model is not local)."""
    params = model_parameters(settings)
    return None if not params else BASE_BYTES + WEIGHT_FACTOR * 4 * params


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
