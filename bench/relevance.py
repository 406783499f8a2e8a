"""Does a source enter the prompt only when it is relevant? The relevance gate on SQuAD 2.0.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/relevance.py [--data FILE] [--threshold 0.3]

The two articles of the SQuAD 2.0 dev file go in as two documents through the product's
own pipeline. Then, with the gate (``Retriever.relevant``, the chat's search) at each
threshold of a sweep:

* **off-topic**: every question of one article (answerable or not) asked with only the
  *other* article to search (the chat's document choice): the share that gets no source
  at all (higher is better; the chunks are about something else);
* **in-article**: every answerable question asked of the whole library: hit@1 and hit@5
  (a hit: a chunk that passes the gate and holds a gold answer), beside the ungated
  ranking (threshold 0: what the chat did before);
* **small talk**: a few questions no document answers ("What is 2 plus 2?") asked beside
  both articles and a bakery handbook: the share that gets no source.

The calibration rule: the threshold with the fewest errors, an error being an off-topic
question that gets a source or an in-article question whose answer-holding chunk (top 5)
the gate turns away. It is chosen on each article and reported on the other (so that the
figures are not the ones it was fitted to), and on both pooled (the default setting).
"""

from __future__ import annotations

from assistant.cpu import report as cpu_report
import argparse
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from assistant.bootstrap import open_database, open_library
from assistant.config import RetrievalSettings, Settings

SHARED = Path(os.environ.get("ASSISTANT_SHARED_DATA",
                             Path(__file__).resolve().parents[2] / "shared" / "data"))
DATA = SHARED / "squad2_dev_2_articles.json"
THRESHOLDS = [0.0] + [round(0.10 + 0.02 * i, 2) for i in range(16)]  # 0, 0.10 .. 0.40

HANDBOOK = """Sunrise Bakery staff handbook.
Opening hours: the shop opens at 6:30 and closes at 18:00, Monday to Saturday.
Bread: sourdough loaves are shaped the evening before and proofed overnight in the cold room.
Every baker washes their hands before touching dough and wears a hair net in the kitchen.
Holidays: ask the manager at least two weeks ahead; December is the busiest month.
Allergens: nut products are made on Thursdays only, and labelled in red."""

SMALL_TALK = [
    "What is 2 plus 2?",
    "Hello! How are you today?",
    "Write a haiku about autumn leaves.",
    "What is the capital of France?",
    "Can you tell me a joke?",
    "How do I reverse a list in Python?",
    "Translate 'good morning' into Spanish.",
    "What is the boiling point of water?",
]


