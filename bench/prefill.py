"""How fast each engine reads a long prompt (prompt processing, "prefill") on this machine:
what the time to first token of a four-source answer is made of.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/prefill.py [--threads 2] [--rounds 3]

One process, the same ~800-token RAG prompt (four sources, the chat's own template, as in
bench/engines.py): transformers fp32 (one forward pass, logits of the last position only, as
generation does), then bare ``llama_cpp.Llama`` on the embedded model in several weight
formats (the shipped Q4_1, and q8_0 / q4_0 / f16 / f32 made from an f32 conversion of the
same checkpoint with llama.cpp's own quantizer), each at a few ``n_batch`` sizes. Reported:
prompt tokens per second (best of ``--rounds``, a cold KV cache each time) and the ratio to
transformers. The ratios are what to read; the machine is shared and noisy.
"""

from __future__ import annotations

from assistant.cpu import report as cpu_report
import argparse
import ctypes
import time
from pathlib import Path

from assistant.engines.conversion import convert_checkpoint
from assistant.engines.llamacpp import GGUFVocab
from assistant.chat.prompting import build_messages
from engines import OUT, embedded_model, four_sources  # bench/engines.py, beside this script

FORMATS = ("q8_0", "q4_0", "f16", "bf16")


def quantized(f32: Path, name: str) -> Path:
    import llama_cpp

    out = f32.with_name(f"smollm2-135m.{name}.gguf")
    if not out.is_file():
        params = llama_cpp.llama_model_quantize_default_params()
        params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{name.upper()}")
        tmp = out.with_suffix(".tmp")
        if llama_cpp.llama_model_quantize(str(f32).encode(), str(tmp).encode(),
                                          ctypes.byref(params)) != 0:
            raise SystemExit(f"llama.cpp could not quantize {f32} to {name}")
        tmp.replace(out)
    return out


def llama_rate(path: Path, ids: list[int], threads: int, n_batch: int, rounds: int) -> float:
    from llama_cpp import Llama

    from assistant.engines.llamacpp import weight_layout

    with weight_layout("auto"):  # the layout the engine uses on this CPU
        llm = Llama(model_path=str(path), n_ctx=2048, n_batch=n_batch, n_ubatch=n_batch,
                    n_threads=threads, n_threads_batch=threads, verbose=False)
    best = float("inf")
    for _ in range(rounds):
        llm.reset()  # a cold cache: every prompt token is read again
        start = time.perf_counter()
        llm.eval(ids)
        best = min(best, time.perf_counter() - start)
    llm.close()
    return len(ids) / best


def transformers_rate(checkpoint: Path, ids: list[int], rounds: int, dtype: str = "float32") -> float:
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(checkpoint, dtype=getattr(torch, dtype)).eval()
    x = torch.tensor([ids])
    best = float("inf")
    with torch.inference_mode():
        model(x[:, :16], logits_to_keep=1)  # warm-up
        for _ in range(rounds):
            start = time.perf_counter()
            model(x, logits_to_keep=1)
            best = min(best, time.perf_counter() - start)
    return len(ids) / best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=None, help="default: every core")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batches", type=int, nargs="+", default=[64, 128, 512])
    args = ap.parse_args()
    print(cpu_report(), flush=True)  # every figure names its CPU
    threads, shipped, checkpoint = embedded_model(args.threads)
    f32 = convert_checkpoint(checkpoint, OUT / "models" / "smollm2-135m.f32.gguf", "f32")
    files = {"Q4_1 (shipped)": shipped} | {n: quantized(f32, n) for n in FORMATS} | {"f32": f32}

    vocab = GGUFVocab.open(shipped)
    messages = build_messages("You are a helpful assistant.", [], "Summarise the sources.",
                              four_sources())
    ids = vocab.prompt_ids(messages)
    print(f"{len(ids)}-token prompt, {threads} threads, best of {args.rounds}")
    reference = transformers_rate(checkpoint, ids, args.rounds)
    print(f"{'transformers fp32':24s} {reference:7.1f} tok/s  1.00x")
    bf16 = transformers_rate(checkpoint, ids, args.rounds, "bfloat16")
    print(f"{'transformers bf16':24s} {bf16:7.1f} tok/s  {bf16 / reference:.2f}x")
    for name, path in files.items():
        for n_batch in args.batches:
            rate = llama_rate(path, ids, threads, n_batch, args.rounds)
            print(f"{'llama.cpp ' + name:24s} {rate:7.1f} tok/s  {rate / reference:.2f}x"
                  f"  (n_batch {n_batch})", flush=True)


if __name__ == "__main__":
    main()
