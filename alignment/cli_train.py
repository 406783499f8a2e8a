"""``assistant train ...``, ``assistant models ...`` and ``assistant eval``.

    assistant train reward --steps 200              # reward model on the preference pairs
    assistant train dpo --epochs 1 --set beta=0.1   # any TRL DPOConfig field with --set
    assistant train kto | sft | rl --algo grpo|rloo --reward v1
    assistant train grounded --steps 40 --dpo-steps 20   # SFT then DPO on grounded examples
    assistant eval v2                               # against the active version
    assistant models list | show v2 | activate v2 [--force] | rollback

Thin: builds TRL configs and calls :mod:`alignment.training`, :mod:`alignment.evaluate` and
:mod:`assistant.registry`. Domain errors become one-line messages (exit status 1).
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
from assistant.versions import BASE_VERSION, REWARD_KIND

if TYPE_CHECKING:
    from types import FrameType

    from alignment.training import TrainResult
    from assistant.config import Settings
    from assistant.gate import GateReport
    from assistant.registry import Registry
    from assistant.storage import Database

_F = TypeVar("_F", bound=Callable[..., Any])


def _settings_db_registry() -> tuple[Settings, Database, Registry]:
    from assistant.bootstrap import open_database, open_registry

    settings = get_settings()
    db = open_database(settings)
    return settings, db, open_registry(settings, db)


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
            click.echo(f"Next: `assistant eval {sft}`, then `assistant models activate {sft}`.")
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
        click.echo(f"Next: `assistant eval {dpo}`, then `assistant models activate {dpo}`.")


# -- models ------------------------------------------------------------------------------------
@click.group()
def models() -> None:
    """Model versions: list, show, activate (with the eval gate), roll back."""


def _headline(metrics: dict) -> str:
    for key, label in (("heldout_accuracy", "held-out acc"), ("final_reward", "reward"),
                       ("final_loss", "loss")):
        if metrics.get(key) is not None:
            return f"{label} {metrics[key]:.3f}"
    return ""


@models.command("list")
@needs()
def models_list() -> None:
    """All versions; * marks the one the chat uses."""
    _, _, registry = _settings_db_registry()
    active = registry.active()
    click.echo(f"{'':2}{'version':8} {'kind':7} {'parent':7} {'created (UTC)':17} {'rows':>6}  metric")
    click.echo(f"{'*' if active == BASE_VERSION else ' '} {BASE_VERSION:8} {BASE_VERSION:7} {'':7} {'':17} {'':>6}")
    for v in registry.list():
        click.echo(f"{'*' if v.name == active else ' '} {v.name:8} {v.kind:7} {v.parent:7} "
                   f"{v.created_at:%Y-%m-%d %H:%M}  {v.data.get('train_rows', 0):>6}  {_headline(v.metrics)}")


@models.command("show")
@click.argument("name")
@needs()
def models_show(name: str) -> None:
    """A version's lineage, data, config, metrics and evaluations."""
    import json

    _, _, registry = _settings_db_registry()
    v = registry.get(name)
    if v.is_base:
        click.echo("base: the base model without an adapter.")
        return
    c = v.config
    click.echo(f"{v.name} ({v.kind}{', ' + c['algo'] if c.get('algo') else ''})"
               f"{'  [active]' if registry.active() == v.name else ''}")
    click.echo(f"  lineage:  {' <- '.join(registry.lineage(v.name))}")
    click.echo(f"  base:     {v.base_model}")
    click.echo(f"  created:  {v.created_at:%Y-%m-%d %H:%M:%S} UTC")
    click.echo(f"  folder:   {v.path}")
    d = v.data
    click.echo(f"  data:     {d['kind']}, {d['train_rows']} train / {d['test_rows']} test rows, "
               f"sha256 {d['sha256']}")
    from alignment.eval_metrics import summarize
    from alignment.training.data import describe_counts

    for line in describe_counts(d.get("rows") or {}):
        click.echo(f"            {line}")
    keys = ("trl_config", "max_steps", "num_train_epochs", "learning_rate", "per_device_train_batch_size",
            "max_length", "lora_r", "lora_alpha", "beta", "bf16", "use_cpu", "reward_version")
    click.echo("  config:   " + ", ".join(f"{k}={c[k]}" for k in keys if c.get(k) is not None))
    click.echo("  metrics:  " + json.dumps({k: round(x, 4) if isinstance(x, float) else x
                                            for k, x in v.metrics.items()}))
    for e in registry.evaluations(v.name):
        click.echo(f"  eval {e.created_at:%Y-%m-%d %H:%M}: " + "\n    ".join(summarize(e)))
    if v.curve and v.curve.is_file():
        click.echo(f"  curve:    {v.curve}")


