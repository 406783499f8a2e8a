"""The path every training run takes: export -> base model (+ parent adapter) -> TRL trainer
-> adapter in a staging folder -> registered version.

Nothing is registered unless the whole run succeeds; the staging folder is removed on any
failure (out of memory, Ctrl-C, a bad row), and activation is a separate step with its own
gate, so a run never changes what the chat is answering with.

Under ``accelerate launch`` (DDP, DeepSpeed, FSDP: see ``alignment/accelerate/``) every
process runs this; only the main process writes files and registers the version.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from peft import LoraConfig, PeftModel

from alignment.errors import IncompatibleVersion, RewardModelMissing, TrainingOutOfMemory
from alignment.training.config import config_record
from alignment.training.data import defuse, describe_counts, fit, prepare, row_counts
from alignment.training.heldout import batch_values, margin_interval
from alignment.training.lm_head import labelled_positions_only
from alignment.training.progress import PHASES, RunProgress, TrainingProgress, plot_curve, write_json
from alignment.training.trainers import build_trainer, row_lengths
from alignment.training_kinds import TrainingKind, training_kind
from assistant.bootstrap import open_database, open_registry
from assistant.engines.registry import spec as engine_spec
from assistant.config import Settings
from assistant.engines.models import LoadedModel, load_model
from assistant.registry import Registry, Version
from assistant.versions import BASE_VERSION, REWARD_KIND, called, chats
from assistant.storage import Database

if TYPE_CHECKING:
    from transformers import Trainer

    from alignment.training.config import RunArgs
    from alignment.training.data import TrainingData

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    version: Version | None  # None on a non-main process of a distributed run
    metrics: dict[str, Any]
    log_history: list[dict[str, Any]]
    seconds: float
    #: The trainer (its model holds the trained adapter): for tests and benchmarks.
    trainer: Any = None
    #: Seconds of each phase (loading, training, evaluating, saving).
    phase_seconds: dict[str, float] = field(default_factory=dict)


def train(
    settings: Settings,
    kind: str,
    config: RunArgs,  # from alignment.training.config.make_config
    *,
    algo: str | None = None,
    db: Database | None = None,
    progress: Path | None = None,
    callbacks: Sequence[Any] = (),
    loaded: LoadedModel | None = None,
    echo: Callable[[str], None] | None = None,
) -> TrainResult:
    """Train ``kind`` (reward, sft, dpo, kto, rl) and register the result as a version.

    Each phase (:data:`.progress.PHASES`) reports its progress and estimate to ``progress``
    (a progress.json, for the Models page) and to ``echo`` (a terminal)."""
    started = time.perf_counter()
    spec = training_kind(kind)
    phases = tuple(p for p in PHASES if not (spec.online and p == "evaluating"))
    tracker = RunProgress(progress, kind, echo, phases)
    db = db or open_database(settings)
    registry = open_registry(settings, db)
    parent = _parent(registry, kind, config)
    reward_version = _reward_version(registry, config) if spec.online else None
    # The staging folder once the run can start: a refusal above leaves nothing behind.
    run = _Run(settings, spec, algo, config, tracker, registry, registry.staging_dir(), started,
               parent, reward_version)
    tracker.phase("loading", total=4, unit="parts", eta_s=_last_phase(registry.newest(kind), "loading"))
    try:
        data, loaded = run.load_data(db, loaded)
        trainer, watcher, evaluated = run.build(data, loaded, callbacks)
        with _out_of_memory_is_a_message(loaded, config), labelled_positions_only():
            output = trainer.train()
            eval_metrics, margin = run.evaluate(trainer, watcher, evaluated)
        prepares = not spec.reward and engine_spec(settings.engine).prepare is not None
        tracker.phase("saving", total=4 if prepares else 3, unit="parts")
        metrics = _metrics(output.metrics, eval_metrics, trainer.state.log_history) | margin
        rows = _rows(data, trainer, metrics, kind, config)
        metrics["rows"] = data.record["rows"] = rows
        metrics.update(_pace(tracker, watcher, metrics, watcher.rows_per_step, rows))
        for line in describe_counts(rows):
            log.info("%s", line)
        version = run.save(trainer, data, loaded, metrics)
    except BaseException:
        shutil.rmtree(run.staging, ignore_errors=True)
        raise
    history = trainer.state.log_history
    if version is None:  # a non-main process of a distributed run
        return TrainResult(None, metrics, history, time.perf_counter() - started, trainer)
    if prepares:
        tracker.step(f"preparing the adapter for the {settings.engine} engine")
        prepare_for_engine(settings, version, loaded)
    tracker.end()
    seconds = time.perf_counter() - started
    log.info("Registered %s (%s from %s) in %.0f s", version.name, kind, run.parent.name, seconds)
    return TrainResult(version, metrics, history, seconds, trainer, tracker.seconds())


@dataclass
class _Run:
    """One run's state, through its phases: the data and the model (loading), the trainer,
    the held-out evaluation, the files and the registration (saving)."""

    settings: Settings
    spec: TrainingKind
    algo: str | None
    config: RunArgs
    tracker: RunProgress
    registry: Registry
    staging: Path
    started: float
    parent: Version
    reward_version: Version | None

    def load_data(self, db: Database, loaded: LoadedModel | None) -> tuple[TrainingData, LoadedModel]:
        """The rows (exported, defused, fitted) and the base model, checked against the
        parent's and the reward model's base."""
        tracker, config, folder = self.tracker, self.config, self.staging / "data"
        tracker.step("exporting the feedback")
        data = prepare(db, self.spec.name, config, folder)
        if not data.test:  # nothing held out (or --eval-rows 0): no evaluation phase
            tracker.phases = tuple(p for p in tracker.phases if p != "evaluating")
        tracker.step(f"loading the model ({len(data.train)} training, {len(data.test)} held-out rows)")
        loaded = loaded or load_model(self.settings, purpose="training")
        tracker.step(f"fitting the rows to {getattr(config, 'max_length', None) or 'the'} tokens"
                     if not self.spec.online else "reading the prompts")
        data = defuse(data, loaded.tokenizer, folder)
        data = fit(data, loaded.tokenizer, config, self.spec.name, folder)
        for needed in filter(None, (self.parent, self.reward_version)):
            if not needed.is_base and needed.base_fingerprint != loaded.fingerprint:
                raise IncompatibleVersion(
                    f"{needed.name} was trained on another base model ({needed.base_model}); "
                    f"the configured base is {loaded.model_id}. Set ASSISTANT_MODEL to that "
                    "model, or start from --parent base."
                )
        return data, loaded

    def build(self, data: TrainingData, loaded: LoadedModel,
              callbacks: Sequence[Any]) -> tuple[Trainer, TrainingProgress, int]:
        """The TRL trainer with the progress watcher first among its callbacks, and the
        held-out rows it will evaluate."""
        spec, config = self.spec, self.config
        model, peft_config = _model(spec.name, loaded, self.parent, config)
        reward_model = None
        if self.reward_version is not None:
            from alignment.reward_model import load_reward_model

            reward_model = load_reward_model(loaded, self.reward_version).model
        self.tracker.step("preparing the trainer (TRL tokenizes the rows)")
        trainer = build_trainer(
            spec.name, self.algo, model, config, data.train, data.test, loaded.tokenizer,
            peft_config=peft_config, reward_model=reward_model, callbacks=list(callbacks),
        )
        args = trainer.args
        rows_per_step = args.per_device_train_batch_size * args.gradient_accumulation_steps * max(1, args.world_size)
        if spec.online:  # each prompt is sampled num_generations times
            rows_per_step = max(1, rows_per_step // max(1, getattr(args, "num_generations", 1)))
        evaluated = 0  # the held-out rows the trainer kept (TRL may still drop some)
        if not spec.online and data.test:
            evaluated = len(trainer.eval_dataset) if trainer.eval_dataset is not None else len(data.test)
        watcher = TrainingProgress(
            self.tracker, rows_per_step=rows_per_step, lengths=row_lengths(trainer.train_dataset),
            grouped=args.train_sampling_strategy == "group_by_length", eval_rows=evaluated,
            max_length=getattr(config, "max_length", None), rows=len(data.train))
        trainer.add_callback(watcher)
        trainer.callback_handler.callbacks.remove(watcher)  # first: the others see its counts
        trainer.callback_handler.callbacks.insert(0, watcher)
        return trainer, watcher, evaluated

    def evaluate(self, trainer: Trainer, watcher: TrainingProgress,
                 evaluated: int) -> tuple[dict[str, Any], dict[str, Any]]:
        """The held-out metrics and the reward margin's interval (empty: nothing held out)."""
        if not evaluated:
            return {}, {}
        batches = len(trainer.get_eval_dataloader())
        eta = watcher.estimate.eval_s if watcher.estimate else None
        self.tracker.phase("evaluating", f"{_count(evaluated, 'held-out row')} in {_count(batches, 'batch')}",
                           total=batches, unit="batches", eta_s=eta)
        with batch_values(trainer) as kept:
            eval_metrics = trainer.evaluate()
        args = trainer.args
        return eval_metrics, margin_interval(kept, evaluated, args.per_device_eval_batch_size * max(1, args.world_size))

    def save(self, trainer: Trainer, data: TrainingData, loaded: LoadedModel,
             metrics: dict[str, Any]) -> Version | None:
        """The adapter, its log and curve, registered as a version (None on a process of a
        distributed run other than the main one, which registers)."""
        tracker, staging, spec = self.tracker, self.staging, self.spec
        history = trainer.state.log_history
        tracker.step("saving the adapter")
        trainer.save_model(str(staging / "adapter"))  # on every process: ZeRO-3 gathers here
        if not trainer.is_world_process_zero():
            shutil.rmtree(staging, ignore_errors=True)  # only the main process registers
            return None
        shutil.rmtree(staging / "adapter" / "ref", ignore_errors=True)  # TRL's frozen reference copy
        write_json(staging / "log_history.json", history)
        tracker.step("drawing the loss curve")
        plot_curve(history, staging / "curve.png", spec.title(self.algo))
        record = config_record(self.config)
        record.update(algo=(self.algo or spec.default_algorithm) if len(spec.algorithms) > 1 else None,
                      reward_version=getattr(self.reward_version, "name", None))
        tracker.step("registering the version")
        metrics["phase_seconds"] = tracker.seconds()
        metrics["total_seconds"] = round(time.perf_counter() - self.started, 1)
        return self.registry.register(
            staging, kind=spec.name, base_model=loaded.model_id, base_fingerprint=loaded.fingerprint,
            parent=self.parent.name, data=data.record, config=json.loads(json.dumps(record, default=str)),
            metrics=metrics,
        )


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "es" if noun.endswith("ch") else "s")


