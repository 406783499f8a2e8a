"""What a run shows while it goes and leaves behind.

A run goes through phases, each with its own progress and estimate: ``loading`` (the
export, the model, fitting the rows, TRL's tokenizing), ``training`` (steps; after the
first one, the estimate of the whole run), ``evaluating`` (batches of held-out rows) and
``saving`` (the adapter, the curve, registering). :class:`RunProgress` writes them to
``progress.json`` (the Models page reads it while a background run goes) and tells them to
the terminal; :class:`TrainingProgress` is the trainer callback that feeds it. What is left
behind: ``log_history.json`` and ``curve.png``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from transformers import TrainerCallback

from alignment.runs import write_json
from alignment.run_estimate import Estimate, duration, flags, from_first_step, smaller_setting
from alignment.training.meter import TokenMeter

if TYPE_CHECKING:
    import torch
    from transformers import TrainerControl, TrainerState, TrainingArguments

#: Logged values drawn beside the loss, when the trainer logs them.
SECONDARY = ("rewards/accuracies", "accuracy", "reward", "rewards/margins", "kl")

PHASES = ("loading", "training", "evaluating", "saving")
LABELS = {"loading": "Loading the data and the model", "training": "Training",
          "evaluating": "Evaluating on the held-out rows", "saving": "Saving and registering the version"}


class RunProgress:
    """The phases of one run as they go: in ``path`` (progress.json) when given, and told to
    ``echo`` (a terminal) when given."""

    def __init__(self, path: Path | None, kind: str, echo: Callable[[str], None] | None = None,
                 phases: tuple[str, ...] = PHASES) -> None:
        self.path, self.echo, self.phases = (Path(path) if path else None), echo, phases
        self.started = time.time()
        self.state: dict[str, Any] = {"kind": kind, "phase": None, "phases": {}, "estimate": None,
                                      "started": self.started}

    # -- phases --------------------------------------------------------------------------------
    def phase(self, name: str, detail: str = "", total: int | None = None, unit: str = "",
              eta_s: float | None = None) -> None:
        """Start phase ``name`` (ending the one before); ``total`` units of work, if known,
        and how long it should take, if anyone can tell."""
        now = time.time()
        self._close(now)
        self.state["phases"][name] = {"started": now, "seconds": None, "eta_s": _round(eta_s)}
        self.state.update(phase=name, label=LABELS[name], detail=detail, done=0, total=total,
                          unit=unit, phase_eta_s=_round(eta_s))
        if self.echo:
            number = f"[{self.phases.index(name) + 1}/{len(self.phases)}] " if name in self.phases else ""
            about = f" (about {duration(eta_s)})" if eta_s is not None else ""
            self.echo(f"{number}{LABELS[name]}{': ' + detail if detail else ''}{about}")
        self._write()

    def update(self, detail: str | None = None, done: int | None = None, total: int | None = None,
               eta_s: float | None = None, **fields: Any) -> None:
        """Progress within the current phase (``eta_s``: of the phase)."""
        if detail is not None:
            self.state["detail"] = detail
        if done is not None:
            self.state["done"] = done
        if total is not None:
            self.state["total"] = total
        if eta_s is not None:
            self.state["phase_eta_s"] = _round(eta_s)
        self.state.update(fields)
        self._write()

    def step(self, detail: str) -> None:
        """One more of the phase's ``total`` sub-steps (loading, saving), told to the terminal."""
        self.update(detail=detail, done=(self.state.get("done") or 0) + 1)
        if self.echo:
            self.echo(f"  {detail}")

    def estimate(self, estimate: Estimate, smaller: dict[str, int]) -> None:
        self.state["estimate"] = {**estimate.as_dict(), "smaller": smaller}
        self._write()
        if self.echo:
            for line in estimate_lines(estimate, smaller):
                self.echo(line)

    def end(self) -> None:
        self._close(time.time())
        self.state.update(phase="done", label="Done", detail="", phase_eta_s=None)
        self._write()

    def seconds(self) -> dict[str, float]:
        """Seconds of each phase so far (the current one: until now)."""
        now = time.time()
        return {name: round(p["seconds"] if p["seconds"] is not None else now - p["started"], 1)
                for name, p in self.state["phases"].items()}

    def _close(self, now: float) -> None:
        current = self.state.get("phase")
        if current in self.state["phases"] and self.state["phases"][current]["seconds"] is None:
            record = self.state["phases"][current]
            record["seconds"] = round(now - record["started"], 1)

    def _write(self) -> None:
        if self.path is not None:
            now = time.time()
            write_json(self.path, {**self.state, "elapsed_s": round(now - self.started, 1), "updated": now})


