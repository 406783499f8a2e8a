"""``assistant train ...`` (``assistant models ...`` and ``assistant eval``:
:mod:`alignment.cli_models`).

    assistant train reward --steps 200              # reward model on the preference pairs
    assistant train dpo --epochs 1 --set beta=0.1   # any TRL DPOConfig field with --set
    assistant train kto | sft | rl --algo grpo|rloo --reward v1
    assistant train grounded --steps 40 --dpo-steps 20   # SFT then DPO on grounded examples

Thin: builds TRL configs and calls :mod:`alignment.training`. Domain errors become one-line
messages (exit status 1).
"""

from __future__ import annotations

import ast
import signal
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import click

from assistant.login.cli_auth import needs
from assistant.cli_quiet import quiet_libraries
from alignment.training_kinds import KINDS, TrainingKind, training_kind
from assistant.config import get_settings

if TYPE_CHECKING:
    from types import FrameType

    from alignment.training import TrainResult
    from assistant.config import Settings

_F = TypeVar("_F", bound=Callable[..., Any])


def _value(text: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _train_options(f: _F) -> _F:
    options = [
        click.option("--steps", type=int, help="Optimizer steps (default: one epoch)."),
        click.option("--epochs", type=float, help="Epochs over the training rows [1]."),
        click.option("--batch-size", type=int, help="Rows per device per step [4]."),
        click.option("--grad-accum", type=int, help="Steps accumulated per update [2 on a CPU, 1 with CUDA]."),
        click.option("--lr", "learning_rate", type=float, help="Learning rate (kind's default)."),
        click.option("--max-length", type=int, help="Longest row in tokens [256 on a CPU, 512 with "
                     "CUDA]; a longer row's prompt is shortened from the left, its answers kept whole."),
        click.option("--drop-long", is_flag=True, default=None,
                     help="Drop rows longer than --max-length instead of shortening their prompt."),
        click.option("--lora-r", type=int, help="LoRA rank [16]."),
        click.option("--parent", help="Version to continue (default: the active one)."),
        click.option("--limit", type=int, help="Use at most N training rows."),
        click.option("--test-fraction", type=float, help="Conversations held out [0.1]."),
        click.option("--min-rows", type=int, help="Refuse with fewer training rows."),
        click.option("--eval-rows", type=int,
                     help="Held-out rows evaluated after training [48 on a CPU, 200 with CUDA; -1: all]."),
        click.option("--gradient-checkpointing", is_flag=True, default=None,
                     help="Trade compute for memory (large models)."),
        click.option("--seed", type=int, help="Training seed [0]."),
        click.option("--set", "extra", multiple=True, metavar="FIELD=VALUE",
                     help="Any field of TRL's config for this trainer (repeatable)."),
        click.option("--run-dir", type=click.Path(path_type=Path), hidden=True,
                     help="Folder for progress.json/result.json (background runs)."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def _run(kind: str, options: dict, algo: str | None = None) -> str | None:
    """Train ``kind`` and print what was registered; returns the new version's name."""
    quiet_libraries()
    from alignment import runs
    from alignment.training import make_config, train

    spec = training_kind(kind)
    run_dir: Path | None = options.pop("run_dir")
    preset = options.pop("preset", None)
    items = options.pop("extra")
    bad = [item for item in items if "=" not in item]
    if bad:
        raise click.BadParameter(f"--set takes FIELD=VALUE, not {bad[0]!r}")
    extra = dict(item.split("=", 1) for item in items)
    renamed = {"steps": "max_steps", "epochs": "num_train_epochs", "batch_size": "per_device_train_batch_size",
               "grad_accum": "gradient_accumulation_steps"}
    overrides = {renamed.get(k, k): v for k, v in options.items()}
    overrides.update({k: _value(v) for k, v in extra.items()})
    if preset:
        overrides = spec.with_preset(preset, overrides)
        click.echo(f"Preset {preset}: " + ", ".join(
            f"{k}={overrides[k]}" for k in spec.presets[preset]) + ".")
    settings = get_settings()
    out = run_dir or settings.data_dir / "runs" / "cli"
    if spec.online and overrides.get("max_length") is not None:
        raise click.BadParameter("online RL has no --max-length: use --max-completion-length "
                                 "for the sampled answers", param_hint="--max-length")
    try:
        config = make_config(kind, str(Path(out) / "trainer"), algo=algo, precision=settings.dtype,
                             **overrides)
    except TypeError as err:
        field = str(err).rsplit(" ", 1)[-1]
        raise click.ClickException(
            f"Unknown training option {field}: not a field of TRL's "
            f"{type_name(kind, algo)} (see its documentation) nor of the assistant's RunArgs."
        ) from err
    from alignment.training.config import precision_reason
    from assistant.cpu import cpu_info

    click.echo(f"Computing in {precision_reason(config, settings.dtype)}; CPU: {cpu_info().line()}.")
    _memory_line(settings, kind, config, options_grounded(overrides))
    # SIGTERM (cancel from the UI, a scheduler) unwinds like Ctrl-C: nothing half-registered.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        result = train(settings, kind, config, algo=algo,
                       progress=(run_dir / runs.PROGRESS) if run_dir else None, echo=click.echo)
    except BaseException as err:
        if run_dir:
            status = "cancelled" if isinstance(err, KeyboardInterrupt) else "failed"
            runs.finish(run_dir, status, error=str(err) or type(err).__name__)
        raise
    if result.version is None:  # a non-main process of a distributed run
        return None
    v = result.version
    if run_dir:
        runs.finish(run_dir, "done", version=v.name)
    _report(result, spec.title(algo))
    if not spec.reward and not options_grounded(overrides):
        click.echo(f"Next: `assistant eval {v.name}`, then `assistant models activate {v.name}`.")
    return v.name


def _memory_line(settings: Settings, kind: str, config: Any, grounded: bool) -> None:
    """The run's memory estimate against the free memory, before the model loads: a run that
    does not fit is warned (the kernel would kill it part-way) with the batch size that fits."""
    from alignment import memory

    sizes = {k: getattr(config, k, None) for k in ("per_device_train_batch_size", "max_length",
                                                   "gradient_accumulation_steps", "max_completion_length")}
    estimate = memory.run_estimate(settings, kind, sizes, varied=grounded)
    free = memory.available()
    if estimate is None or free is None:
        return
    if estimate.need <= free:
        click.echo(f"{estimate.against(free)}.")
        return
    click.secho(f"{estimate.against(free)}. This run may not fit: the system can stop it part-way. "
                f"{estimate.advice(free)}", fg="yellow", err=True)


def _report(result: TrainResult, title: str) -> None:
    """What a run registered, on what, how it learned and how long it took."""
    from alignment.training.data import describe_counts

    v, m = result.version, result.metrics
    rows = m.get("rows") or {}
    click.echo(f"Registered {v.name}: {title} from {v.parent}, "
               f"{m.get('steps')} steps in {result.seconds:.0f} s on "
               f"{rows.get('train_used', v.data['train_rows'])} rows "
               f"(data sha256 {v.data['sha256'][:12]}).")
    for line in describe_counts(rows):
        click.echo(f"  {line}")
    if m.get("first_loss") is not None:
        click.echo(f"  loss {m['first_loss']:.4f} -> {m['final_loss']:.4f}")
    if m.get("heldout_accuracy") is not None:
        n = m.get("heldout_rows", v.data["test_rows"])
        interval = (f" (95% CI {m['heldout_accuracy_low']:.1%}-{m['heldout_accuracy_high']:.1%})"
                    if m.get("heldout_accuracy_low") is not None else "")
        click.echo(f"  held-out accuracy {m['heldout_accuracy']:.1%}{interval} on {n} rows")
    if m.get("heldout_margin") is not None:
        click.echo(f"  held-out reward margin {m['heldout_margin']:.3f} (95% CI {m['heldout_margin_low']:.3f}"
                   f" to {m['heldout_margin_high']:.3f}, bootstrap over {m['heldout_margin_batches']} "
                   "batches; 0 before training)")
    if m.get("final_reward") is not None:
        click.echo(f"  mean reward {m['first_reward']:.3f} -> {m['final_reward']:.3f}")
    click.echo("  " + time_line(m, result.phase_seconds, result.seconds))
    if m.get("trained_tokens_per_s") is not None:
        click.echo(f"  {m['trained_tokens_per_s']:.0f} trained tokens/s; "
                   f"{m['padding_share']:.0%} of the batches' tokens were padding")
    click.echo(f"  curve: {v.curve}")


def options_grounded(overrides: dict) -> bool:
    return bool(overrides.get("grounded"))


def time_line(metrics: dict, phases: dict[str, float], total: float) -> str:
    """Training time and total time, with every phase's."""
    from alignment.run_estimate import duration

    train_s = metrics.get("train_seconds") or phases.get("training") or 0.0
    parts = ", ".join(f"{name} {duration(s)}" for name, s in phases.items())
    return f"training time {duration(train_s)}, total time {duration(total)} ({parts})"


def type_name(kind: str, algo: str | None) -> str:
    return training_kind(kind).trl_stem(algo).rpartition(".")[2] + "Config"


def _interrupt(signum: int, frame: FrameType | None) -> NoReturn:
    raise KeyboardInterrupt(f"stopped by signal {signum}")


@click.group()
def train() -> None:
    """Train a reward model or a new LoRA version from the feedback (TRL trainers).

    Runs on CUDA with bf16 when present, else on the CPU (bf16 compute where the CPU has AMX or
    AVX512_BF16, fp32 elsewhere; ASSISTANT_DTYPE overrides). Multi-GPU:
    `accelerate launch --config_file alignment/accelerate/ddp.yaml -m assistant.cli train dpo`.
    """


def _kind_command(spec: TrainingKind) -> click.Command:
    """``assistant train KIND``: the common options, and those the kind's entry calls for."""
    def command(algo: str | None = None, **options: Any) -> None:
        _run(spec.name, options, algo=algo)

    command.__doc__ = spec.help
    command = _train_options(command)
    if spec.presets:
        described = "; ".join(f"{name}: " + ", ".join(f"{k}={v}" for k, v in values.items())
                              for name, values in spec.presets.items())
        command = click.option("--preset", type=click.Choice(list(spec.presets)),
                               help=f"A measured recipe ({described}); options given win.")(command)
    if spec.online:
        command = click.option("--max-completion-length", type=int, help="Tokens per sample [32 on a "
                               "CPU, 64 with CUDA].")(command)
        command = click.option("--num-generations", type=int, help="Samples per prompt [4].")(command)
        command = click.option("--reward", "reward_version",
                               help="Reward model version (default: the newest).")(command)
    if len(spec.algorithms) > 1:
        command = click.option("--algo", type=click.Choice(list(spec.algorithms)),
                               default=spec.default_algorithm, show_default=True,
                               help="TRL's trainer for this kind.")(command)
    return train.command(spec.name)(needs("train")(command))


for _spec in KINDS.values():
    _kind_command(_spec)


#: ``train grounded``'s default --max-length: the chat's prompt with four sources (the
#: retriever's default) is ~600-850 tokens on SmolLM2's tokenizer, plus a short answer.
GROUNDED_MAX_LENGTH = 1024
#: ``train grounded``'s SFT learning rate: the measured run (README, "What a grounded run
#: gives") learned to cite and abstain with 40 steps at 5e-4; SFT's general 2e-4 had not in 10.
GROUNDED_SFT_LR = 5e-4


@train.command("grounded")
@_train_options
@click.option("--dpo-steps", type=int, help="DPO optimizer steps (default: --steps).")
@click.option("--dpo-lr", type=float, help="DPO learning rate (default: DPO's).")
@click.option("--no-dpo", is_flag=True, help="Stop after SFT.")
@needs("train")
def train_grounded(dpo_steps: int | None, dpo_lr: float | None, no_dpo: bool, **options) -> None:
    """Grounded answers that cite their sources: SFT on the grounded examples (`data import
    squad`), then DPO on top on their on-policy pairs (`data on-policy`). Two versions are
    registered, the DPO one on the SFT one."""
    from alignment.errors import NoTrainingData, NotEnoughTrainingData

    options["grounded"] = True
    if options.get("max_length") is None:
        # The chat's prompt with its sources must fit whole: TRL's SFT cuts a longer row's end,
        # which is the answer (a row left without one is dropped, and counted).
        options["max_length"] = GROUNDED_MAX_LENGTH
    run_dir = options.get("run_dir")
    sft = _run("sft", dict(options, learning_rate=options.get("learning_rate") or GROUNDED_SFT_LR))
    if sft is None or no_dpo:
        if sft:
            click.echo(f"Next: {_next(sft)}")
        return
    dpo_options = dict(options, parent=sft, run_dir=run_dir)
    if dpo_steps is not None:
        dpo_options["steps"] = dpo_steps
    if dpo_lr is not None:
        dpo_options["learning_rate"] = dpo_lr
    try:
        dpo = _run("dpo", dpo_options)
    except (NoTrainingData, NotEnoughTrainingData) as err:
        click.echo(f"No DPO on top of {sft}: {err} Make on-policy pairs with `assistant data "
                   f"on-policy`, then `assistant train dpo --parent {sft}`.")
        dpo = sft
    if dpo:
        click.echo(f"Next: {_next(dpo)}")


@train.command("answerability")
@click.option("--epochs", type=float, default=3.0, show_default=True, help="Epochs over the training questions.")
@click.option("--steps", type=int, help="Optimizer steps (default: the epochs).")
@click.option("--lr", "learning_rate", type=float, default=2e-4, show_default=True, help="Learning rate.")
@click.option("--batch-size", type=int, default=8, show_default=True, help="Questions per step.")
@click.option("--max-length", type=int, help="Tokens of one input: the top source's start and the "
              "question [384].")
@click.option("--lora-r", type=int, default=16, show_default=True, help="LoRA rank.")
@click.option("--test-fraction", type=float, default=0.2, show_default=True,
              help="Conversations held out to choose the threshold on.")
@click.option("--max-false-abstention", type=float, default=0.2, show_default=True,
              help="False abstention the threshold allows on the held-out questions.")
@click.option("--limit", type=int, help="Use at most N training questions.")
@click.option("--seed", type=int, default=0, show_default=True, help="Training seed.")
@click.option("--set", "extra", multiple=True, metavar="FIELD=VALUE",
              help="Any field of transformers' TrainingArguments (repeatable).")
@click.option("--run-dir", type=click.Path(path_type=Path), hidden=True)
@needs("train")
def train_answerability(extra: tuple[str, ...], run_dir: Path | None, **options: Any) -> None:
    """Answerability head: learns when the top source does not answer a question, from the
    grounded examples (`data import squad` of a SQuAD 2.0 file); quoted mode then says "The
    documents do not say." without asking the model (transformers' Trainer)."""
    quiet_libraries()
    from alignment import runs
    from alignment.answerability import HeadOptions, report, train_head
    from assistant.chat.answerability import MAX_LENGTH

    bad = [item for item in extra if "=" not in item]
    if bad:
        raise click.BadParameter(f"--set takes FIELD=VALUE, not {bad[0]!r}")
    options["max_length"] = options["max_length"] or MAX_LENGTH
    o = HeadOptions(**options, extra={k: _value(v) for k, v in (i.split("=", 1) for i in extra)})
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        version = train_head(get_settings(), o, progress=(run_dir / runs.PROGRESS) if run_dir else None,
                             echo=click.echo)
    except BaseException as err:
        if run_dir:
            status = "cancelled" if isinstance(err, KeyboardInterrupt) else "failed"
            runs.finish(run_dir, status, error=str(err) or type(err).__name__)
        raise
    if run_dir:
        runs.finish(run_dir, "done", version=version.name)
    for line in report(version):
        click.echo(line)


def _next(version: str) -> str:
    return (f"`assistant models calibrate {version} --grounded-file FILE` (its own abstention "
            "threshold, on questions about the documents it will answer from), "
            f"`assistant eval {version}`, then `assistant models activate {version}`.")


def register(main: click.Group) -> None:
    """Entry point (``assistant.commands``): adds ``train``, and ``models`` and ``eval``
    (:mod:`alignment.cli_models`)."""
    from alignment.cli_models import evaluate, models

    for command in (train, models, evaluate):
        main.add_command(command)


