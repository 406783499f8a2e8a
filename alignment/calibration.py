"""A version's own abstention threshold, chosen on questions it was not trained on:
``assistant models calibrate VERSION``.

In quoted mode the model's "The documents do not say." is kept only when the model gave it
at least ``answers.min_abstain_probability``; a less sure one is answered with the best
source sentence, quoted (:func:`assistant.chat.answer_modes.compose`). How sure a trained
version is of its abstentions differs from one training run to the next, so one threshold
does not suit them all. Calibrating a version asks it questions in quoted mode through the
chat's engine (greedy, with its tokens' probabilities, as ``assistant eval`` does), forms each
answer at every threshold of :data:`alignment.evaluate.ABSTAIN_CURVE`, and keeps with the
version the lowest threshold whose false abstention (answerable questions answered "The
documents do not say.") is at most ``max_false_abstention``: the lowest such threshold keeps
the most of the version's abstentions on unanswerable questions. When none is low enough the
threshold is 1 (no abstention of the version is trusted; quoted mode still abstains when no
source sentence is relevant). The chat, the terminal chat and ``assistant eval`` use it while
``answers.min_abstain_probability`` is unset (:func:`assistant.chat.answer_modes.abstain_threshold`).

The questions should be about the documents the version will answer from, and not ones it
was trained on: measured, trained versions abstain wrongly far more often on their training
article (even on its paragraphs they never saw) than on another article, so a threshold
chosen there is too high elsewhere (docs/training.md). ``--grounded-file FILE`` asks the
questions of the paragraphs ``data import squad --calibration`` leaves out (``--all-paragraphs``:
every question of the file); without it, the held-out grounded examples are asked (fewer,
and of the training article).
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from alignment.answering import answering, penalty_of
from alignment.errors import CannotCalibrate
from alignment.evaluate import (
    EvalOptions,
    answer_similarity,
    abstention_curve,
    former,
    grounded_answers,
    grounded_items,
)
from assistant.bootstrap import open_database, open_registry
from assistant.versions import ANSWERABILITY_KIND, BASE_VERSION, chats

if TYPE_CHECKING:
    from assistant.config import Settings
    from assistant.registry import Registry
    from assistant.storage import Database

#: The false abstention a calibrated threshold allows (the share of answerable questions
#: answered "The documents do not say.").
MAX_FALSE_ABSTENTION = 0.2
#: Fewer answerable questions than this cannot tell 20% false abstention from 40%.
MIN_ANSWERABLE = 10


def choose(curve: list[dict[str, Any]], max_false_abstention: float) -> float:
    """The lowest threshold of ``curve`` (ascending, as :func:`abstention_curve` gives it)
    whose false abstention is at most ``max_false_abstention``; 1.0 when none is."""
    for row in curve:
        if row["false_abstention"] is not None and row["false_abstention"] <= max_false_abstention:
            return float(row["min_abstain_probability"])
    return 1.0


def calibrate(settings: Settings, version: str, options: EvalOptions | None = None,
              max_false_abstention: float = MAX_FALSE_ABSTENTION, *,
              db: Database | None = None) -> dict[str, Any]:
    """Choose ``version``'s threshold on ``options``' grounded questions, keep it with the
    version (``Registry.calibrate``) and return what was kept."""
    o = options or EvalOptions(grounded=None)
    started = time.perf_counter()
    db = db or open_database(settings)
    registry = open_registry(settings, db)
    if version != BASE_VERSION and registry.get(version).kind == ANSWERABILITY_KIND:
        return calibrate_head(settings, db, registry, version, o, max_false_abstention)
    if version == BASE_VERSION or not chats(registry.get(version).kind):
        raise CannotCalibrate(f"{version} does not answer with its own weights: only a trained "
                              "version that answers can be calibrated.")
    items, where = grounded_items(settings, db, o)
    answerable = sum(bool(i.answers) for i in items)
    if answerable < MIN_ANSWERABLE:
        raise CannotCalibrate(
            f"{where} gives {answerable} answerable questions; choosing a threshold needs at "
            f"least {MIN_ANSWERABLE}. Import a SQuAD file with `assistant data import squad FILE "
            "--calibration` and pass it with --grounded-file. The version is unchanged.")
    with answering(settings, registry, {version},
                   repetition_penalty=penalty_of(settings, o.repetition_penalty)) as models:
        answered, seconds = grounded_answers(models, version, items, "quoted", o)
        engine = models.engine
    curve = abstention_curve(former("quoted", answered, items, settings, answer_similarity(settings)), items)
    calibration = {
        "min_abstain_probability": choose(curve, max_false_abstention),
        "max_false_abstention": max_false_abstention,
        "questions": where, "asked": len(items), "answerable": answerable,
        "training_article": not o.grounded_file,
        "model_abstained": sum(a.abstained for a in answered),
        "with_probability": sum(a.probability is not None for a in answered),
        "curve": curve, "engine": engine, "answer_seconds": round(seconds, 1),
        "seconds": round(time.perf_counter() - started, 1),
        "at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    registry.calibrate(version, calibration)
    return calibration


def calibrate_head(settings: Settings, db: Database, registry: Registry, version: str, o: EvalOptions,
                   max_false_abstention: float) -> dict[str, Any]:
    """An answerability head's threshold, chosen as its training chose one, on ``o``'s
    grounded questions (their top source and the question; no model answers)."""
    from alignment.answerability import choose, judged
    from assistant.chat.answerability import load_head
    from assistant.engines.models import load_model

    started = time.perf_counter()
    items, where = grounded_items(settings, db, o)
    items = [i for i in items if i.sources]  # the chat answers those without the head
    answerable = sum(bool(i.answers) for i in items)
    if answerable < MIN_ANSWERABLE or answerable == len(items):
        raise CannotCalibrate(
            f"{where} gives {answerable} answerable questions of {len(items)} with sources; choosing a "
            f"head's threshold needs at least {MIN_ANSWERABLE}, and some unanswerable ones. Pass a SQuAD "
            "2.0 file with --grounded-file. The head is unchanged.")
    head = load_head(load_model(settings, purpose="training"), registry.get(version))
    probabilities = head.probabilities([(i.question, i.sources[0]) for i in items])
    labels = [int(not i.answers) for i in items]
    threshold = choose(probabilities, labels, max_false_abstention)
    calibration = {**judged(probabilities, labels, threshold, max_false_abstention),
                   "head_threshold": round(threshold, 6), "questions": where, "asked": len(items),
                   "answerable": answerable, "training_article": not o.grounded_file,
                   "seconds": round(time.perf_counter() - started, 1),
                   "at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    registry.calibrate(version, calibration)
    return calibration


def report(version: str, c: dict[str, Any]) -> list[str]:
    """What ``assistant models calibrate`` prints of a calibration."""
    from alignment.eval_metrics import curve_line

    if "head_threshold" in c:
        return _head_report(version, c)

    chosen = c["min_abstain_probability"]
    lines = [
        f"{version} answered {c['asked']} questions ({c['answerable']} answerable) of {c['questions']} "
        f"on {c['engine']} in {c['answer_seconds']:.0f} s; it wrote \"The documents do not say.\" "
        f"{c['model_abstained']} times.",
        "  by answers.min_abstain_probability (accuracy / abstention / false abstention; * chosen):",
        f"  {curve_line(c['curve'], chosen)}",
    ]
    lines += _uncertainty(c)
    if not c["with_probability"]:
        lines.append("  The engine gave no token probabilities (a server other than vLLM): every "
                     "abstention stands whatever the threshold.")
    if chosen >= 1.0:
        lines.append(f"  No threshold keeps false abstention at or under {c['max_false_abstention']:.0%}: "
                     f"{version}'s own abstentions are not trusted (threshold 1).")
    lines.append(f"{version}'s threshold is now {chosen:g}: the chat uses it while the setting "
                 "answers.min_abstain_probability is unset.")
    if c.get("training_article"):
        lines.append("  These were held-out examples of the training article: measured, trained versions "
                     "abstain wrongly far more often there than on other documents, so this threshold is "
                     "likely too high elsewhere. Calibrate with --grounded-file on questions about the "
                     "documents the version will answer from.")
    return lines


def _uncertainty(c: dict[str, Any]) -> list[str]:
    """How far the chosen threshold's false abstention can be trusted: its count, its 95%
    interval and what one question moves it (a few questions decide the choice)."""
    from assistant.significance import wilson

    chosen = c["min_abstain_probability"]
    row = next((r for r in c["curve"] if r["min_abstain_probability"] == chosen), None)
    if row is None or row["false_abstention"] is None:
        return []
    n = c["answerable"]
    wrong = round(row["false_abstention"] * n)
    low, high = wilson(wrong, n)
    return [f"  false abstention at {chosen:g}: {wrong} of {n} answerable questions ({wrong / n:.1%}, "
            f"95% CI {low:.1%}-{high:.1%}); one question moves it {100 / n:.1f} points."]


def _head_report(version: str, c: dict[str, Any]) -> list[str]:
    from alignment.answerability import weak

    lines = [
        f"{version} (an answerability head) read {c['asked']} questions ({c['answerable']} answerable) of "
        f"{c['questions']} in {c['seconds']:.0f} s: AUC {c['auc']}.",
        "  by threshold (abstention / false abstention): " + ", ".join(
            f"{r['threshold']:g}: {r['abstention']:.0%}/{r['false_abstention']:.0%}" for r in c["curve"]),
        f"{version}'s threshold is now {c['head_threshold']:.3g}: it abstains on {c['abstention']:.0%} of the "
        f"unanswerable questions there, wrongly on {c['false_abstention']:.0%} of the answerable ones "
        f"(at most {c['max_false_abstention']:.0%} allowed).",
    ]
    lines += weak(c["auc"])
    if c.get("training_article"):
        lines.append("  These were held-out examples of the training article: calibrate with --grounded-file "
                     "on questions about the documents the chat will answer from.")
    return lines
