"""Engines side by side in one process: decode speed and time to first token of the chat's
engines on the embedded model, as ratios to bare llama.cpp and to the transformers engine.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/engines.py [--tokens 64] [--threads 2] [--rounds 3]

Rows: transformers fp32 and bf16, llama.cpp on the shipped GGUF (Q4_1) and on a q8_0 conversion, each
with the base and with a LoRA adapter active (random weights of a trained adapter's shape:
the cost is the same), and bare ``llama_cpp.Llama`` on the same files. Decode tok/s counts
tokens after the first one (the first one is the prompt's cost); greedy; median of
``--rounds``. Time to first token is measured with four sources in the prompt (~1,000
tokens: SQuAD paragraphs when the data file is there, else filler text), from a cold cache.
"answer s" is the time to a complete answer from four sources with the adapter: time to
first token plus the other tokens at the adapter's decode rate. The ratios are what to read:
this machine is shared and noisy.
"""

from __future__ import annotations

from assistant.cpu import report as cpu_report
import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from assistant.config import Settings
from assistant.engines.conversion import convert_checkpoint
from assistant.engines.llamacpp import LlamaCppGenerator
from assistant.engines.transformers import TransformersGenerator
from assistant.engines.generation import GenerationParams, Generator
from assistant.engines.model_files import embedded_gguf
from assistant.engines.models import checkpoint_for_gguf, load_model
from assistant.engines.messages import Messages
from assistant.chat.prompting import build_messages

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "squad2_dev_2_articles.json"
OUT = Path(__file__).resolve().parent / "out"
PROMPT = [{"role": "user", "content": "Write a long story about a dragon who loves books."}]


class _Source:
    def __init__(self, n: int, text: str) -> None:
        self.document_name, self.location, self.text = f"doc{n}.txt", None, text


def four_sources() -> list[_Source]:
    if DATA.is_file():
        paragraphs = [p["context"] for a in json.loads(DATA.read_text())["data"]
                      for p in a["paragraphs"]]
    else:
        paragraphs = [("The bakery opens at seven and closes at six. " * 30).strip()] * 4
    return [_Source(n, p[:1100]) for n, p in enumerate(paragraphs[:4], 1)]