def _last_phase(version: Version | None, phase: str) -> float | None:
    """How long ``phase`` took in ``version``'s run (the estimate of the same phase now)."""
    seconds = ((version.metrics or {}).get("phase_seconds") or {}).get(phase) if version else None
    return float(seconds) if isinstance(seconds, int | float) else None


def _pace(tracker: RunProgress, watcher: TrainingProgress, metrics: dict[str, Any],
          rows_per_step: int, rows: dict[str, Any]) -> dict[str, Any]:
    """What the run measured of its own speed: tokens/s and padding (trained forwards), the
    seconds per training and held-out row (the Models page's estimate for the next run),
    and the estimate it made after its first step, to compare."""
    out: dict[str, Any] = dict(watcher.meter.summary())
    seconds = tracker.seconds()
    steps = int(metrics.get("steps") or 0)
    if metrics.get("train_seconds") and steps:
        out["train_seconds_per_row"] = round(metrics["train_seconds"] / (steps * rows_per_step), 4)
    if seconds.get("evaluating") and rows.get("heldout_used"):
        out["eval_seconds_per_row"] = round(seconds["evaluating"] / rows["heldout_used"], 4)
    if watcher.estimate is not None:
        out["estimate"] = watcher.estimate.as_dict()
    return out


def prepare_for_engine(settings: Settings, version: Version, loaded: LoadedModel) -> None:
    """Make the chat's engine ready to serve the new version (llama.cpp: its GGUF copy) now,
    in the training process, not when someone activates it. A failure is only logged: the
    first activation prepares it again (and says why if it fails there too)."""
    from assistant.engines.registry import prepare_version
    from assistant.errors import AssistantError

    try:
        prepare_version(settings, version.adapter_dir, loaded.path)
    except AssistantError as err:
        log.warning("%s could not be prepared for the %s engine now (%s); activation will try again",
                    version.name, settings.engine, err)


