"""How honest is sentence attribution? Its precision on SQuAD 2.0 answers.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/citations.py [--data FILE]

Both articles go in as documents through the product's pipeline; for each answerable
question the sources are what the chat would show (``Retriever.relevant``, top_k). Four
kinds of answer sentence are attributed, with the question, as the chat attributes them
(``assistant.chat.citations.cite``), beside the earlier rule (most content words in a source):

* **gold**: the sentence of the article that holds the gold answer (right when attributed
  to a source that contains it);
* **short**: "The answer is <gold answer>." (right when the source holds the answer);
* **echo**: the question restated as a sentence: never right to attribute;
* **invented**: the gold sentence with its answer replaced by an answer from the other
  article (a made-up fact in the source's wording): never right;
* **other article**: a sentence from the other article: never right.

Precision: the share of attributions that are right, over all kinds pooled.
"""

from __future__ import annotations

from assistant.cpu import report as cpu_report
import argparse
import random
import re
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from assistant.bootstrap import open_database, open_library
from assistant.chat.citations import _SENTENCE, cite
from assistant.config import Settings
from assistant.words import content_words
from bench.relevance import DATA

_WH = re.compile(r"^(?:in|on|at|by|of|for|during|from|to)?\s*(?:what|which|who|whom|whose|when|"
                 r"where|why|how)(?:\s+(?:many|much|long|old|year|kind|type|country|century))?\s+",
                 re.IGNORECASE)


def old_rule(answer: str, sources: list[str]) -> set[int]:
    """The rule before: a sentence goes to the source with most of its content words
    (at least 60% of 3 or more)."""
    vocab = [set(content_words(s, min_len=3)) for s in sources]
    cited = set()
    for sentence in _SENTENCE.findall(answer):
        words = set(content_words(sentence, min_len=3))
        if len(words) < 3:
            continue
        share, best = max((len(words & v) / len(words), n) for n, v in enumerate(vocab, start=1))
        if share >= 0.6:
            cited.add(best)
    return cited


def echo(question: str) -> str:
    """ "When did the Normans conquer England?" -> "The Normans conquer England." """
    text = _WH.sub("", question.strip().rstrip("?").strip())
    return (text[:1].upper() + text[1:] + ".") if text else question


def gold_sentence(context: str, start: int) -> str:
    pos = 0
    for s in _SENTENCE.findall(context):
        if pos <= start < pos + len(s):
            return s.strip()
        pos += len(s)
    return ""


def main() -> None:
    import json

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=DATA)
    args = ap.parse_args()
    print(cpu_report(), flush=True)  # every figure names its CPU
    if not args.data.is_file():
        ap.error(f"{args.data} is missing: pass --data or set ASSISTANT_SHARED_DATA")
    data = json.loads(args.data.read_text())["data"]
    rng = random.Random(0)
    answers_of = {a["title"]: sorted({x["text"] for p in a["paragraphs"] for qa in p["qas"]
                                      for x in qa["answers"]}) for a in data}
    sentences_of = {a["title"]: [s.strip() for p in a["paragraphs"]
                                 for s in _SENTENCE.findall(p["context"]) if len(s.split()) > 6]
                    for a in data}

    kinds = ("gold", "short", "echo", "invented", "other article")
    counts = {rule: {k: [0, 0, 0] for k in kinds} for rule in ("new", "old")}  # asked, attributed, right
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(data_dir=tmp)
        lib = open_library(settings, open_database(settings))
        for art in data:
            text = "\n\n".join(p["context"] for p in art["paragraphs"])
            assert lib.ingestor.ingest_bytes(f"{art['title']}.txt", text.encode()).ok
        for art in data:
            other = next(a["title"] for a in data if a["title"] != art["title"])
            for p in art["paragraphs"]:
                for qa in p["qas"]:
                    if qa.get("is_impossible") or not qa["answers"]:
                        continue
                    q, gold = qa["question"], qa["answers"][0]
                    sources = [h.text for h in lib.retriever.relevant(q).hits]
                    if not sources:
                        continue
                    sentence = gold_sentence(p["context"], gold["answer_start"])
                    fake = rng.choice(answers_of[other])
                    cases = {
                        "gold": (sentence, sentence),
                        "short": (f"The answer is {gold['text']}.", gold["text"]),
                        "echo": (echo(q), None),
                        "invented": (sentence.replace(gold["text"], fake, 1), None),
                        "other article": (rng.choice(sentences_of[other]), None),
                    }
                    for kind, (answer, needle) in cases.items():
                        for rule, found in (("new", cite(answer, sources, q).cited),
                                            ("old", old_rule(answer, sources))):
                            c = counts[rule][kind]
                            c[0] += 1
                            c[1] += bool(found)
                            c[2] += bool(found) and needle is not None and all(
                                needle in sources[n - 1] for n in found)

    for rule, title in (("new", "rule now (citations.cite, with the question)"),
                        ("old", "rule before (60% of content words)")):
        print(f"\n{title}")
        print(f"{'kind':<14} {'sentences':>9} {'attributed':>11} {'right':>6}")
        for kind in kinds:
            asked, attributed, right = counts[rule][kind]
            print(f"{kind:<14} {asked:>9} {attributed / asked:>11.3f} {right / asked:>6.3f}")
        attributed = sum(c[1] for c in counts[rule].values())
        right = sum(c[2] for c in counts[rule].values())
        print(f"precision: {right}/{attributed} = {right / max(attributed, 1):.3f}")


if __name__ == "__main__":
    main()