def load(path: Path):  # noqa: ANN201
    import json

    data = json.loads(path.read_text())
    articles = []
    for art in data["data"]:
        text = "\n\n".join(p["context"] for p in art["paragraphs"])
        qas = [(qa["question"], {a["text"] for a in qa["answers"]} if not qa.get("is_impossible") else set())
               for p in art["paragraphs"] for qa in p["qas"]]
        articles.append((art["title"], text, qas))
    return articles


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--threshold", type=float, default=RetrievalSettings().min_similarity,
                    help="the threshold the summary line reports (default: the setting's)")
    args = ap.parse_args()
    print(cpu_report(), flush=True)  # every figure names its CPU
    if not args.data.is_file():
        ap.error(f"{args.data} is missing: pass --data or set ASSISTANT_SHARED_DATA")
    articles = load(args.data)
    thresholds = sorted(set(THRESHOLDS) | {args.threshold})

    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(data_dir=tmp)
        lib = open_library(settings, open_database(settings))
        ids = {}
        for title, text, _ in articles:
            result = lib.ingestor.ingest_bytes(f"{title}.txt", text.encode())
            assert result.ok, result.describe()
            ids[title] = result.document.id
        k = settings.retrieval.top_k
        ungated = dict(min_similarity=0.0)

        per_article = {}
        for title, _, qas in articles:
            other = [i for t, i in ids.items() if t != title]
            # Off-topic: the best similarity among the k chunks the chat would show.
            off = [lib.retriever.relevant(q, k=k, document_ids=other, **ungated).best_similarity
                   for q, _ in qas]
            # In-article: each of the top 5 chunks, its similarity and whether it holds an answer.
            ranked = []
            for q, answers in qas:
                if answers:
                    hits = lib.retriever.relevant(q, k=5, **ungated).hits
                    ranked.append([(h.similarity, any(a in h.text for a in answers)) for h in hits])
            per_article[title] = (off, ranked)

        lib.ingestor.ingest_bytes("Sunrise bakery handbook.txt", HANDBOOK.encode())
        talk = [lib.retriever.relevant(q, k=k, **ungated).best_similarity for q in SMALL_TALK]

    def row(off: list[float], ranked: list[list[tuple[float, bool]]], t: float) -> tuple[float, float, float, float]:
        no_source = sum(b < t for b in off) / len(off) if t > 0 else 0.0
        h1 = sum(bool(r) and r[0][1] and r[0][0] >= t for r in ranked) / len(ranked)
        h5 = sum(any(ok and s >= t for s, ok in r) for r in ranked) / len(ranked)
        kept = sum(any(s >= t for s, _ in r[:k]) for r in ranked) / len(ranked)
        return no_source, h1, h5, kept

    print(f"SQuAD 2.0 dev, {len(articles)} articles; top_k {k}; embedded MiniLM cosine")
    print("off-topic no-source: share of one article's questions (all) asked with only the other "
          "article that get no source; hit@1/hit@5: answerable in-article questions, gated; "
          "with-source: share of in-article questions that keep at least one source")
    for title, (off, ranked) in per_article.items():
        print(f"\n{title}: {len(off)} questions off-topic, {len(ranked)} answerable in-article")
        print(f"{'threshold':>10} {'off-topic no-source':>20} {'hit@1':>7} {'hit@5':>7} {'with-source':>12}")
        for t in thresholds:
            no_source, h1, h5, kept = row(off, ranked, t)
            print(f"{t:>10.2f} {no_source:>20.3f} {h1:>7.3f} {h5:>7.3f} {kept:>12.3f}")
    def errors(off, ranked, t: float) -> int:  # noqa: ANN001
        no_source, _, h5, _ = row(off, ranked, t)
        _, _, h5_0, _ = row(off, ranked, 0.0)
        return round((1 - no_source) * len(off) + (h5_0 - h5) * len(ranked))

    grid = [t for t in thresholds if t > 0]
    print()
    for title, (off, ranked) in per_article.items():
        best = min(grid, key=lambda t: (errors(off, ranked, t), t))
        for other, (o2, r2) in per_article.items():
            if other != title:
                no_source, _, h5, _ = row(o2, r2, best)
                _, _, h5_0, _ = row(o2, r2, 0.0)
                print(f"calibrated on {title}: {best:.2f} ({errors(off, ranked, best)} errors); "
                      f"on {other}: off-topic no-source {no_source:.3f}, hit@5 {h5_0:.3f} -> {h5:.3f}")
    off = [b for o, _ in per_article.values() for b in o]
    ranked = [r for _, rk in per_article.values() for r in rk]
    best = min(grid, key=lambda t: (errors(off, ranked, t), t))
    print(f"calibrated on both: {best:.2f} ({errors(off, ranked, best)} errors of "
          f"{len(off) + len(ranked)} questions)")
    t = args.threshold
    no_source, h1, h5, kept = row(off, ranked, t)
    _, h1_0, h5_0, _ = row(off, ranked, 0.0)
    talk_none = sum(b < t for b in talk) / len(talk)
    print(f"\nboth articles at threshold {t:.2f}: off-topic questions with no source {no_source:.3f} "
          f"({len(off)}); in-article hit@1 {h1_0:.3f} -> {h1:.3f}, hit@5 {h5_0:.3f} -> {h5:.3f} "
          f"({len(ranked)}); small talk beside the handbook with no source {talk_none:.3f} "
          f"({len(talk)}; best similarities {', '.join(f'{b:.2f}' for b in talk)})")


if __name__ == "__main__":
    main()