# -- steps -------------------------------------------------------------------------------------
def _parent(registry: Registry, kind: str, config: RunArgs) -> Version:
    if training_kind(kind).reward:
        if config.parent not in (None, BASE_VERSION):
            raise IncompatibleVersion(
                "A reward model starts from the base model (it gets a new scalar head): "
                "leave out --parent."
            )
        return registry.get(BASE_VERSION)
    name = config.parent or registry.active()
    version = registry.get(name)  # VersionNotFound lists the known ones
    if not chats(version.kind):
        raise IncompatibleVersion(
            f"{name} is {called(version.kind)}: a chat version cannot be trained on top of it. "
            "Choose an sft, dpo, kto or rl version (or base) with --parent."
        )
    if not version.is_base and not (version.adapter_dir / "adapter_config.json").is_file():
        raise IncompatibleVersion(f"{name}'s adapter files are missing ({version.adapter_dir}).")
    return version


def _reward_version(registry: Registry, config: RunArgs) -> Version:
    if config.reward_version:
        version = registry.get(config.reward_version)
        if version.kind != REWARD_KIND:
            raise RewardModelMissing(f"{version.name} is a {version.kind} version, not a reward model.")
        return version
    version = registry.newest(REWARD_KIND)
    if version is None:
        raise RewardModelMissing("Online RL needs a trained reward model to score the samples, "
                                 "and the registry has none.")
    return version


