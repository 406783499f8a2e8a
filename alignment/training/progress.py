"""What a run shows while it trains and leaves behind: ``progress.json`` (read by the Models
page while a background run is going), ``log_history.json`` and ``curve.png``."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from alignment.runs import write_json

#: Logged values drawn beside the loss, when the trainer logs them.
SECONDARY = ("rewards/accuracies", "accuracy", "reward", "rewards/margins", "kl")


class ProgressFile(TrainerCallback):
    """Writes step, total steps, epoch, last loss and an ETA to ``path`` as training goes."""

    def __init__(self, path: Path, kind: str) -> None:
        self.path, self.kind = Path(path), kind
        self.started = time.time()
        self.loss: float | None = None

    def _write(self, state, phase: str) -> None:  # noqa: ANN001
        elapsed = time.time() - self.started
        step, total = state.global_step, state.max_steps or 0
        eta = elapsed / step * (total - step) if step and total else None
        write_json(self.path, {
            "kind": self.kind, "phase": phase, "step": step, "max_steps": total,
            "epoch": state.epoch, "loss": self.loss, "elapsed_s": round(elapsed, 1),
            "eta_s": round(eta, 1) if eta is not None else None, "updated": time.time(),
        })

    def on_train_begin(self, args, state, control, **kwargs):  # noqa: ANN001, ANN201
        self._write(state, "training")

    def on_log(self, args, state, control, logs=None, **kwargs):  # noqa: ANN001, ANN201
        if logs and "loss" in logs:
            self.loss = float(logs["loss"])
        self._write(state, "training")

    def on_step_end(self, args, state, control, **kwargs):  # noqa: ANN001, ANN201
        self._write(state, "training")

    def on_train_end(self, args, state, control, **kwargs):  # noqa: ANN001, ANN201
        self._write(state, "saving")


def plot_curve(history: list[dict[str, Any]], path: Path, title: str) -> Path | None:
    """Loss per step, and the trainer's reward/accuracy values on a second axis."""
    steps = [(h["step"], h["loss"]) for h in history if "loss" in h and "step" in h]
    if not steps:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 3.6), dpi=100)
    ax.plot(*zip(*steps), color="tab:blue", label="loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss", color="tab:blue")
    ax.set_title(title)
    key = next((k for k in SECONDARY if any(k in h for h in history)), None)
    if key:
        points = [(h["step"], h[key]) for h in history if key in h and "step" in h and "loss" in h]
        if points:
            right = ax.twinx()
            right.plot(*zip(*points), color="tab:orange", label=key)
            right.set_ylabel(key, color="tab:orange")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
