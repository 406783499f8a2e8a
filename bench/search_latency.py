"""Search latency (p50/p95) at 10k and 100k chunks: FAISS flat / HNSW / IVF, FTS5, hybrid.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/search_latency.py [--sizes 10000 100000 --queries 200]

The corpus is synthetic. For each size N a fresh data dir gets N chunks inserted through
``DocumentStore.add`` (documents of ``--doc-chunks`` chunks, one transaction each). Chunk
text is 60-120 words drawn from a Zipf-like vocabulary (~20k made-up words with some real
English words mixed in, "the", "of", ... at the top ranks), so that the FTS5 index looks
like one built over prose. Vectors are random unit float32 (384-d); the embedding model
is not run over the corpus (far too slow on a small CPU). Each index kind is built with
``VectorIndex.rebuild(store.iter_vectors())``, as ``assistant index rebuild`` does.

Queries are 3-6 words from the same Zipf distribution (so, like real questions, most
contain a common word) with a precomputed random unit vector each, so the model's time is
not part of any index latency. Timed one query at a time after a short warm-up, the paths
taking turns on each query so that load from other processes hits them all alike:

* dense: ``VectorIndex.search(vector, k)`` for each kind (FAISS plus the thin wrapper),
  and each again with FAISS limited to one OpenMP thread (the app keeps FAISS's default);
* lexical: ``DocumentStore.lexical_search(query, k)`` (FTS5 bm25);
* hybrid: the real ``Retriever.search(query, mode='hybrid')`` over the flat index, with an
  embedder stub whose ``encode`` returns the precomputed vector (a dict lookup), so the
  number is everything a search costs except the model's encode;
* encode: the real ``Embedder.encode([query])`` on short queries, reported on its own: a
  real search pays it once, on top of the hybrid number.

Recall@10 of HNSW and IVF is measured against flat (exact) on the same queries, and
speedups are ratios to flat measured in the same run. Uniformly random vectors have no
cluster structure, which is the hardest case for approximate indexes: their recall here
is a lower bound on what real embeddings get (``--vectors clustered`` shows the other side).
"""

from __future__ import annotations

from assistant.cpu import report as cpu_report
import argparse
import hashlib
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import faiss
import numpy as np
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from assistant.bootstrap import open_database
from assistant.documents.chunking import Chunk
from assistant.config import RetrievalSettings, Settings
from assistant.documents.index import VectorIndex
from assistant.documents.retrieval import Retriever
from assistant.storage.documents import DocumentStore

KINDS = ("flat", "hnsw", "ivf")
DIM = 384
WARMUP = 10

# Real words: function words take the top Zipf ranks (as in English prose); the rest are
# scattered through the vocabulary so that some query words are real, some rare.
FUNCTION_WORDS = (
    "the of and to in is that for it as was with be by on not he this are or his from at "
    "which but have an they you were her she there been one all we their has would when"
).split()
CONTENT_WORDS = (
    "invoice contract payment termination clause retrieval index search document report "
    "policy customer account server database network error latency memory battery engine "
    "river mountain history science music language market energy health school garden "
    "kitchen window letter summer winter morning village station harbour bridge castle "
    "doctor teacher student project budget meeting schedule delivery warranty license"
).split()


def make_vocabulary(size: int, rng: np.random.Generator) -> np.ndarray:
    """``size`` words, most made up, ordered by Zipf rank (index 0 = most frequent)."""
    onsets = list("bcdfghjklmnprstvwz") + ["br", "ch", "dr", "gl", "kr", "pl", "sh", "st", "th", "tr"]
    vowels = ["a", "e", "i", "o", "u", "ai", "ou", "ea"]
    codas = ["", "", "", "n", "r", "s", "l", "k", "m"]
    reserved = set(FUNCTION_WORDS) | set(CONTENT_WORDS)
    made_up: dict[str, None] = {}
    while len(made_up) < size - len(reserved):
        n_syll = int(rng.integers(2, 5))
        w = "".join(
            onsets[rng.integers(len(onsets))] + vowels[rng.integers(len(vowels))]
            + codas[rng.integers(len(codas))]
            for _ in range(n_syll)
        )
        if w not in reserved:
            made_up[w] = None
    words = list(FUNCTION_WORDS) + list(made_up)
    for w, pos in zip(CONTENT_WORDS, rng.integers(len(FUNCTION_WORDS), len(words), len(CONTENT_WORDS)),
                      strict=True):
        words.insert(int(pos), w)
    return np.array(words, dtype=object)


