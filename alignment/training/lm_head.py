"""TRL's fused LM head on a CPU: score only the positions that have a label.

TRL 1.16 gives every trainer it builds (SFT, DPO, KTO, GRPO, RLOO) a fused LM head
(``trl.trainer.utils.add_fused_lm_head``): a chunked log-probability kernel that never builds
the ``(batch, length, vocabulary)`` logits. With Triton on CUDA/XPU it projects only the
positions whose label is not -100. Everywhere else it projects **every** position and zeroes
the masked ones afterwards, so that tile shapes stay fixed for graph compilers (TRL names
Neuron). Eager PyTorch on a CPU has nothing to recompile, and there the masked positions are
most of the head's work: a grounded SFT row is ~800 tokens of system prompt, sources and
question for a ~10-token answer, and a DPO row's prompt is scored twice (policy and
reference) for each answer. The head over SmolLM2's 49,152-token vocabulary costs about a
quarter of the model's multiply-adds at each position, plus its softmax and backward.

:func:`labelled_positions_only` makes the head compact on the CPU for the duration of a run:
the same log-probabilities, loss and gradients (``tests/test_training.py`` checks them against
TRL's own path), computed on the labelled positions only. ``bench/lm_head.py`` measures the
step time it saves. It is a no-op where TRL has no such switch (another TRL version).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

import torch

log = logging.getLogger(__name__)


@contextmanager
def labelled_positions_only() -> Iterator[bool]:
    """While inside, TRL's fused LM head projects only labelled positions on the CPU too.
    Yields whether it could (False: this TRL has no ``trl.trainer.utils._use_triton``)."""
    try:
        from trl.trainer import utils
    except ImportError:  # pragma: no cover - TRL is a dependency
        yield False
        return
    original = getattr(utils, "_use_triton", None)
    if original is None:
        log.info("TRL has no fused-head switch here: every position is scored")
        yield False
        return

    def compact(device: torch.device) -> bool:
        # In trl.trainer.utils this only decides whether the masked positions are dropped
        # before the head; the kernel module reads its own copy to pick Triton or torch tiles.
        return device.type == "cpu" or original(device)

    utils._use_triton = compact
    try:
        yield True
    finally:
        utils._use_triton = original
