"""Decode speed with a LoRA adapter loaded into the chat's generator, against the base, in
the same process (ABBA order, median tokens/s after the first token).

    HF_HUB_OFFLINE=1 .venv/bin/python bench/adapter_decode.py data/versions/v2/adapter [--threads 1]

Prints: base before any adapter is loaded, base with the peft wrapper (adapters disabled),
and the adapter; the ratios are what to read (this machine is shared and noisy).
"""

from __future__ import annotations

from assistant.cpu import report as cpu_report
import argparse
import statistics
from pathlib import Path

import torch

from assistant.config import get_settings
from assistant.engines.transformers import TransformersGenerator
from assistant.engines.generation import GenerationParams
from assistant.engines.models import load_model

PROMPT = [{"role": "user", "content": "Write a long story about a dragon who loves books."}]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("adapter", type=Path, help="a version's adapter/ folder")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    print(cpu_report(), flush=True)  # every figure names its CPU
    if args.threads:
        torch.set_num_threads(args.threads)
    gen = TransformersGenerator(load_model(get_settings()))
    params = GenerationParams(temperature=0.0, top_p=1.0, max_new_tokens=args.tokens, system_prompt="")

    def rate(version: str) -> float:
        stream = gen.stream(PROMPT, params, version=version)
        "".join(stream)
        s = stream.stats
        return s.completion_tokens / (s.latency_ms - (s.ttft_ms or 0)) * 1000

    before = [rate("base") for _ in range(args.rounds)]
    gen.load_adapter("candidate", args.adapter)
    runs: dict[str, list[float]] = {"base": [], "candidate": []}
    for _ in range(args.rounds):
        for version in ("base", "candidate", "candidate", "base"):
            runs[version].append(rate(version))
    med = {k: statistics.median(v) for k, v in runs.items()}
    print(f"threads {torch.get_num_threads()}, {args.tokens} new tokens, greedy")
    print(f"base, no adapter loaded:     {statistics.median(before):6.1f} tok/s")
    print(f"base, peft wrapper disabled: {med['base']:6.1f} tok/s  "
          f"ratio {med['base'] / statistics.median(before):.3f}")
    print(f"with the adapter:            {med['candidate']:6.1f} tok/s  "
          f"ratio {med['candidate'] / med['base']:.3f} of base")


if __name__ == "__main__":
    main()
