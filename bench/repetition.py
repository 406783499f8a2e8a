"""Repetition control on the dev prompts: repeated 3-gram rate, answer length and answers cut
at the token limit, for a few repetition penalties (the chat's default is chosen from this).

    HF_HUB_OFFLINE=1 .venv/bin/python bench/repetition.py [--penalties 1.0 1.1 1.2] [--prompts 30]

The prompts: the first hh-rlhf conversations of the imported file (their turns up to the last
question) and SQuAD 2.0 dev questions with their paragraph as a numbered source, as the chat
sends them (system prompt, ``build_messages``). Greedy answers of the embedded model on the
llama.cpp engine, 256 new tokens at most (the chat's default). Reported per penalty: the
repeated word 3-gram rate pooled over the answers (``assistant.words.repeated_ngram_rate``,
the one the evaluation reports), answers whose own rate is over 0.3 (looping), the mean
length in tokens, the share cut at the limit, and the tokens/s.
"""

from __future__ import annotations

from assistant.cpu import report as cpu_report
import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from alignment.importers import MalformedPair, parse_hh_line
from assistant.config import GenerationDefaults
from assistant.engines.llamacpp import LlamaCppGenerator
from assistant.engines.generation import FINISH_LENGTH, GenerationParams
from assistant.engines.model_files import embedded_gguf
from assistant.chat.prompting import build_messages
from assistant.words import repeated_ngram_rate, repeated_ngrams
from tests.shared_data import HH_FILE, SHARED_DATA

SQUAD_FILE = SHARED_DATA / "squad2_dev_2_articles.json"


class Source:
    def __init__(self, name: str, text: str) -> None:
        self.document_name, self.location, self.text = name, None, text


def prompts(n: int, system: str) -> list[list[dict[str, str]]]:
    """``n`` chats: two thirds hh-rlhf conversations, a third SQuAD questions with a source."""
    n_squad = n // 3
    out = []
    with HH_FILE.open() as f:
        for line in f:
            if len(out) == n - n_squad:
                break
            try:
                pair = parse_hh_line(line)
            except MalformedPair:
                continue
            *history, question = pair.prompt
            out.append(build_messages(system, history, question.content))
    data = json.loads(SQUAD_FILE.read_text())
    paragraphs = [(a["title"], p) for a in data["data"] for p in a["paragraphs"]]
    for title, p in paragraphs[::max(1, len(paragraphs) // n_squad)][:n_squad]:
        qa = next(q for q in p["qas"] if not q.get("is_impossible"))
        out.append(build_messages(system, [], qa["question"], [Source(f"{title}.txt", p["context"])]))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--penalties", type=float, nargs="+", default=[1.0, 1.1, 1.2])
    ap.add_argument("--prompts", type=int, default=30)
    ap.add_argument("--max-new-tokens", type=int, default=GenerationDefaults().max_new_tokens)
    ap.add_argument("--threads", type=int, help="llama.cpp threads (default: the cores; 1 on a "
                    "machine busy with other work, where 2 spin-wait)")
    ap.add_argument("--show", action="store_true", help="print each answer's start")
    args = ap.parse_args()
    print(cpu_report(), flush=True)  # every figure names its CPU
    defaults = GenerationDefaults()
    chats = prompts(args.prompts, defaults.system_prompt)
    gen = LlamaCppGenerator(embedded_gguf(), "embedded", 4096, threads=args.threads)
    print(f"{len(chats)} prompts, greedy, <= {args.max_new_tokens} new tokens, {gen.weights} on "
          f"llama.cpp ({gen.threads} threads)", flush=True)
    print(f"{'penalty':>8} {'rep 3-gram':>10} {'looping':>8} {'tokens':>7} {'cut':>5} {'tok/s':>6}")
    for penalty in args.penalties:
        params = GenerationParams(temperature=0.0, top_p=1.0, max_new_tokens=args.max_new_tokens,
                                  repetition_penalty=penalty)
        answers, lengths, cut, seconds = [], [], 0, 0.0
        for i, chat in enumerate(chats):
            t0 = time.perf_counter()
            stream = gen.stream(chat, params)
            text = "".join(stream)
            seconds += time.perf_counter() - t0
            answers.append(text)
            lengths.append(stream.stats.completion_tokens)
            cut += stream.stats.finish_reason == FINISH_LENGTH
            if args.show:
                print(f"  [{penalty} #{i}] {' '.join(text.split())[:160]}", flush=True)
        looping = sum(1 for a in answers if (r := repeated_ngrams(a)) and r[1] and r[0] / r[1] > 0.3)
        print(f"{penalty:>8.2f} {repeated_ngram_rate(answers):>10.3f} {looping:>5}/{len(answers):<2} "
              f"{statistics.mean(lengths):>7.1f} {cut:>2}/{len(answers):<2} {sum(lengths) / seconds:>6.1f}",
              flush=True)


if __name__ == "__main__":
    main()
