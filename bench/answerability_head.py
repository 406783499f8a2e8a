"""An answerability head: the answering model fine-tuned to tell SQuAD 2.0's unanswerable
questions from answerable ones, trained on one article's questions, measured on another's.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/answerability_head.py
        [--train-title Computational_complexity_theory] [--eval-title Normans] [--epochs 3]
        [--file squad2_dev_2_articles.json] [--out scores.json]

The model (``ASSISTANT_MODEL``, the embedded SmolLM2-135M by default) gets a fresh one-output
head and a LoRA adapter (rank 16 on every projection), as ``assistant train reward`` builds a
reward model (:func:`assistant.engines.models.load_sequence_classifier`), and learns, from
"Text: <paragraph>\\nQuestion: <question>" (at most 384 tokens), whether the question is
unanswerable (binary cross-entropy; batches of 8, AdamW at 2e-4). After each epoch it scores
the other article's questions and prints: the AUC (0.5 is chance), the abstention on
unanswerable questions at at most 20% false abstention in hindsight, and the same with the
threshold chosen as ``assistant models calibrate`` would, on the paragraphs ``data import
squad --calibration`` leaves for calibration, measured on the other paragraphs. Its
companion ``bench/answerability.py`` scores the signals the product already has.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BATCH = 8
MAX_TOKENS = 384


def examples(path: Path, title: str) -> list[dict]:
    """The article's questions: the text the head reads, unanswerable or not, and whether its
    paragraph is one left for calibration."""
    from alignment.squad import SquadQuestion, calibration_paragraph

    data = json.loads(path.read_text())["data"]
    out = []
    for article in (a for a in data if a["title"] == title):
        for p in article["paragraphs"]:
            for q in p["qas"]:
                squad = SquadQuestion(q["id"], title, q["question"], p["context"], (), (),
                                      bool(q.get("is_impossible")))
                out.append({"text": f"Text: {p['context']}\nQuestion: {q['question']}",
                            "unanswerable": squad.impossible, "calibration": calibration_paragraph(squad)})
    if not out:
        raise SystemExit(f"{path} has no article titled {title!r}")
    return out


def measured(scores: list[float], rows: list[dict]) -> dict:
    """AUC, and abstention / false abstention in hindsight and with the threshold chosen on the
    calibration paragraphs (measured on the others), by :mod:`bench.answerability`'s rules."""
    from bench.answerability import auc, rates, threshold

    scored = [dict(r, head=s) for s, r in zip(scores, rows)]
    calib = [r for r in scored if r["calibration"]]
    rest = [r for r in scored if not r["calibration"]]
    return {"auc": round(auc(scored, "head"), 3), "hindsight": rates(scored, "head", threshold(scored, "head")),
            "calibrated": rates(rest, "head", threshold(calib, "head")), "calibration_questions": len(calib),
            "other_questions": len(rest)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--file", type=Path, default=None)
    parser.add_argument("--train-title", default="Computational_complexity_theory")
    parser.add_argument("--eval-title", default="Normans")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--limit", type=int, default=None, help="At most N training questions.")
    parser.add_argument("--out", type=Path, default=None, help="Write each epoch's scores as JSON.")
    args = parser.parse_args()

    import torch
    from peft import LoraConfig, get_peft_model

    from assistant.engines.models import load_sequence_classifier
    from assistant.config import get_settings
    from assistant.cpu import report as cpu_report
    from assistant.engines.models import load_model
    from bench.answerability import MAX_FALSE_ABSTENTION, default_file

    print(cpu_report(), flush=True)
    path = args.file or default_file()
    train = examples(path, args.train_title)[: args.limit]
    test = examples(path, args.eval_title)
    torch.manual_seed(0)
    shuffle = random.Random(0)
    loaded = load_model(get_settings(), purpose="training")
    tokenizer = loaded.tokenizer
    tokenizer.padding_side = "left"
    model = get_peft_model(load_sequence_classifier(loaded), LoraConfig(
        task_type="SEQ_CLS", r=16, lora_alpha=32, lora_dropout=0.05,
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-4)

    def logits(rows: list[dict]) -> torch.Tensor:
        enc = tokenizer([r["text"] for r in rows], return_tensors="pt", padding=True, truncation=True,
                        max_length=MAX_TOKENS).to(model.device)
        return model(**enc).logits[:, 0].float()

    print(f"{len(train)} training questions ({args.train_title}), {len(test)} to score "
          f"({args.eval_title}); {loaded.dtype}", flush=True)
    started, epochs = time.perf_counter(), []
    for epoch in range(1, args.epochs + 1):
        shuffle.shuffle(train)
        model.train()
        for k in range(0, len(train), BATCH):
            batch = train[k:k + BATCH]
            target = torch.tensor([float(r["unanswerable"]) for r in batch], device=model.device)
            torch.nn.functional.binary_cross_entropy_with_logits(logits(batch), target).backward()
            optimizer.step()
            optimizer.zero_grad()
        model.eval()
        with torch.no_grad():
            scores = [s for k in range(0, len(test), 16) for s in logits(test[k:k + 16]).tolist()]
        m = measured(scores, test)
        epochs.append({"epoch": epoch, **m, "scores": scores})
        print(f"epoch {epoch} ({time.perf_counter() - started:.0f} s): AUC {m['auc']:.3f}; abstention / false "
              f"abstention at <= {MAX_FALSE_ABSTENTION:.0%} false: in hindsight {m['hindsight'][0]:.1%} / "
              f"{m['hindsight'][1]:.1%}; threshold chosen on the {m['calibration_questions']} calibration "
              f"questions, on the other {m['other_questions']}: {m['calibrated'][0]:.1%} / "
              f"{m['calibrated'][1]:.1%}", flush=True)
    if args.out:
        args.out.write_text(json.dumps({"train": args.train_title, "eval": args.eval_title,
                                        "unanswerable": [r["unanswerable"] for r in test],
                                        "calibration": [r["calibration"] for r in test], "epochs": epochs}))


if __name__ == "__main__":
    main()
