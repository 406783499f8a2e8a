"""The held-out reward margin with its interval (DPO): TRL averages its held-out metrics over
the evaluation's batches and logs only the mean; the per-batch values are kept here just
before TRL clears them, so that the margin comes with a 95% interval (a bootstrap over the
batches, weighted by their rows) and "the margin moved" can be checked, not assumed.

TRL keeps those values in a private dict (``trainer._metrics["eval"]``). Where it does not
(another trainer, another TRL), nothing is kept and the run reports the mean alone.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from assistant.significance import mean_interval

if TYPE_CHECKING:
    from transformers import Trainer

MARGIN = "rewards/margins"


@contextmanager
def batch_values(trainer: Trainer, keys: tuple[str, ...] = (MARGIN,)) -> Iterator[dict[str, list[float]]]:
    """Around ``trainer.evaluate()``: yields a dict that then holds each key's per-batch
    values (absent when the trainer keeps none)."""
    kept: dict[str, list[float]] = {}
    store = getattr(trainer, "_metrics", None)
    if not isinstance(store, dict) or not isinstance(store.get("eval"), dict):
        yield kept
        return
    original = trainer.log

    def log_keeping(logs: dict[str, float], *args: Any, **kwargs: Any) -> None:
        if any(str(k).startswith("eval_") for k in logs):
            for key in keys:
                values = store["eval"].get(key)
                if values:
                    kept[key] = [float(v) for v in values]
        original(logs, *args, **kwargs)

    trainer.log = log_keeping
    try:
        yield kept
    finally:
        del trainer.log  # the instance attribute: the class's method again


def batch_rows(rows: int, batch_size: int, batches: int) -> list[int] | None:
    """Rows in each of ``batches`` batches of ``rows`` (the last one short), or None when the
    numbers do not fit together (then the batches weigh the same)."""
    if batch_size <= 0 or batches != math.ceil(rows / batch_size):
        return None
    sizes = [batch_size] * batches
    sizes[-1] = rows - batch_size * (batches - 1)
    return sizes


def margin_interval(kept: dict[str, list[float]], rows: int, batch_size: int) -> dict[str, Any]:
    """``heldout_margin`` with its 95% interval, from the kept per-batch margins."""
    values = kept.get(MARGIN)
    if not values or len(values) < 2 or any(not math.isfinite(v) for v in values):
        return {}
    weights = batch_rows(rows, batch_size, len(values))
    mean, low, high = mean_interval(values, weights)
    return {"heldout_margin": mean, "heldout_margin_low": low, "heldout_margin_high": high,
            "heldout_margin_batches": len(values)}
