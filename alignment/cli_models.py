"""``assistant models ...`` and ``assistant eval``: the versions, their evaluation and the
eval gate that activates them.

    assistant eval v2                               # against the active version
    assistant models list | show v2 | activate v2 [--force] | rollback | import FOLDER
    assistant models calibrate v2 --grounded-file dev.json   # its own abstention threshold

Thin: calls :mod:`alignment.evaluate`, :mod:`assistant.registry` and :mod:`assistant.gate`.
Domain errors become one-line messages (exit status 1).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from alignment.training_kinds import VERSION_KINDS
from assistant.cli_quiet import quiet_libraries
from assistant.config import get_settings
from assistant.login.cli_auth import needs
from assistant.versions import BASE_VERSION, REWARD_KIND

if TYPE_CHECKING:
    from assistant.config import Settings
    from assistant.gate import GateReport
    from assistant.registry import Registry
    from assistant.storage import Database


def _settings_db_registry() -> tuple[Settings, Database, Registry]:
    from assistant.bootstrap import open_database, open_registry

    settings = get_settings()
    db = open_database(settings)
    return settings, db, open_registry(settings, db)


@click.group()
def models() -> None:
    """Model versions: list, show, calibrate, activate (with the eval gate), roll back."""


def _headline(metrics: dict) -> str:
    if (metrics.get("answerability") or {}).get("auc") is not None:  # an answerability head
        return f"held-out AUC {metrics['answerability']['auc']:.3f}"
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

    from assistant.registry import CALIBRATION

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
                                            for k, x in v.metrics.items() if k != CALIBRATION}))
    calibration = v.metrics.get(CALIBRATION)
    if calibration and "head_threshold" in calibration:  # an answerability head's
        click.echo(f"  head threshold: {calibration['head_threshold']:.3g} (calibrated {calibration.get('at', '')} "
                   f"on {calibration.get('asked')} questions of {calibration.get('questions')})")
    elif calibration:
        click.echo(f"  abstention threshold: {calibration['min_abstain_probability']:g} (calibrated "
                   f"{calibration.get('at', '')} on {calibration.get('asked')} questions of "
                   f"{calibration.get('questions')})")
    for e in registry.evaluations(v.name):
        click.echo(f"  eval {e.created_at:%Y-%m-%d %H:%M}: " + "\n    ".join(summarize(e)))
    if v.curve and v.curve.is_file():
        click.echo(f"  curve:    {v.curve}")


@models.command("calibrate")
@click.argument("name")
@click.option("--grounded-file", type=click.Path(exists=True, dir_okay=False),
              help="Ask a SQuAD file's questions: those of the paragraphs `data import squad "
              "--calibration` left out of the examples (default: the held-out grounded examples).")
@click.option("--grounded-title", "grounded_titles", multiple=True,
              help="Only this article of --grounded-file (repeatable).")
@click.option("--all-paragraphs", is_flag=True,
              help="Every question of --grounded-file (for an article the version was not trained on).")
@click.option("--grounded", "limit", type=click.IntRange(min=1), help="At most N questions [all].")
@click.option("--max-false-abstention", type=click.FloatRange(0, 1), default=0.2, show_default=True,
              help="The share of answerable questions the version may answer \"The documents do not say.\".")
@needs("evaluate")
def models_calibrate(name: str, grounded_file: str | None, grounded_titles: tuple[str, ...],
                     all_paragraphs: bool, limit: int | None, max_false_abstention: float) -> None:
    """Choose NAME's own abstention threshold (answers.min_abstain_probability) on questions it
    was not trained on: the lowest at which its false abstention is at most
    --max-false-abstention. The chat uses it while the setting is unset."""
    quiet_libraries()
    from alignment.calibration import calibrate, report
    from alignment.evaluate import EvalOptions

    options = EvalOptions(grounded=limit, grounded_file=grounded_file, grounded_titles=grounded_titles,
                          grounded_paragraphs="all" if all_paragraphs else "calibration")
    for line in report(name, calibrate(get_settings(), name, options, max_false_abstention)):
        click.echo(line)


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
@click.option("--kind", type=click.Choice(list(VERSION_KINDS)),
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
@click.option("--grounded-paragraphs", type=click.Choice(["all", "calibration", "rest"]), default="all",
              show_default=True,
              help="Of --grounded-file: every paragraph's questions, only those of the paragraphs "
              "`data import squad --calibration` leaves out (what `models calibrate` asks), or the "
              "rest (questions a calibration on that file did not see).")
@click.option("--repetition-penalty", type=click.FloatRange(1.0, 2.0),
              help="Repetition penalty of the answers (default: the chat's, "
              "generation.repetition_penalty; 1.0: off, to see how much a version loops).")
@click.option("--answer-mode", type=click.Choice(["free", "quoted", "extractive"]),
              help="How grounded answers are formed (default: the chat's, answers.mode).")
@click.option("--run-dir", type=click.Path(path_type=Path), hidden=True)
@needs("evaluate")
def evaluate(candidate: str, baseline: str | None, reward: str | None, pairs: int, prompts: int,
             qa: int, max_new_tokens: int, grounded: int, grounded_file: str | None,
             grounded_titles: tuple[str, ...], grounded_paragraphs: str, repetition_penalty: float | None,
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
                          grounded_titles=tuple(grounded_titles), grounded_paragraphs=grounded_paragraphs,
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


