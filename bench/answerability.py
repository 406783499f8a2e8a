"""Can anything the product has tell an unanswerable question from an answerable one?

    HF_HUB_OFFLINE=1 .venv/bin/python bench/answerability.py [--file squad2_dev_2_articles.json]
        [--no-model] [--out answerability.json]

Every question of each SQuAD 2.0 article is read against its own paragraph (retrieval puts
it among the sources for ~97% of questions, so this measures the reading, not the search),
and scored by each signal the product could abstain on (a higher score: abstain):

- ``similarity``: how unlike the question its paragraph's best sentence is (1 - the MiniLM
  cosine of :func:`assistant.chat.evidence.best_for_question`: the relevance gate's signal);
- ``cover``: the share of the question's words that best sentence lacks;
- ``pmi``: how little reading the paragraph makes the question more likely under the
  answering model (``ASSISTANT_MODEL``, through transformers: minus the mean pointwise mutual
  information of the question's tokens with the paragraph; ``--no-model`` skips it);
- ``classifier``: a logistic regression on MiniLM features of the question and that sentence,
  trained on the other article's questions.

Printed, per article and signal: the ROC AUC (0.5 is chance; the share of (unanswerable,
answerable) pairs the signal orders right) and the abstention on unanswerable questions at
at most 20% false abstention, with the threshold chosen on the other article (what a user
gets: it is chosen elsewhere) and in hindsight. Reaching 40% abstention at 20% false
abstention needs an AUC of about 0.7. The model's own abstention (its probability) is
measured on the chat's path by ``assistant eval --answer-mode quoted`` (its trade-off curve)
and ``assistant models calibrate``; this bench says whether another signal could do better.
The shared data file is found as the tests find it unless ``--file`` is given.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable

    import torch

    from assistant.documents.embedding import Embedder

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MAX_FALSE_ABSTENTION = 0.2
SIGNALS = ("similarity", "cover", "pmi", "classifier")


def default_file() -> Path:
    from tests.shared_data import SHARED_DATA

    return SHARED_DATA / "squad2_dev_2_articles.json"


def questions(path: Path) -> list[dict]:
    """Each question with its article, paragraph and whether it is unanswerable."""
    data = json.loads(path.read_text())["data"]
    return [{"title": a["title"], "context": p["context"], "question": q["question"],
             "unanswerable": bool(q.get("is_impossible"))}
            for a in data for p in a["paragraphs"] for q in p["qas"]]


def reading_features(rows: list[dict], embedder: Embedder) -> list[list[float]]:
    """Sets each row's ``similarity`` and ``cover`` scores; returns the classifier's features
    (the question's and best sentence's vectors multiplied and subtracted, and their cosine)."""
    import numpy as np

    from assistant.chat.answer_modes import similarity_of
    from assistant.chat.evidence import best_for_question

    similarity = similarity_of(embedder)
    features = []
    for r in rows:
        best = best_for_question(r["question"], (r["context"],), similarity)
        sentence = best.text if best else r["context"]
        r["similarity"] = 1 - (best.similarity if best else 0.0)
        r["cover"] = 1 - (best.cover if best else 0.0)
        q, s = embedder.encode([r["question"], sentence])
        features.append([*(q * s), *np.abs(q - s), float(q @ s)])
    return features


def pmi_scores(rows: list[dict]) -> None:
    """Sets each row's ``pmi`` score under the answering model (transformers)."""
    import torch

    from assistant.config import get_settings
    from assistant.engines.models import load_model

    loaded = load_model(get_settings())
    model, tokenizer = loaded.model, loaded.tokenizer
    model.eval()
    start_id = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id

    def logps(prefix: list[int], text: list[int]) -> torch.Tensor:
        ids = torch.tensor([prefix + text], device=model.device)
        with torch.no_grad():
            logits = model(ids).logits[0, len(prefix) - 1:-1].float().log_softmax(-1)
        return logits.gather(1, ids[0, len(prefix):, None])[:, 0]

    for r in rows:
        question = tokenizer(" Question: " + r["question"], add_special_tokens=False)["input_ids"]
        context = tokenizer("Text: " + r["context"] + "\n", add_special_tokens=False)["input_ids"]
        r["pmi"] = -float((logps(context, question) - logps([start_id], question)).mean())


