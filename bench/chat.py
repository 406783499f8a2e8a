"""Chat benchmark on the embedded model: load times, time to first token, and decode speed
through the app's own streaming path as a ratio to bare ``model.generate``.

    make bench     # or: HF_HUB_OFFLINE=1 .venv/bin/python bench/chat.py [--dtype bfloat16]

Both paths get the same prompt, the same greedy settings and the same number of new tokens.
This machine is noisy (+-10% run to run), so every round runs bare, app, app, bare (ABBA)
and yields one paired ratio; the median over rounds is reported with its range.
Targets (issue #2): ratio >= 0.95, warm load < 2 s.
"""

from __future__ import annotations

from assistant.cpu import report as cpu_report
import argparse
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from assistant.config import Settings
from assistant.engines.transformers import TransformersGenerator
from assistant.engines.generation import GenerationParams
from assistant.engines.models import load_model

PROMPT = "Write a detailed essay about the history of the city of Paris, century by century."


def bare_generate(loaded, messages, max_new_tokens: int) -> tuple[int, float]:  # noqa: ANN001
    """(new tokens, seconds) for plain ``model.generate`` in the calling thread."""
    tok, model = loaded.tokenizer, loaded.model
    enc = tok.apply_chat_template(
        messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
    ).to(loaded.device)
    greedy = dict(do_sample=False, temperature=None, top_p=None, top_k=None,
                  pad_token_id=tok.pad_token_id)
    with torch.inference_mode():
        t0 = time.perf_counter()
        out = model.generate(**enc, max_new_tokens=max_new_tokens, **greedy)
        seconds = time.perf_counter() - t0
    return out.shape[1] - enc["input_ids"].shape[1], seconds


def app_stream(gen: TransformersGenerator, messages, max_new_tokens: int):  # noqa: ANN001, ANN201
    """(new tokens, seconds, seconds to first token) through the app's streaming path."""
    params = GenerationParams(temperature=0.0, top_p=1.0, max_new_tokens=max_new_tokens)
    t0 = time.perf_counter()
    stream = gen.stream(messages, params)
    for _ in stream:
        pass
    return stream.stats.completion_tokens, time.perf_counter() - t0, stream.stats.ttft_ms / 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16"])
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    print(cpu_report(), flush=True)  # every figure names its CPU
    logging.basicConfig(level=logging.WARNING)

    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(data_dir=tmp, dtype=args.dtype)
        cold = load_model(settings)
        assert cold.source == "gguf"
        cold_seconds = cold.load_seconds
        del cold
        warm_times = []
        for _ in range(3):
            loaded = load_model(settings)
            assert loaded.source == "cache"
            warm_times.append(loaded.load_seconds)

    gen = TransformersGenerator(loaded)
    messages = [{"role": "user", "content": PROMPT}]
    app_stream(gen, messages, 8)  # warm-up: first calls allocate caches and thread teams
    bare_generate(loaded, messages, 8)

    ratios, bare_tps, app_tps, ttfts = [], [], [], []
    for _ in range(args.rounds):
        n1, b1 = bare_generate(loaded, messages, args.tokens)
        n2, a1, t1 = app_stream(gen, messages, args.tokens)
        n3, a2, t2 = app_stream(gen, messages, args.tokens)
        n4, b2 = bare_generate(loaded, messages, args.tokens)
        assert n1 == n2 == n3 == n4, f"token counts differ: {n1} {n2} {n3} {n4}"
        bare, app = 2 * n1 / (b1 + b2), 2 * n2 / (a1 + a2)
        bare_tps.append(bare)
        app_tps.append(app)
        ratios.append(app / bare)
        ttfts += [t1, t2]

    med = statistics.median
    print(f"model            {loaded.model_id} ({loaded.device.type}, {str(loaded.dtype)[6:]})")
    print(f"cold load        {cold_seconds:.2f} s  (GGUF -> safetensors cache, once)")
    print(f"warm load        {med(warm_times):.2f} s  (from the cache; target < 2 s)")
    print(f"time to 1st tok  {med(ttfts) * 1000:.0f} ms  (app path, {len(messages[0]['content'])}-char prompt)")
    print(f"decode           app {med(app_tps):.1f} tok/s, bare generate {med(bare_tps):.1f} tok/s "
          f"({n1} new tokens, {args.rounds} ABBA rounds)")
    print(f"ratio app/bare   {med(ratios):.3f}  (min {min(ratios):.3f}, max {max(ratios):.3f}; "
          "target >= 0.95)")


if __name__ == "__main__":
    main()