class Corpus:
    """Random chunk texts, vectors and queries, reproducible from a seed."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.rng = np.random.default_rng(args.seed)
        self.vocab = make_vocabulary(args.vocab, self.rng)
        weights = 1.0 / np.arange(1, len(self.vocab) + 1) ** args.zipf_s
        self.cdf = np.cumsum(weights / weights.sum())
        self.clustered = args.vectors == "clustered"
        if self.clustered:  # topics: chunks and queries lie near one of a few hundred centres
            self.centres = self._unit(self.rng.standard_normal((256, DIM), dtype=np.float32))

    def _unit(self, v: np.ndarray) -> np.ndarray:
        return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)

    def words(self, n: int) -> np.ndarray:
        return self.vocab[np.searchsorted(self.cdf, self.rng.random(n), side="right").clip(
            max=len(self.vocab) - 1)]

    def vectors(self, n: int) -> np.ndarray:
        noise = self.rng.standard_normal((n, DIM), dtype=np.float32)
        if not self.clustered:
            return self._unit(noise)
        centres = self.centres[self.rng.integers(len(self.centres), size=n)]
        return self._unit(centres + 0.06 * noise)  # ~ cosine 0.6-0.8 to the centre

    def texts(self, n: int, lo: int, hi: int) -> list[str]:
        lengths = self.rng.integers(lo, hi + 1, size=n)
        flat = self.words(int(lengths.sum())).tolist()
        out, at = [], 0
        for length in lengths:
            out.append(" ".join(flat[at : at + length]))
            at += length
        return out


class PrecomputedEmbedder:
    """Stands in for :class:`Embedder` inside ``Retriever``: ``encode`` looks up the
    query's precomputed vector, so the timed hybrid path excludes only the model."""

    def __init__(self, vectors: dict[str, np.ndarray], name: str) -> None:
        self.vectors, self.name, self.dim = vectors, name, DIM

    def encode(self, texts, batch_size: int = 64, progress: bool = False) -> np.ndarray:  # noqa: ANN001
        return np.stack([self.vectors[t] for t in texts])


def timed(fn, items) -> tuple[np.ndarray, list]:  # noqa: ANN001
    """Per-call latencies in ms (after WARMUP untimed calls) and the results."""
    for item in items[:WARMUP]:
        fn(item)
    times, results = [], []
    for item in items:
        t0 = time.perf_counter()
        r = fn(item)
        times.append((time.perf_counter() - t0) * 1000)
        results.append(r)
    return np.array(times), results


def one_thread(fn: Callable[[int], object], threads: int) -> Callable[[int], object]:
    def run(i: int) -> object:
        faiss.omp_set_num_threads(1)
        try:
            return fn(i)
        finally:
            faiss.omp_set_num_threads(threads)

    return run


def interleaved(paths: dict[str, Callable[[int], object]], nq: int) -> dict[str, tuple[np.ndarray, list]]:
    """Latency in ms and result of every path on every query. For each query the paths
    take turns (in a rotating order), so that load from elsewhere on the machine falls on
    all of them alike and the ratios between them stay fair."""
    names = list(paths)
    for i in range(min(WARMUP, nq)):
        for name in names:
            paths[name](i)
    times = {name: np.zeros(nq) for name in names}
    results: dict[str, list] = {name: [None] * nq for name in names}
    for i in range(nq):
        shift = i % len(names)
        for name in names[shift:] + names[:shift]:
            t0 = time.perf_counter()
            results[name][i] = paths[name](i)
            times[name][i] = (time.perf_counter() - t0) * 1000
    return {name: (times[name], results[name]) for name in names}


def pct(times: np.ndarray) -> tuple[float, float]:
    p50, p95 = np.percentile(times, [50, 95])
    return float(p50), float(p95)


def describe(index: VectorIndex) -> str:
    inner = faiss.downcast_index(index._index)
    while isinstance(inner, faiss.IndexIDMap):  # IndexIDMap2 subclasses it
        inner = faiss.downcast_index(inner.index)
    if index.kind == "hnsw":
        return f"M=32, efSearch={inner.hnsw.efSearch}"
    if index.kind == "ivf":
        return f"nlist={inner.nlist}, nprobe={inner.nprobe}"
    return "exact"


