"""Tokens a run trains on, counted as the model sees them: per optimizer step, the non-pad
tokens of the forwards that train (autograd on: not DPO's reference pass, not online RL's
sampling) and the padded size of their batches. From these a run reports its trained
tokens/s and the share of padding, and its estimate (:mod:`.estimate`) scales the first
step's time by the width of the batches still to come.

:func:`plain_step_tokens_per_s` is the reference for "% of peak" (``bench/training.py``):
one plain forward/backward of the same model on a full batch without any padding.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch


def transformer_body(model: torch.nn.Module) -> torch.nn.Module:
    """The decoder stack under PEFT's and the task head's wrappers (every trainer's forwards
    go through it with ``input_ids`` and ``attention_mask``)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return getattr(base, getattr(base, "base_model_prefix", ""), base)


@dataclass
class StepTokens:
    seconds: float
    trained: int  # non-pad tokens of the training forwards
    padded: int  # their padded size (rows x width)
    width: float  # mean padded width of those forwards (0: none seen)


class TokenMeter:
    """Counts the training forwards' tokens between :meth:`step` calls."""

    def __init__(self) -> None:
        self.steps: list[StepTokens] = []
        self._handle = None
        self._trained = self._padded = 0
        self._widths: list[int] = []
        self._since = time.perf_counter()

    def attach(self, model: torch.nn.Module) -> None:
        self.detach()
        self._handle = transformer_body(model).register_forward_pre_hook(self._hook, with_kwargs=True)
        self._since = time.perf_counter()

    def detach(self) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None

    def _hook(self, module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        if not torch.is_grad_enabled():
            return
        ids = kwargs.get("input_ids", args[0] if args else None)
        if not isinstance(ids, torch.Tensor) or ids.dim() != 2:
            return
        mask = kwargs.get("attention_mask")
        self._padded += ids.numel()
        self._trained += int(mask.sum()) if isinstance(mask, torch.Tensor) and mask.dim() == 2 else ids.numel()
        self._widths.append(ids.shape[1])

    def step(self) -> StepTokens:
        """Close the current optimizer step."""
        now = time.perf_counter()
        width = sum(self._widths) / len(self._widths) if self._widths else 0.0
        done = StepTokens(now - self._since, self._trained, self._padded, width)
        self.steps.append(done)
        self._trained = self._padded = 0
        self._widths = []
        self._since = now
        return done

    def summary(self) -> dict[str, float | int]:
        """Trained tokens, tokens/s and the padding share over the steps so far."""
        seconds = sum(s.seconds for s in self.steps)
        trained = sum(s.trained for s in self.steps)
        padded = sum(s.padded for s in self.steps)
        if not padded or not seconds:
            return {}
        return {"trained_tokens": trained, "trained_tokens_per_s": round(trained / seconds, 2),
                "padding_share": round(1 - trained / padded, 4)}


def plain_step_tokens_per_s(model: torch.nn.Module, rows: int, length: int, repeats: int = 2) -> float:
    """Tokens/s of a plain forward/backward of ``model`` on ``rows`` x ``length`` random
    tokens, no padding (best of ``repeats`` after one warm-up): the most this model can
    train at on this machine, in this dtype."""
    device = next(model.parameters()).device
    vocab = model.config.vocab_size
    ids = torch.randint(0, vocab, (rows, length), device=device)
    best = float("inf")
    was_training = model.training
    model.train()
    try:
        for i in range(repeats + 1):
            start = time.perf_counter()
            out = model(input_ids=ids, attention_mask=torch.ones_like(ids))
            logits = out.logits if hasattr(out, "logits") else out[0]
            logits.float().mean().backward()
            if device.type == "cuda":
                torch.cuda.synchronize()
            if i:
                best = min(best, time.perf_counter() - start)
            model.zero_grad(set_to_none=True)
    finally:
        model.train(was_training)
    return rows * length / best
