"""Retrieval quality and ingest throughput on SQuAD 2.0 (two Wikipedia articles).

    HF_HUB_OFFLINE=1 .venv/bin/python bench/retrieval.py [--chunk-tokens 200 --overlap 40] [--postgres]

Each article goes in as one document through the product's own pipeline (parse, chunk,
embed, store, index). Every answerable question is asked; a hit is a retrieved chunk that
contains one of the question's gold answers. Reported: hit@1, hit@5 and MRR@10 for dense
and hybrid retrieval, beside the reference run in the same process (MiniLM over the
dataset's own paragraphs, exact FAISS search), and ingest chunks/s as a ratio to bare
``SentenceTransformer.encode`` of the same chunks.
"""

from __future__ import annotations

from assistant.cpu import report as cpu_report
import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import faiss

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from assistant.bootstrap import open_database, open_library
from assistant.config import RetrievalSettings, Settings

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "squad2_dev_2_articles.json"


def load_squad(path: Path):  # noqa: ANN201
    data = json.loads(path.read_text())
    articles, questions = [], []
    for art in data["data"]:
        paragraphs = [p["context"] for p in art["paragraphs"]]
        articles.append((art["title"], "\n\n".join(paragraphs), paragraphs))
        for p in art["paragraphs"]:
            for qa in p["qas"]:
                if not qa.get("is_impossible") and qa["answers"]:
                    questions.append((qa["question"], {a["text"] for a in qa["answers"]}))
    return articles, questions


def score(ranked_texts: list[list[str]], questions) -> dict[str, float]:  # noqa: ANN001
    h1 = h5 = mrr = 0.0
    for texts, (_, answers) in zip(ranked_texts, questions, strict=True):
        ranks = [r for r, t in enumerate(texts, start=1) if any(a in t for a in answers)]
        first = ranks[0] if ranks else None
        h1 += first == 1
        h5 += first is not None and first <= 5
        mrr += 1 / first if first else 0
    n = len(questions)
    return {"hit@1": h1 / n, "hit@5": h5 / n, "mrr@10": mrr / n}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--chunk-tokens", type=int, default=RetrievalSettings().chunk_tokens)
    ap.add_argument("--overlap", type=int, default=RetrievalSettings().chunk_overlap)
    ap.add_argument("--postgres", action="store_true",
                    help="also run the product's search on PostgreSQL (a throwaway cluster started "
                         "as the tests start it, tests/pg.py): its full-text search in lexical and "
                         "hybrid mode, beside SQLite's")
    args = ap.parse_args()
    print(cpu_report(), flush=True)  # every figure names its CPU
    articles, questions = load_squad(args.data)

    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(
            data_dir=tmp,
            retrieval=RetrievalSettings(chunk_tokens=args.chunk_tokens, chunk_overlap=args.overlap),
        )
        lib = open_library(settings, open_database(settings))
        lib.embedder.encode(["warm-up"])

        t0 = time.perf_counter()
        for title, text, _ in articles:
            result = lib.ingestor.ingest_bytes(f"{title}.txt", text.encode())
            assert result.ok, result.describe()
        ingest_s = time.perf_counter() - t0
        chunks = [c.text for d in lib.store.list_documents() for c in lib.store.document_chunks(d.id)]
        t0 = time.perf_counter()
        lib.embedder.encode(chunks)
        encode_s = time.perf_counter() - t0

        rows = {}
        for mode in ("dense", "hybrid") + (("lexical",) if args.postgres else ()):
            ranked = [[h.text for h in lib.retriever.search(q, k=10, mode=mode)] for q, _ in questions]
            rows[f"product, {mode}"] = score(ranked, questions)
        if args.postgres:
            rows.update(postgres_rows(articles, questions, settings, Path(tmp)))

        # Reference: MiniLM over the dataset's own paragraphs, exact search.
        paragraphs = [p for _, _, ps in articles for p in ps]
        index = faiss.IndexFlatIP(lib.embedder.dim)
        index.add(lib.embedder.encode(paragraphs))
        _, ids = index.search(lib.embedder.encode([q for q, _ in questions]), 10)
        rows["reference: paragraphs, dense"] = score(
            [[paragraphs[i] for i in row] for row in ids], questions
        )

    print(f"{len(questions)} answerable questions, {len(articles)} documents, "
          f"{len(chunks)} chunks of <= {args.chunk_tokens} tokens (overlap {args.overlap}), "
          f"{len(paragraphs)} reference paragraphs")
    print(f"{'':32} hit@1   hit@5   mrr@10")
    for name, r in rows.items():
        print(f"{name:32} {r['hit@1']:.3f}   {r['hit@5']:.3f}   {r['mrr@10']:.3f}")
    print(f"ingest: {len(chunks) / ingest_s:.1f} chunks/s end to end; bare encode "
          f"{len(chunks) / encode_s:.1f} chunks/s; ratio {encode_s / ingest_s:.3f} (target >= 0.8)")


def postgres_rows(articles, questions, sqlite_settings: Settings, tmp: Path) -> dict[str, dict[str, float]]:  # noqa: ANN001
    """The same ingest and questions on a fresh PostgreSQL database: lexical and hybrid."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests import pg

    reason = pg.missing_reason()
    if reason:
        sys.exit(f"--postgres: {reason}")
    cluster = pg.start_cluster()
    try:
        url, _ = pg.Databases(cluster).fresh(migrated=False)
        settings = sqlite_settings.model_copy(update={"data_dir": tmp / "pg", "database_url": url})
        db = open_database(settings)
        lib = open_library(settings, db)
        for title, text, _ in articles:
            assert lib.ingestor.ingest_bytes(f"{title}.txt", text.encode()).ok
        rows = {}
        for mode in ("lexical", "hybrid"):
            ranked = [[h.text for h in lib.retriever.search(q, k=10, mode=mode)] for q, _ in questions]
            rows[f"product on PostgreSQL, {mode}"] = score(ranked, questions)
        db.dispose()
        return rows
    finally:
        cluster.remove()


if __name__ == "__main__":
    main()