def classifier_scores(rows: list[dict], features: list[list[float]]) -> None:
    """Sets each row's ``classifier`` score: the probability of unanswerable from a logistic
    regression trained on the other articles' questions."""
    import torch

    x = torch.tensor(features, dtype=torch.float32)
    y = torch.tensor([float(r["unanswerable"]) for r in rows])
    titles = [r["title"] for r in rows]
    for title in dict.fromkeys(titles):
        train = torch.tensor([t != title for t in titles])
        if train.any():
            p = _logistic(x[train], y[train])(x)
            for k in (~train).nonzero()[:, 0].tolist():
                rows[k]["classifier"] = float(p[k])


def _logistic(x: torch.Tensor, y: torch.Tensor, l2: float = 0.01,
              steps: int = 500) -> Callable[[torch.Tensor], torch.Tensor]:
    """An L2-regularised logistic regression fitted on (x, y): the probability it gives."""
    import torch

    w = torch.zeros(x.shape[1], requires_grad=True)
    b = torch.zeros(1, requires_grad=True)
    optimizer = torch.optim.LBFGS([w, b], max_iter=steps)

    def loss() -> torch.Tensor:
        optimizer.zero_grad()
        value = torch.nn.functional.binary_cross_entropy_with_logits(x @ w + b, y) + l2 * (w * w).sum()
        value.backward()
        return value

    optimizer.step(loss)
    return lambda features: torch.sigmoid(features @ w + b).detach()


def auc(rows: list[dict], signal: str) -> float:
    """The share of (unanswerable, answerable) pairs the signal scores in that order (ties half;
    the product's answerability head is judged by the same rule: alignment.answerability)."""
    from alignment.answerability import auc as pairs_in_order

    found = pairs_in_order([r[signal] for r in rows], [int(r["unanswerable"]) for r in rows])
    return float("nan") if found is None else found


def threshold(rows: list[dict], signal: str) -> float:
    """The lowest score to abstain at whose false abstention is at most the budget."""
    for t in sorted({r[signal] for r in rows}):
        if rates(rows, signal, t)[1] <= MAX_FALSE_ABSTENTION:
            return t
    return float("inf")


def rates(rows: list[dict], signal: str, t: float) -> tuple[float, float]:
    """Abstention on unanswerable and on answerable questions when abstaining at scores >= t."""
    from alignment.answerability import rates as abstentions

    return abstentions([r[signal] for r in rows], [int(r["unanswerable"]) for r in rows], t)


def table(rows: list[dict], signals: list[str]) -> list[dict]:
    out = []
    titles = list(dict.fromkeys(r["title"] for r in rows))
    for title in titles:
        mine = [r for r in rows if r["title"] == title]
        others = [r for r in rows if r["title"] != title]
        for signal in signals:
            elsewhere = rates(mine, signal, threshold(others, signal)) if others else (None, None)
            out.append({"article": title, "signal": signal, "questions": len(mine),
                        "unanswerable": sum(r["unanswerable"] for r in mine), "auc": round(auc(mine, signal), 3),
                        "chosen_elsewhere": elsewhere, "hindsight": rates(mine, signal, threshold(mine, signal))})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--file", type=Path, default=None)
    parser.add_argument("--no-model", action="store_true", help="Skip the model's signal (pmi).")
    parser.add_argument("--out", type=Path, default=None, help="Write the rows and the table as JSON.")
    args = parser.parse_args()

    from assistant.config import get_settings
    from assistant.cpu import report as cpu_report
    from assistant.documents.embedding import Embedder

    print(cpu_report(), flush=True)
    rows = questions(args.file or default_file())
    print(f"{len(rows)} questions, {sum(r['unanswerable'] for r in rows)} unanswerable", flush=True)
    started = time.perf_counter()
    features = reading_features(rows, Embedder(get_settings().retrieval.embedding_model))
    classifier_scores(rows, features)
    if not args.no_model:
        pmi_scores(rows)
    # The classifier needs another article to learn from.
    signals = [s for s in SIGNALS if all(s in r for r in rows)]
    print(f"scored in {time.perf_counter() - started:.0f} s\n")
    result = table(rows, signals)
    print(f"{'article':32} {'signal':11} {'AUC':>5}  abstention / false abstention at <= "
          f"{MAX_FALSE_ABSTENTION:.0%} false: threshold chosen on the other article | in hindsight")
    for r in result:
        una, ans = r["chosen_elsewhere"]
        elsewhere = f"{una:6.1%} / {ans:5.1%}" if una is not None else "   (one article)"
        print(f"{r['article'][:32]:32} {r['signal']:11} {r['auc']:5.3f}  {elsewhere}  | "
              f"{r['hindsight'][0]:6.1%} / {r['hindsight'][1]:5.1%}")
    if args.out:
        args.out.write_text(json.dumps({"rows": rows, "table": result}, indent=1))


if __name__ == "__main__":
    main()