@models.command("activate")
@click.argument("name")
@click.option("--force", is_flag=True, help="Activate even if the eval gate refuses it.")
@click.option("--threshold", type=float, default=None,
              help="QA accuracy drop the gate tolerates [0.05].")
@needs("activate")
def models_activate(name: str, force: bool, threshold: float | None) -> None:
    """Make NAME the chat's version (a running app switches before its next answer).

    The chat's engine loads NAME first (its adapter converted for llama.cpp, or pushed to
    the OpenAI-compatible server), as the Models page does: a version the engine cannot
    serve is refused with the engine's reason and the active version stays."""
    from assistant.bootstrap import build_engine
    from assistant.gate import DEFAULT_GATE, activate_version, gate_report
    from assistant.versions import BASE_VERSION

    settings, _, registry = _settings_db_registry()
    registry.get(name)  # an unknown name fails before the model loads
    before = registry.active()
    threshold = DEFAULT_GATE if threshold is None else threshold
    report = gate_report(registry, name, threshold)
    engine = build_engine(settings)
    fingerprint = engine.fingerprint()
    if name != BASE_VERSION and (force or not report.reasons):
        version = registry.check_servable(name, fingerprint)
        click.echo(f"Loading {name} into the chat's engine ({engine.generator.engine})...")
        engine.generator.load_adapter(name, version.adapter_dir)
    activate_version(registry, name, fingerprint, force=force, threshold=threshold)
    click.echo(f"The chat now uses {name} (was {before})"
               + (" despite the eval gate (--force)." if report.reasons else "."))
    _echo_gate(report)


def _echo_gate(report: GateReport) -> None:
    for line in report.checked:
        click.echo(f"  gate checked: {line}")
    for line in report.not_checked:
        click.echo(f"  gate could not check: {line}")
    for line in report.reasons:
        click.echo(f"  gate refuses: {line}")


@models.command("import")
@click.argument("folder", type=click.Path(path_type=Path))
@click.option("--kind", type=click.Choice(list(KINDS)),
              help="What it is, when the folder does not say (a bare adapter, or a version "
                   "folder made before versions described themselves).")
@click.option("--parent", default=BASE_VERSION, show_default=True,
              help="Local version it continues (the source's parent is another registry's).")
@needs("train")
def models_import(folder: Path, kind: str | None, parent: str) -> None:
    """Register a version trained elsewhere: another data folder's versions/<name>, or a
    LoRA adapter folder. Its adapter must load onto this base model; it is registered under
    the next free name here, converted for llama.cpp, and not activated."""
    from alignment.version_import import describe_source, import_version
    from assistant.engines.models import load_model

    settings, _, registry = _settings_db_registry()
    describe_source(folder, kind)  # a wrong folder or kind fails before the model loads
    click.echo(f"Loading the base model to check that the adapter fits ({settings.model})...")
    loaded = load_model(settings)
    version = import_version(registry, folder, loaded, kind=kind, parent=parent)
    if version.kind != REWARD_KIND:
        from alignment.training.run import prepare_for_engine

        prepare_for_engine(settings, version, loaded)  # as a trained version is; a failure is logged
    source = version.data["imported_from"]
    click.echo(f"Imported {folder} as {version.name} ({version.kind} on {version.parent})"
               + (f"; it was {source['name']} there." if source.get("name") else "."))
    click.echo(f"Next: `assistant eval {version.name}`, then `assistant models activate {version.name}`.")