def make_lora(checkpoint: Path, out: Path, seed: int = 0) -> Path:
    """A rank-16 LoRA on every linear layer with small random weights (a trained adapter's
    shape and cost; also used by bench/vllm_lora.py)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    if (out / "adapter_model.safetensors").is_file():
        return out
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(checkpoint, dtype=torch.float32)
    config = LoraConfig(r=16, lora_alpha=32, target_modules="all-linear",
                        init_lora_weights=False, task_type="CAUSAL_LM")
    peft_model = get_peft_model(model, config)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn_like(p) * 0.01)
    peft_model.save_pretrained(out)
    return out


def embedded_model(threads: int | None) -> tuple[int, Path, Path]:
    """The threads to use (every core by default, torch's too), the shipped GGUF and the
    transformers checkpoint dequantized from it (cached under bench/out/models)."""
    import torch

    from assistant.engines.llamacpp import default_threads

    threads = threads or default_threads()
    torch.set_num_threads(threads)
    OUT.mkdir(exist_ok=True)
    settings = Settings(data_dir=Path(tempfile.mkdtemp()), model_cache_dir=OUT / "models")
    shipped = embedded_gguf()
    return threads, shipped, checkpoint_for_gguf(shipped, settings.resolved_model_cache_dir)


def engine_rates(gen: Generator, params: GenerationParams, version: str, rounds: int) -> float:
    rates = []
    for _ in range(rounds):
        stream = gen.stream(PROMPT, params, version=version)
        "".join(stream)
        s = stream.stats
        rates.append((s.completion_tokens - 1) / (s.latency_ms - (s.ttft_ms or 0)) * 1000)
    return statistics.median(rates)


def bare_rate(path: Path, ids: list[int], tokens: int, threads: int, rounds: int,
              lora: Path | None = None) -> float:
    from llama_cpp import Llama

    from assistant.engines.llamacpp import weight_layout

    with weight_layout("auto"):  # the layout the engine uses on this CPU
        llm = Llama(model_path=str(path), n_ctx=4096, n_threads=threads, n_threads_batch=threads,
                    verbose=False, lora_path=str(lora) if lora else None)
    rates = []
    for _ in range(rounds):
        llm.reset()
        gen = llm.generate(ids, temp=0.0, top_k=0, min_p=0.0, repeat_penalty=1.0)
        next(gen)
        start, n = time.perf_counter(), 0
        for _ in gen:
            n += 1
            if n >= tokens - 1:
                break
        gen.close()
        rates.append(n / (time.perf_counter() - start))
    llm.close()
    return statistics.median(rates)


def ttft(gen: Generator, messages: Messages, params: GenerationParams, version: str, rounds: int) -> float:
    times = []
    for _ in range(rounds):
        if hasattr(gen, "_llm"):
            gen._executor.submit(gen._llm.reset).result()  # cold: no cached prefix
        stream = gen.stream(messages, params, version=version)
        it = iter(stream)
        next(it)
        stream.stop()
        times.append(stream.stats.ttft_ms)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=None, help="default: every core")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    print(cpu_report(), flush=True)  # every figure names its CPU
    threads, shipped, checkpoint = embedded_model(args.threads)
    q8 = convert_checkpoint(checkpoint, OUT / "models" / "smollm2-135m.q8_0.gguf", "q8_0")
    adapter = make_lora(checkpoint, OUT / "lora-r16")
    params = GenerationParams(temperature=0.0, top_p=1.0, max_new_tokens=args.tokens)
    rag = build_messages("You are a helpful assistant.", [], "Summarise the sources.",
                         four_sources())

    results: dict[str, dict[str, float]] = {}
    for dtype in ("float32", "bfloat16"):
        settings = Settings(data_dir=Path(tempfile.mkdtemp()), model_cache_dir=OUT / "models",
                            dtype=dtype)
        tf = TransformersGenerator(load_model(settings))
        tf.load_adapter("lora", adapter)
        results[f"transformers {tf.weights}"] = {
            "base": engine_rates(tf, params, "base", args.rounds),
            "lora": engine_rates(tf, params, "lora", args.rounds),
            "ttft": ttft(tf, rag, params, "base", args.rounds),
            "prompt": tf.count_prompt_tokens(rag),
        }
        tf.close()
        del tf
    for label, path in (("Q4_1 (shipped)", shipped), ("q8_0", q8)):
        gen = LlamaCppGenerator(path, label, 4096, threads, lambda: checkpoint)
        gen.load_adapter("lora", adapter)
        ids = gen.prompt_ids(PROMPT)
        lora_gguf = adapter / "adapter_model.gguf"
        results[f"llama.cpp {label}"] = {
            "base": engine_rates(gen, params, "base", args.rounds),
            "lora": engine_rates(gen, params, "lora", args.rounds),
            "ttft": ttft(gen, rag, params, "base", args.rounds),
            "bare": bare_rate(path, ids, args.tokens, threads, args.rounds),
            "bare_lora": bare_rate(path, ids, args.tokens, threads, args.rounds, lora_gguf),
        }
        gen.close()

    tf_row = results["transformers fp32"]  # the reference: exact, and every CPU runs it
    print(f"threads {threads}, {args.tokens} new tokens, greedy, median of {args.rounds}; "
          f"RAG prompt {tf_row['prompt']} tokens")
    print(f"{'engine':26} {'base tok/s':>10} {'lora tok/s':>10} {'vs bare':>8} {'lora vs bare':>12}"
          f" {'lora vs tf':>10} {'TTFT ms':>8} {'TTFT vs tf':>10} {'answer s':>8}")
    for name, r in results.items():
        vs_bare = f"{r['base'] / r['bare']:.2f}x" if "bare" in r else "-"
        lora_bare = f"{r['lora'] / r['bare_lora']:.2f}x" if "bare" in r else "-"
        # a complete answer from four sources with the adapter: the first token, then the rest
        answer = r["ttft"] / 1000 + (args.tokens - 1) / r["lora"]
        print(f"{name:26} {r['base']:10.1f} {r['lora']:10.1f} {vs_bare:>8} {lora_bare:>12}"
              f" {r['lora'] / tf_row['lora']:9.2f}x {r['ttft']:8.0f} {r['ttft'] / tf_row['ttft']:9.2f}x"
              f" {answer:8.2f}")
    for name, r in results.items():
        if "bare" in r:
            print(f"bare llama_cpp.Llama {name.removeprefix('llama.cpp ')}: {r['bare']:.1f} tok/s,"
                  f" with the LoRA {r['bare_lora']:.1f} tok/s")


if __name__ == "__main__":
    main()