def _lora(config: RunArgs, task_type: str) -> LoraConfig:
    targets = config.lora_target_modules
    targets = targets if targets == "all-linear" else [t.strip() for t in targets.split(",")]
    return LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                      target_modules=targets, task_type=task_type)


def _model(kind: str, loaded: LoadedModel, parent: Version,
           config: RunArgs) -> tuple[torch.nn.Module, LoraConfig | None]:
    """The model to train and, for a new adapter, the LoRA config TRL should wrap it with."""
    if training_kind(kind).reward:
        from assistant.engines.models import load_sequence_classifier

        return load_sequence_classifier(loaded), _lora(config, "SEQ_CLS")
    model = loaded.model
    if parent.is_base:
        return model, _lora(config, "CAUSAL_LM")
    # Continue the parent's adapter (named "default"): TRL's DPO/KTO/GRPO/RLOO keep a frozen
    # copy of it as the reference, so the new version is a complete adapter on the base.
    return PeftModel.from_pretrained(model, str(parent.adapter_dir), is_trainable=True), None


def _rows(data: TrainingData, trainer: Trainer, metrics: dict[str, Any], kind: str, config: RunArgs) -> dict[str, Any]:
    """The rows the trainer really used and saw (TRL may still drop rows of its own)."""
    def size(dataset: Any) -> int | None:
        try:
            return len(dataset) if dataset is not None else None
        except TypeError:  # an iterable dataset
            return None

    trained = size(getattr(trainer, "train_dataset", None))
    heldout = size(getattr(trainer, "eval_dataset", None)) if data.test and not training_kind(kind).online else 0
    args = trainer.args
    per_step = args.per_device_train_batch_size * args.gradient_accumulation_steps * max(1, args.world_size)
    rows = row_counts(data, len(data.train) if trained is None else trained, heldout,
                      int(metrics.get("steps") or 0), per_step, bool(getattr(config, "drop_long", False)))
    if metrics.get("heldout_accuracy") is not None and rows["heldout_used"]:
        from assistant.significance import rate

        r = rate(metrics["heldout_accuracy"] * rows["heldout_used"], rows["heldout_used"])
        metrics.update(heldout_accuracy_low=r.low, heldout_accuracy_high=r.high,
                       heldout_rows=rows["heldout_used"])
    return rows


def _metrics(train: dict, evaluation: dict, history: list[dict]) -> dict[str, Any]:
    losses = [h["loss"] for h in history if "loss" in h]
    out: dict[str, Any] = {
        "steps": max((h.get("step", 0) for h in history), default=0),
        "train_loss": train.get("train_loss"),
        "first_loss": losses[0] if losses else None,
        "final_loss": losses[-1] if losses else None,
        "train_seconds": train.get("train_runtime"),
    }
    for key in ("reward", "accuracy", "rewards/accuracies", "rewards/margins"):
        values = [h[key] for h in history if key in h and "loss" in h]
        if values:
            out[f"first_{key}"], out[f"final_{key}"] = values[0], values[-1]
    for key, value in evaluation.items():
        if isinstance(value, int | float):
            out[key] = value
    # The reward model's held-out accuracy under one name (TRL logs it as eval_accuracy).
    if "eval_accuracy" in evaluation:
        out["heldout_accuracy"] = evaluation["eval_accuracy"]
    elif "eval_rewards/accuracies" in evaluation:
        out["heldout_accuracy"] = evaluation["eval_rewards/accuracies"]
    return out


@contextmanager
def _out_of_memory_is_a_message(loaded: LoadedModel, config: RunArgs) -> Iterator[None]:
    try:
        yield
    except (torch.OutOfMemoryError, MemoryError) as err:
        raise TrainingOutOfMemory(str(loaded.device), config.per_device_train_batch_size,
                                  getattr(config, "max_length", None), str(err) or type(err).__name__) from err
    except RuntimeError as err:
        text = str(err).lower()
        if "out of memory" in text or "can't allocate memory" in text:
            raise TrainingOutOfMemory(str(loaded.device), config.per_device_train_batch_size,
                                      getattr(config, "max_length", None), str(err)) from err
        raise
