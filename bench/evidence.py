"""Answer modes measured on SQuAD articles: how often the answer holds a gold answer, cites
the source that holds it, quotes word for word, abstains where it should, and how long it
takes, for free / quoted / extractive answers (assistant.chat.answer_modes).

    HF_HUB_OFFLINE=1 .venv/bin/python bench/evidence.py [--file squad2_dev_2_articles.json]
        [--title Normans] [--limit N] [--data-dir DIR] [--timing 30]

In a data folder (``--data-dir``; default a temporary one) the file's articles are imported
as documents (``assistant data import squad --no-examples``' path), and each question of
``--title`` is asked as the chat asks it: the product's retrieval with its relevance gate,
the prompt builder, the chat's engine (llama.cpp by default), greedy with the chat's
repetition penalty, then :func:`assistant.chat.answer_modes.compose` and
:func:`alignment.grounded.judge` (answers judged on their first 50 words).

Printed: for each mode and each ``answers.min_similarity`` of the sweep, answer accuracy,
correct-and-cited, the share of correct answers citing a source that holds the answer,
quotes verbatim, abstention on unanswerable questions and false abstention, with 95% Wilson
intervals; then, on ``--timing`` questions, the time to the complete answer of each mode
against the free answer at the chat's token limit, in the same process (ratios).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from alignment.grounded import judge  # noqa: E402
from alignment.squad import ground, import_squad, parse_squad, select_articles, span_in_context  # noqa: E402
from assistant.chat.answer_modes import MODES, compose, similarity_of  # noqa: E402
from assistant.bootstrap import build_engine, open_database, open_library  # noqa: E402
from assistant.config import Settings  # noqa: E402
from assistant.cpu import report as cpu_report  # noqa: E402
from assistant.engines.generation import GenerationParams  # noqa: E402
from assistant.chat.prompting import build_messages  # noqa: E402
from assistant.significance import rate  # noqa: E402

SWEEP = (None, 0.4, 0.45, 0.5, 0.55, 0.6)


def default_file() -> Path:
    from tests.shared_data import SHARED_DATA

    return SHARED_DATA / "squad2_dev_2_articles.json"


def pct(k: int, n: int) -> str:
    if not n:
        return "-"
    r = rate(k, n)
    return f"{k / n:.3f} ({r.low:.2f}-{r.high:.2f})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--file", type=Path, default=None)
    ap.add_argument("--title", default="Normans", help="The article whose questions are asked.")
    ap.add_argument("--limit", type=int, default=None, help="At most this many questions.")
    ap.add_argument("--data-dir", type=Path, default=None)
    ap.add_argument("--max-new-tokens", type=int, default=64,
                    help="Tokens of the model's answer judged in free mode (quoted stops at its "
                    "first sentence).")
    ap.add_argument("--timing", type=int, default=30, help="Questions timed per mode (0: none).")
    args = ap.parse_args()
    print(cpu_report(), flush=True)
    path = args.file or default_file()
    data = args.data_dir or Path(tempfile.mkdtemp(prefix="evidence-"))
    settings = Settings(data_dir=data)
    data.mkdir(parents=True, exist_ok=True)
    db = open_database(settings)
    library = open_library(settings, db)
    if not library.store.list_documents():
        import_squad(db, library, path, "", examples=False)
    _, articles = parse_squad(path)
    questions = [q for a in select_articles(articles, [args.title]) for q in a.questions
                 if not q.answers or span_in_context(q)][: args.limit]
    examples = [ground(q, library) for q in questions]
    examples = [e for e in examples if e.sources]  # the gate let nothing through: a plain chat
    print(f"{args.title}: {len(examples)} questions with sources "
          f"({sum(bool(e.judged_answers) for e in examples)} answerable from them)", flush=True)

    engine = build_engine(settings)
    gen = engine.generator
    system = settings.generation.system_prompt
    params = GenerationParams(temperature=0.0, top_p=1.0, max_new_tokens=args.max_new_tokens,
                              system_prompt=system, repetition_penalty=settings.generation.repetition_penalty)
    messages = [build_messages(system, [], e.question.question, e.sources) for e in examples]
    said = []
    for i, m in enumerate(messages):
        said.append("".join(gen.stream(m, params)).strip())
        if i % 25 == 0:
            print(f"  answered {i + 1}/{len(messages)}", flush=True)
    similarity = similarity_of(library.embedder)
    cache: dict = {}

    def cached(question: str, texts) -> list[float]:  # noqa: ANN001
        key = (question, tuple(texts))
        if key not in cache:
            cache[key] = similarity(question, texts)
        return cache[key]

    print("\nmode        min_sim  accuracy (95% CI)    correct+cited        cited right  verbatim  "
          "abstention (unans.)  false abstention")
    for mode in MODES:
        for threshold in (SWEEP if mode != "free" else (None,)):
            verdicts = []
            for e, answer in zip(examples, said):
                texts = [s.text for s in e.sources]
                text = compose(mode, answer, e.question.question, texts, cached,
                               -1.0 if threshold is None else threshold).text
                verdicts.append((judge(text, e.judged_answers, texts), bool(e.judged_answers)))
            ans = [v for v, a in verdicts if a]
            una = [v for v, a in verdicts if not a]
            right = [v for v in ans if v.correct]
            quoting = [v.quotes_verbatim for v, _ in verdicts if v.quotes_verbatim is not None]
            print(f"{mode:11s} {'off' if threshold is None else threshold:>7}  "
                  f"{pct(sum(v.correct for v in ans), len(ans)):20s} "
                  f"{pct(sum(v.correct and bool(v.cites_right) for v in ans), len(ans)):20s} "
                  f"{sum(bool(v.cites_right) for v in right)}/{len(right):<9} "
                  f"{sum(quoting)}/{len(quoting):<7} "
                  f"{pct(sum(v.abstained for v in una), len(una)):20s} "
                  f"{pct(sum(v.abstained for v in ans), len(ans))}")
    if args.timing:
        timing(gen, examples[: args.timing], messages[: args.timing], settings, similarity)


def timing(gen, examples, messages, settings: Settings, similarity) -> None:  # noqa: ANN001
    """Seconds to the complete answer, per mode, on the same questions, in this process:
    free at the chat's token limit (today's answer), quoted (the model stops after its first
    sentence, then the quote is chosen), extractive (no model)."""
    from assistant.chat.answer_modes import ComposedStream

    g = settings.generation
    params = GenerationParams(temperature=0.0, top_p=1.0, max_new_tokens=g.max_new_tokens,
                              system_prompt=g.system_prompt, repetition_penalty=g.repetition_penalty)
    seconds: dict[str, list[float]] = {m: [] for m in MODES}
    for e, m in zip(examples, messages):
        texts = [s.text for s in e.sources]
        for mode in MODES:
            started = time.perf_counter()
            if mode == "free":
                "".join(gen.stream(m, params))
            else:
                inner = None if mode == "extractive" else gen.stream(m, params)
                stream = ComposedStream(
                    lambda said, _probability, mode=mode, e=e, texts=texts: compose(
                        mode, said, e.question.question, texts, similarity, 0.0),
                    inner, "base")
                "".join(stream)
            seconds[mode].append(time.perf_counter() - started)
    free = statistics.median(seconds["free"])
    print(f"\nTime to the complete answer, {len(examples)} questions, median (ratio to free at "
          f"max_new_tokens={g.max_new_tokens}):")
    for mode in MODES:
        s = statistics.median(seconds[mode])
        print(f"  {mode:11s} {s:6.2f} s  {s / free:5.2f}x")


if __name__ == "__main__":
    main()
