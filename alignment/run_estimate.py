"""How long a run will take, and the smaller setting to offer when that is long.

A run estimates from its first optimizer step, measured on a batch of its own data: the
rest of the steps take that step's time, scaled by how wide (in padded tokens) the batches
still to come are against the first one (length grouping puts the longest rows first, so
an unscaled first step would overestimate). The held-out evaluation is a forward pass per
row: :data:`EVAL_SHARE` of a training row's time. The Models page, before a run starts,
estimates from the seconds per row the last run of the same kind measured.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass
from typing import Any

#: Past this, a run is "long" on this machine and the smaller setting is offered.
LONG_S = 30 * 60
#: Time of a held-out row against a training row. A forward pass without the backward
#: (TRL's evaluation also computes the reference pass for DPO); measured on the CPU:
#: docs/training.md.
EVAL_SHARE = 0.4
#: The max length offered when a run is long and uses more.
SHORT_MAX_LENGTH = 256


@dataclass
class Estimate:
    first_step_s: float
    steps: int
    rows_per_step: int
    train_s: float
    eval_rows: int
    eval_s: float

    @property
    def total_s(self) -> float:
        return self.train_s + self.eval_s

    def as_dict(self) -> dict[str, Any]:
        return {**{k: round(v, 1) if isinstance(v, float) else v for k, v in asdict(self).items()},
                "total_s": round(self.total_s, 1)}


def mean_batch_width(lengths: list[int], batch: int, grouped: bool, seed: int = 0) -> float:
    """Mean padded width of batches of ``batch`` rows: rows of similar length together when
    ``grouped`` (the sampler sorts within large groups: nearly a global sort), else in a
    random order."""
    if not lengths:
        return 0.0
    order = sorted(lengths) if grouped else random.Random(seed).sample(lengths, len(lengths))
    widths = [max(order[i:i + batch]) for i in range(0, len(order), max(1, batch))]
    return sum(widths) / len(widths)


def from_first_step(*, first_step_s: float, first_width: float, steps: int, rows_per_step: int,
                    lengths: list[int] | None, batch: int, grouped: bool, eval_rows: int) -> Estimate:
    """The run's estimate once its first step (``first_step_s``, batches ``first_width``
    tokens wide on average) has run."""
    per_step = first_step_s
    if lengths and first_width:
        per_step = first_step_s * mean_batch_width(lengths, batch, grouped) / first_width
    rest = max(0, steps - 1)
    per_row = per_step / max(1, rows_per_step)
    return Estimate(first_step_s, steps, rows_per_step, first_step_s + rest * per_step,
                    eval_rows, eval_rows * per_row * EVAL_SHARE)


def smaller_setting(estimate: Estimate, *, max_length: int | None, rows: int | None = None,
                    long_s: float = LONG_S) -> dict[str, int]:
    """Settings that bring a long training back to about ``long_s`` (empty: not long):
    ``steps`` (the same rows, fewer of them seen), and ``max_length`` when it is over
    :data:`SHORT_MAX_LENGTH`. ``limit`` (one pass over fewer rows) when ``rows`` is known."""
    if estimate.train_s <= long_s or estimate.steps <= 0:
        return {}
    per_step = estimate.train_s / estimate.steps
    steps = max(1, int(long_s // per_step))
    out = {"steps": steps}
    if rows:
        out["limit"] = min(rows, steps * estimate.rows_per_step)
    if max_length and max_length > SHORT_MAX_LENGTH:
        out["max_length"] = SHORT_MAX_LENGTH
    return out


def flags(setting: dict[str, int]) -> list[str]:
    """``{"steps": 30}`` as ``["--steps 30"]``."""
    return [f"--{k.replace('_', '-')} {v}" for k, v in setting.items()]


def from_history(metrics: dict[str, Any] | None, rows: int, eval_rows: int) -> Estimate | None:
    """Before a run starts (the Models page): ``rows`` training rows and ``eval_rows``
    held-out rows at the pace the last run of the same kind measured (its ``metrics``);
    None when there is no such run."""
    if not metrics or not metrics.get("train_seconds_per_row"):
        return None
    per_row = float(metrics["train_seconds_per_row"])
    eval_per_row = float(metrics.get("eval_seconds_per_row") or per_row * EVAL_SHARE)
    return Estimate(0.0, 0, 0, rows * per_row, eval_rows, eval_rows * eval_per_row)


def duration(seconds: float) -> str:
    """``95`` as ``1 min 35 s``."""
    s = int(round(max(0.0, seconds)))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"