def run_size(n: int, corpus: Corpus, queries: list[str], qvecs: np.ndarray,
             args: argparse.Namespace) -> list[str]:
    lines: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(data_dir=Path(tmp))
        db = open_database(settings)
        store = DocumentStore(db)

        gen_s = insert_s = 0.0
        docs = -(-n // args.doc_chunks)
        with tqdm(total=n, unit="chunk", desc=f"insert {n:,}", mininterval=1.0) as bar:
            for d in range(docs):
                m = min(args.doc_chunks, n - d * args.doc_chunks)
                t0 = time.perf_counter()
                texts = corpus.texts(m, 60, 120)
                vecs = corpus.vectors(m)
                chunks = [Chunk(position=i, text=t, token_count=t.count(" ") + 1)
                          for i, t in enumerate(texts)]
                t1 = time.perf_counter()
                store.add(
                    name=f"synthetic-{d:04d}.txt", kind="txt",
                    content_hash=hashlib.sha256(f"{n}-{d}".encode()).hexdigest(),
                    size_bytes=sum(len(t) for t in texts), embed_model="synthetic",
                    chunks=chunks, vectors=vecs,
                )
                t2 = time.perf_counter()
                gen_s, insert_s = gen_s + t1 - t0, insert_s + t2 - t1
                bar.update(m)
        assert store.chunk_count() == n

        indexes: dict[str, VectorIndex] = {}
        build_s: dict[str, float] = {}
        for kind in args.kinds:
            t0 = time.perf_counter()
            index = VectorIndex(settings.index_dir, DIM, kind, "synthetic")
            index.rebuild(store.iter_vectors())
            build_s[kind] = time.perf_counter() - t0
            indexes[kind] = index

        flat = indexes.get("flat")
        paths: dict[str, Callable[[int], object]] = {
            kind: (lambda i, index=index: index.search(qvecs[i], args.k))
            for kind, index in indexes.items()
        }
        threads = faiss.omp_get_max_threads()
        if threads > 1:  # each kind again with FAISS limited to one OpenMP thread
            for kind in indexes:
                paths[f"{kind}@1"] = one_thread(paths[kind], threads)
        paths["lexical"] = lambda i: store.lexical_search(queries[i], args.k)
        retrieval = RetrievalSettings(candidates=args.k)
        if flat is not None:
            embedder = PrecomputedEmbedder(dict(zip(queries, qvecs, strict=True)), "synthetic")
            retriever = Retriever(store, embedder, flat, retrieval)  # type: ignore[arg-type]
            paths["hybrid"] = lambda i: retriever.search(queries[i], mode="hybrid")
        measured = interleaved(paths, len(queries))

        rows: list[tuple[str, np.ndarray, str, str]] = []  # name, times, recall, notes
        exact = measured.get("flat")
        for kind in indexes:
            times, results = measured[kind]
            recall = ""
            if exact is not None and kind != "flat":
                r = [len({i for i, _ in a[:10]} & {i for i, _ in b[:10]}) / 10
                     for a, b in zip(results, exact[1], strict=True)]
                recall = f"{np.mean(r):.3f}"
            one = measured.get(f"{kind}@1")
            rows.append((f"dense {kind} ({describe(indexes[kind])})", times, recall,
                         (f"{np.median(one[0]):9.3f}" if one else "") + f"  build {build_s[kind]:.1f}s"))
        lex_times, lex_results = measured["lexical"]
        common = set(corpus.vocab[:50].tolist())
        rare = np.array([not (set(q.split()) & common) for q in queries])
        note = f"{np.mean([len(r) for r in lex_results]):.0f} hits/query"
        if rare.any():
            note += (f"; p50 {np.median(lex_times[rare]):.2f} ms on the {rare.sum()} queries "
                     "without a top-50 word")
        rows.append((f"lexical FTS5 bm25, k={args.k}", lex_times, "", " " * 11 + note))
        if "hybrid" in measured:
            rows.append((f"hybrid Retriever.search, flat, top_k={retrieval.top_k}",
                         measured["hybrid"][0], "", " " * 11 + "all but the model's encode"))
        db.dispose()

    flat_p50 = pct(exact[0])[0] if exact is not None else None
    lines.append(
        f"N = {n:,} chunks in {docs} documents; insert via DocumentStore.add "
        f"{n / insert_s:,.0f} chunks/s ({insert_s:.1f}s, + {gen_s:.1f}s generating)"
    )
    lines.append(f"  {'path':44} {'p50 ms':>8} {'p95 ms':>8} {'flat/p50':>9} {'rec@10':>7} {'1-thr p50':>9}  notes")
    for name, times, recall, note in rows:
        p50, p95 = pct(times)
        ratio = f"x{flat_p50 / p50:.2f}" if flat_p50 else ""
        lines.append(f"  {name:44} {p50:8.3f} {p95:8.3f} {ratio:>9} {recall:>7} {note}")
    return lines


def encode_latency(queries: list[str]) -> str:
    from assistant.documents.embedding import Embedder

    t0 = time.perf_counter()
    embedder = Embedder(RetrievalSettings().embedding_model)
    load_s = time.perf_counter() - t0
    times, _ = timed(lambda q: embedder.encode([q]), queries)
    p50, p95 = pct(times)
    return (f"encode: Embedder.encode([query]) ({embedder.name}, torch threads "
            f"{_torch_threads()}), {len(queries)} short queries: p50 {p50:.2f} ms, "
            f"p95 {p95:.2f} ms (model load {load_s:.1f}s, not counted)")


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--encode-queries", type=int, default=50, help="0 skips the model")
    ap.add_argument("--k", type=int, default=50, help="hits per search (and hybrid candidates)")
    ap.add_argument("--doc-chunks", type=int, default=1000, help="chunks per document (= per add)")
    ap.add_argument("--kinds", nargs="+", choices=KINDS, default=list(KINDS))
    ap.add_argument("--vocab", type=int, default=20_000)
    ap.add_argument("--zipf-s", type=float, default=1.0, help="Zipf exponent of word frequencies")
    ap.add_argument("--vectors", choices=("uniform", "clustered"), default="uniform")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--faiss-threads", type=int, default=0,
                    help="OpenMP threads for FAISS; 0 keeps FAISS's default, as the app does")
    args = ap.parse_args()
    print(cpu_report(), flush=True)  # every figure names its CPU
    if args.faiss_threads:
        faiss.omp_set_num_threads(args.faiss_threads)
    if args.queries <= WARMUP:
        ap.error(f"--queries must be more than the {WARMUP} warm-up queries")

    t_start = time.perf_counter()
    corpus = Corpus(args)
    qrng = np.random.default_rng(args.seed + 1)
    queries = [" ".join(corpus.words(int(qrng.integers(3, 7)))) for _ in range(args.queries)]
    qvecs = corpus.vectors(args.queries)

    out = [
        f"search latency, {args.queries} queries (3-6 Zipf words, s={args.zipf_s}, "
        f"vocabulary {len(corpus.vocab):,}), {args.vectors} random unit vectors ({DIM}-d), "
        f"k={args.k}, one query at a time after {WARMUP} warm-up",
        f"faiss {faiss.__version__}, {faiss.omp_get_max_threads()} OpenMP threads, "
        f"{os.cpu_count()} CPUs, load average at start {os.getloadavg()[0]:.2f}; "
        f"e.g. query: {queries[0]!r}",
    ]
    for n in args.sizes:
        out.append("")
        out.extend(run_size(n, corpus, queries, qvecs, args))
    out.append("")
    out.append("flat/p50 = flat's p50 over this row's p50 (same run; > 1 is faster than exact). "
               "rec@10 = overlap of the top 10 with flat's top 10.\n"
               "1-thr p50 = the same search with FAISS limited to one OpenMP thread "
               "(the app keeps FAISS's default, one thread per core).")
    if args.encode_queries:
        short = [" ".join(corpus.words(int(qrng.integers(3, 7)))) for _ in range(args.encode_queries)]
        out.append(encode_latency(short))
        out.append("a real hybrid search pays the encode once on top of the hybrid row.")
    out.append(f"total wall time {time.perf_counter() - t_start:.0f}s "
               f"(load average at end {os.getloadavg()[0]:.2f})")
    print("\n".join(out))


if __name__ == "__main__":
    main()