@models.command("rollback")
@needs("activate")
def models_rollback() -> None:
    """Go back to the version active before the last activation."""
    _, _, registry = _settings_db_registry()
    before = registry.active()
    now = registry.rollback()
    click.echo(f"Rolled back: the chat now uses {now} (was {before}).")


# -- eval --------------------------------------------------------------------------------------
@click.command("eval")
@click.argument("candidate")
@click.option("--against", "baseline", help="Baseline version (default: the active one).")
@click.option("--reward", help="Reward model that judges (default: the newest).")
@click.option("--pairs", type=int, default=200, show_default=True, help="Held-out pairs for the reward model.")
@click.option("--prompts", type=int, default=16, show_default=True, help="Held-out prompts both answer.")
@click.option("--qa", type=int, default=24, show_default=True, help="Retrieval QA questions (<= 24).")
@click.option("--max-new-tokens", type=int, default=64, show_default=True)
@click.option("--grounded", "grounded", type=click.IntRange(min=0), default=60, show_default=True,
              help="Grounded questions asked with the sources retrieval finds (0: none).")
@click.option("--grounded-file", type=click.Path(exists=True, dir_okay=False),
              help="Ask a SQuAD file's questions (default: the held-out grounded examples).")
@click.option("--grounded-title", "grounded_titles", multiple=True,
              help="Only this article of --grounded-file (repeatable).")
@click.option("--repetition-penalty", type=click.FloatRange(1.0, 2.0),
              help="Repetition penalty of the answers (default: the chat's, "
              "generation.repetition_penalty; 1.0: off, to see how much a version loops).")
@click.option("--answer-mode", type=click.Choice(["free", "quoted", "extractive"]),
              help="How grounded answers are formed (default: the chat's, answers.mode).")
@click.option("--run-dir", type=click.Path(path_type=Path), hidden=True)
@needs("evaluate")
def evaluate(candidate: str, baseline: str | None, reward: str | None, pairs: int, prompts: int,
             qa: int, max_new_tokens: int, grounded: int, grounded_file: str | None,
             grounded_titles: tuple[str, ...], repetition_penalty: float | None,
             answer_mode: str | None, run_dir: Path | None) -> None:
    """Compare CANDIDATE with the active version: reward-model accuracy, win rate judged by
    the reward model, QA accuracy, grounded QA on retrieved sources (answer accuracy,
    citation accuracy, abstention). Stored for the activation gate."""
    quiet_libraries()
    from alignment import runs
    from alignment.eval_metrics import summarize
    from alignment.evaluate import EvalOptions
    from alignment.evaluate import evaluate as run_eval

    options = EvalOptions(baseline=baseline, reward=reward, pairs=pairs, prompts=prompts, qa=qa,
                          max_new_tokens=max_new_tokens, grounded=grounded, grounded_file=grounded_file,
                          grounded_titles=tuple(grounded_titles),
                          repetition_penalty=repetition_penalty, answer_mode=answer_mode)
    try:
        record = run_eval(get_settings(), candidate, options)
    except BaseException as err:
        if run_dir:
            runs.finish(run_dir, "failed", error=str(err) or type(err).__name__)
        raise
    if run_dir:
        runs.finish(run_dir, "done", version=candidate)
    for line in summarize(record):
        click.echo(line)
    from assistant.gate import gate_report

    _, _, registry = _settings_db_registry()
    if record.baseline == registry.active():
        report = gate_report(registry, candidate)
        click.echo(f"Eval gate for activating {candidate} over {record.baseline}: "
                   + ("passes (better)." if report.passes else f"refuses ({report.verdict})."))
        _echo_gate(report)


def register(main: click.Group) -> None:
    """Entry point (``assistant.commands``): adds ``train``, ``models`` and ``eval``."""
    for command in (train, models, evaluate):
        main.add_command(command)