def estimate_lines(estimate: Estimate, smaller: dict[str, int]) -> list[str]:
    """The estimate as a terminal shows it, with the smaller setting when the run is long."""
    bits = [f"training about {duration(estimate.train_s)} ({estimate.steps} steps)"]
    if estimate.eval_rows:
        bits.append(f"held-out evaluation about {duration(estimate.eval_s)} ({estimate.eval_rows} "
                    f"row{'' if estimate.eval_rows == 1 else 's'})")
    lines = [f"Estimate from the first step ({estimate.first_step_s:.1f} s on {estimate.rows_per_step} "
             f"rows): {', '.join(bits)}; about {duration(estimate.total_s)} in all."]
    if smaller:
        options = flags({"steps": smaller["steps"]})
        if "limit" in smaller:
            options.append(f"or {flags({'limit': smaller['limit']})[0]} (one pass over fewer rows)")
        if "max_length" in smaller:
            options.append(f"and/or {flags({'max_length': smaller['max_length']})[0]}")
        lines.append("That is long for this machine. For about 30 min, stop it (Ctrl-C: nothing is "
                     "registered) and run again with " + " ".join(options) + ".")
    return lines


def _round(x: float | None) -> float | None:
    return round(x, 1) if x is not None else None


class TrainingProgress(TrainerCallback):
    """Feeds :class:`RunProgress` from the trainer: steps, loss, the estimate after the first
    step (and the smaller setting when it is long), the held-out evaluation's batches; and
    counts the trained tokens (:class:`.meter.TokenMeter`)."""

    def __init__(self, progress: RunProgress, *, rows_per_step: int, lengths: list[int] | None,
                 grouped: bool, eval_rows: int, max_length: int | None, rows: int | None) -> None:
        self.progress, self.meter = progress, TokenMeter()
        self.rows_per_step, self.lengths, self.grouped = rows_per_step, lengths, grouped
        self.eval_rows, self.max_length, self.rows = eval_rows, max_length, rows
        self.loss: float | None = None
        self.estimate: Estimate | None = None
        self.started = time.time()
        self.evaluated = 0

    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                       model: torch.nn.Module | None = None, **kwargs) -> None:
        if model is not None:
            self.meter.attach(model)
        self.started = time.time()
        self.progress.phase("training", f"{state.max_steps} steps of {self.rows_per_step} rows",
                            total=state.max_steps, unit="steps")
        self.progress.update(step=0, max_steps=state.max_steps)

    def on_log(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
               logs: dict[str, float] | None = None, **kwargs) -> None:
        if logs and "loss" in logs:
            self.loss = float(logs["loss"])
            self.progress.update(loss=self.loss)

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs) -> None:
        measured = self.meter.step()
        step, total = state.global_step, state.max_steps or 0
        if step == 1:
            self.estimate = from_first_step(
                first_step_s=measured.seconds, first_width=measured.width, steps=total,
                rows_per_step=self.rows_per_step, lengths=self.lengths,
                batch=args.per_device_train_batch_size, grouped=self.grouped, eval_rows=self.eval_rows)
            self.progress.estimate(self.estimate, smaller_setting(
                self.estimate, max_length=self.max_length, rows=self.rows))
        elapsed = time.time() - self.started
        eta = None
        if step and total:
            if step >= 3 or self.estimate is None or total <= 1:
                first = self.meter.steps[0].seconds if self.meter.steps else 0.0
                per_step = (elapsed - first) / (step - 1) if step > 1 else elapsed
            else:
                per_step = (self.estimate.train_s - self.estimate.first_step_s) / (total - 1)
            eta = max(0.0, per_step * (total - step))
        self.progress.update(done=step, step=step, max_steps=total, epoch=state.epoch, eta_s=eta)

    def on_train_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs) -> None:
        self.meter.detach()

    def on_prediction_step(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                           **kwargs) -> None:
        if self.progress.state.get("phase") != "evaluating":
            return
        self.evaluated += 1
        total = self.progress.state.get("total") or 0
        spent = time.time() - self.progress.state["phases"]["evaluating"]["started"]
        eta = spent / self.evaluated * max(0, total - self.evaluated) if total else None
        self.progress.update(done=self.evaluated, eta_s=eta)


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
