"""``assistant train answerability``: the answerability head quoted mode abstains by
(:mod:`assistant.chat.answerability`).

From the grounded examples in the database (`data import squad`, `data synth`): a question
whose sources hold no gold answer is "not answered" (its reference answer is the abstention),
one whose top source holds a gold answer is "answered"; one answered only by a lower source
is left out (the head reads the top source). The base model gets a one-output head and a LoRA
and learns, with a binary cross-entropy (transformers' Trainer), the probability that the top
source does not answer the question. A share of the examples (by conversation, as the other
kinds' held-out rows) is kept out of training; on them the run chooses the head's threshold:
the lowest probability to abstain at whose false abstention (answered questions judged not
answered) is at most ``max_false_abstention`` and where it abstains more on the questions not
answered than on the answered ones. It registers the head as a version of kind
``answerability`` with that threshold, its held-out AUC and the trade-off curve.

Measured on the embedded model (docs/training.md, "An answerability head"): trained on one
SQuAD article's 303 questions, quoted mode with it abstained on 42.9% of the other article's
unanswerable questions at 19.1% false abstention (without it: 12.6% at 7.9%); trained on 150,
it did not carry to the other article (its reports warn of a head near chance).
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from alignment.errors import NoTrainingData
from alignment.export import split_of
from alignment.grounded import contains_answer
from alignment.on_policy import grounded_examples
from assistant.chat.answerability import MAX_LENGTH, AnswerabilityHead, encode
from assistant.versions import ANSWERABILITY_KIND, BASE_VERSION

if TYPE_CHECKING:
    from assistant.config import Settings
    from assistant.registry import Version
    from assistant.storage import Database

log = logging.getLogger(__name__)

#: The false abstention the chosen threshold allows on the held-out examples.
MAX_FALSE_ABSTENTION = 0.2
#: Fewer examples of either label than this is refused (nothing to learn from or to choose on).
MIN_PER_LABEL = 8
#: The thresholds the registered curve reports abstention at.
CURVE = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


@dataclass(frozen=True)
class Row:
    question: str
    source: str
    #: 1: no source holds a gold answer (the reference answer abstains); 0: the top one does.
    unanswered: int
    conversation_id: int


@dataclass
class HeadOptions:
    epochs: float = 3.0
    #: Optimizer steps (None: the epochs decide).
    steps: int | None = None
    learning_rate: float = 2e-4
    batch_size: int = 8
    lora_r: int = 16
    max_length: int = MAX_LENGTH
    test_fraction: float = 0.2
    max_false_abstention: float = MAX_FALSE_ABSTENTION
    seed: int = 0
    limit: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def rows(db: Database) -> tuple[list[Row], int]:
    """The labelled rows of the grounded examples, and how many examples were left out (no
    sources, or answered by a source other than the top one)."""
    out, skipped = [], 0
    for e in grounded_examples(db):
        if not e.sources or (e.answers and not contains_answer(e.sources[0].text, e.answers)):
            skipped += 1
            continue
        out.append(Row(e.question, e.sources[0].text, int(not e.answers), e.conversation_id))
    return out, skipped


def split(data: list[Row], o: HeadOptions) -> tuple[list[Row], list[Row]]:
    train = [r for r in data if split_of(r.conversation_id, o.seed, o.test_fraction) == "train"]
    test = [r for r in data if split_of(r.conversation_id, o.seed, o.test_fraction) == "test"]
    for part, named in ((train, "training"), (test, "held-out")):
        for label, what in ((1, "not answered by their sources"), (0, "answered by their top source")):
            n = sum(r.unanswered == label for r in part)
            if n < MIN_PER_LABEL:
                raise NoTrainingData(
                    f"The {named} examples hold {n} questions {what}; `train answerability` needs at "
                    f"least {MIN_PER_LABEL} of each label in both (import a SQuAD 2.0 file with "
                    "`assistant data import squad FILE`: its unanswerable questions are those its "
                    "sources do not answer). Nothing was trained.")
    return (train[:o.limit] if o.limit else train), test


def auc(probabilities: Sequence[float], labels: Sequence[int]) -> float | None:
    """The chance that a random not-answered question scores above a random answered one."""
    pos = [p for p, y in zip(probabilities, labels, strict=True) if y]
    neg = [p for p, y in zip(probabilities, labels, strict=True) if not y]
    if not pos or not neg:
        return None
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def rates(probabilities: Sequence[float], labels: Sequence[int], threshold: float) -> tuple[float, float]:
    """Abstention on not-answered and on answered questions when abstaining at >= threshold."""
    said = [p >= threshold for p in probabilities]
    una = [s for s, y in zip(said, labels, strict=True) if y]
    ans = [s for s, y in zip(said, labels, strict=True) if not y]
    return (sum(una) / len(una) if una else 0.0), (sum(ans) / len(ans) if ans else 0.0)


def choose(probabilities: Sequence[float], labels: Sequence[int], max_false_abstention: float) -> float:
    """The lowest probability to abstain at whose false abstention is at most the budget and
    whose abstention on the not-answered questions is higher than on the answered ones (a head
    that abstains more on answered questions only costs answers); 1.0 when none is: the head
    never abstains."""
    for t in sorted(set(probabilities)):
        abstention, false = rates(probabilities, labels, t)
        if false <= max_false_abstention and abstention > false:
            return float(t)
    return 1.0


def judged(probabilities: Sequence[float], labels: Sequence[int], threshold: float,
           max_false_abstention: float) -> dict[str, Any]:
    """What is kept with the head: its threshold, held-out AUC, rates there and the curve."""
    abstention, false = rates(probabilities, labels, threshold)
    return {
        "threshold": round(threshold, 6), "max_false_abstention": max_false_abstention,
        "heldout": len(labels), "heldout_unanswered": sum(labels),
        "auc": None if (a := auc(probabilities, labels)) is None else round(a, 4),
        "abstention": round(abstention, 4), "false_abstention": round(false, 4),
        "curve": [{"threshold": t, **dict(zip(("abstention", "false_abstention"),
                                              (round(x, 4) for x in rates(probabilities, labels, t))))}
                  for t in CURVE],
    }


def _dataset(data: list[Row], tokenizer: Any, max_length: int) -> Any:
    from datasets import Dataset

    return Dataset.from_list([{"input_ids": encode(tokenizer, r.question, r.source, max_length),
                               "labels": [float(r.unanswered)]} for r in data])


def _trainer(model: Any, tokenizer: Any, data: list[Row], o: HeadOptions, out: Path,
             callbacks: Sequence[Any]) -> Any:
    from peft import LoraConfig, get_peft_model
    from transformers import DataCollatorWithPadding, Trainer, TrainingArguments

    model.config.problem_type = "multi_label_classification"  # one output: BCE with logits
    model = get_peft_model(model, LoraConfig(r=o.lora_r, lora_alpha=2 * o.lora_r, lora_dropout=0.05,
                                             target_modules="all-linear", task_type="SEQ_CLS"))
    args = TrainingArguments(
        output_dir=str(out), per_device_train_batch_size=o.batch_size, num_train_epochs=o.epochs,
        max_steps=o.steps or -1, learning_rate=o.learning_rate, logging_steps=5, save_strategy="no", report_to=[],
        seed=o.seed, use_cpu=not _cuda(), **o.extra)
    return Trainer(model=model, args=args, train_dataset=_dataset(data, tokenizer, o.max_length),
                   data_collator=DataCollatorWithPadding(tokenizer), callbacks=list(callbacks))


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def train_head(settings: Settings, o: HeadOptions | None = None, *, db: Database | None = None,
               progress: Path | None = None, echo: Callable[[str], None] | None = None) -> Version:
    """Train an answerability head on the grounded examples and register it."""
    from alignment.training.progress import RunProgress, TrainingProgress
    from assistant.bootstrap import open_database, open_registry
    from assistant.engines.models import load_model, load_sequence_classifier

    o = o or HeadOptions()
    started = time.perf_counter()
    db = db or open_database(settings)
    registry = open_registry(settings, db)
    data, skipped = rows(db)
    train, test = split(data, o)
    tracker = RunProgress(progress, ANSWERABILITY_KIND, echo)
    tracker.phase("loading", f"{len(train)} training, {len(test)} held-out questions "
                  f"({skipped} answered only by a lower source, or without sources, left out)", total=2,
                  unit="parts")
    loaded = load_model(settings, purpose="training")
    tracker.step("the base model with a one-output head")
    staging = registry.staging_dir()
    try:
        model = load_sequence_classifier(loaded)
        watcher = TrainingProgress(tracker, rows_per_step=o.batch_size, lengths=None, grouped=False,
                                   eval_rows=len(test), max_length=o.max_length, rows=len(train))
        trainer = _trainer(model, loaded.tokenizer, train, o, staging / "trainer", [watcher])
        output = trainer.train()
        tracker.phase("evaluating", f"{len(test)} held-out questions", total=len(test), unit="questions")
        head = AnswerabilityHead(trainer.model.eval(), loaded.tokenizer, "", 1.0, o.max_length)
        probabilities = head.probabilities([(r.question, r.source) for r in test])
        labels = [r.unanswered for r in test]
        chosen = judged(probabilities, labels, choose(probabilities, labels, o.max_false_abstention),
                        o.max_false_abstention)
        tracker.phase("saving", total=1, unit="parts")
        trainer.model.save_pretrained(str(staging / "adapter"))
        shutil.rmtree(staging / "trainer", ignore_errors=True)
        metrics = {"answerability": chosen, "train_loss": output.metrics.get("train_loss"),
                   "train_seconds": round(output.metrics.get("train_runtime", 0.0), 1),
                   "total_seconds": round(time.perf_counter() - started, 1)}
        rows_json = json.dumps([[r.question, r.source, r.unanswered] for r in train], ensure_ascii=False)
        record = {"kind": "grounded", "train_rows": len(train), "test_rows": len(test), "skipped": skipped,
                  "train_unanswered": sum(r.unanswered for r in train),
                  "sha256": hashlib.sha256(rows_json.encode()).hexdigest()}
        # Under the names the other kinds' configs use (`models show` reads them).
        config = {"num_train_epochs": o.epochs, "max_steps": o.steps, "learning_rate": o.learning_rate,
                  "per_device_train_batch_size": o.batch_size, "max_length": o.max_length, "lora_r": o.lora_r,
                  "lora_alpha": 2 * o.lora_r, "test_fraction": o.test_fraction, "seed": o.seed, "limit": o.limit,
                  "max_false_abstention": o.max_false_abstention, "extra": o.extra}
        version = registry.register(
            staging, kind=ANSWERABILITY_KIND, base_model=loaded.model_id,
            base_fingerprint=loaded.fingerprint, parent=BASE_VERSION, data=record,
            config=json.loads(json.dumps(config, default=str)), metrics=metrics)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    tracker.end()
    log.info("Registered answerability head %s in %.0f s", version.name, time.perf_counter() - started)
    return version


#: Under this AUC a head barely tells the two kinds of question apart: its reports say so.
WEAK_AUC = 0.55


def weak(auc_value: float | None) -> list[str]:
    """The warning a report adds for a head that barely tells the questions apart."""
    if auc_value is None or auc_value >= WEAK_AUC:
        return []
    return [f"  An AUC of {auc_value:.2f} barely tells the questions apart: the head may cost answers "
            "without catching unanswerable questions. Train it on more questions, or leave it out "
            "(ASSISTANT_ANSWERS__ANSWERABILITY=off)."]


def report(version: Version) -> list[str]:
    """What ``assistant train answerability`` prints of a trained head."""
    a = version.metrics["answerability"]
    lines = [
        f"Registered {version.name}: an answerability head ({version.data['train_rows']} training "
        f"questions, {version.metrics['train_seconds']:.0f} s of training).",
        f"  On {a['heldout']} held-out questions ({a['heldout_unanswered']} not answered by their "
        f"sources): AUC {a['auc']}; at its threshold {a['threshold']:.3g} it abstains on "
        f"{a['abstention']:.0%} of those, wrongly on {a['false_abstention']:.0%} of the answered ones "
        f"(at most {a['max_false_abstention']:.0%} allowed).",
        "  by threshold (abstention / false abstention): " + ", ".join(
            f"{r['threshold']:g}: {r['abstention']:.0%}/{r['false_abstention']:.0%}" for r in a["curve"]),
        *weak(a["auc"]),
        "Quoted mode uses the newest head (setting answers.answerability); `models calibrate "
        f"{version.name} --grounded-file FILE` chooses its threshold on questions about your documents "
        "and `assistant eval --answer-mode quoted` measures answers with it.",
    ]
    return lines


__all__ = ["HeadOptions", "Row", "auc", "choose", "judged", "report", "rows", "split", "train_head", "weak"]
