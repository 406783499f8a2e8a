"""vLLM with runtime LoRA adapters, through the product's own OpenAI-compatible engine: aggregate
tokens/s for 1, 4 and 8 concurrent chats, on base only and spread over base and two adapters.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/vllm_lora.py [--model FOLDER] [--adapter DIR ...]
        [--chats 1,4,8] [--tokens 64] [--device cpu|gpu]

Starts vLLM as the product does (``python -m assistant.engines.vllm_launch``'s settings: the
venv of ``make vllm``, the CPU build, or on a GPU machine ``make vllm
VLLM_REQUIREMENTS=requirements/vllm-gpu.txt`` and ``--device gpu``) on 127.0.0.1 with
``--enable-lora`` and runtime adapter loading, pushes two adapters with the engine's
``load_adapter`` (``POST /v1/load_lora_adapter``), and times concurrent chats. The baseline is
one chat on base, in the same run. Without ``--model`` it serves the embedded model's
checkpoint (dequantized from its GGUF); without ``--adapter`` it makes two random LoRA
adapters of rank 16 on all linear layers (a trained adapter's shape).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from assistant.config import Settings, VllmSettings
from assistant.cpu import report as cpu_report
from assistant.engines import vllm_launch
from assistant.engines.openai_server import OpenAIGenerator
from assistant.engines.generation import GenerationParams

PROMPTS = ["Write a story about a dragon who loves books.", "Explain how bread rises.",
           "Describe a walk along the sea.", "List ten animals and one fact about each."]


def default_model() -> Path:
    from assistant.engines.model_files import embedded_gguf
    from assistant.engines.models import checkpoint_for_gguf

    return checkpoint_for_gguf(embedded_gguf(), Path("bench/out/models"))


def run_chats(gen: OpenAIGenerator, n: int, tokens: int, versions: list[str]) -> tuple[float, list[float]]:
    params = GenerationParams(temperature=0.0, max_new_tokens=tokens)
    per_chat: list[float] = [0.0] * n
    made = [0] * n

    def chat(i: int) -> None:
        stream = gen.stream([{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}], params,
                            version=versions[i % len(versions)])
        "".join(stream)
        s = stream.stats
        made[i] = s.completion_tokens
        per_chat[i] = s.completion_tokens / (s.latency_ms / 1000)

    start = time.perf_counter()
    threads = [threading.Thread(target=chat, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(made) / (time.perf_counter() - start), per_chat


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path)
    ap.add_argument("--adapter", type=Path, action="append", default=[])
    ap.add_argument("--chats", default="1,4,8", help="concurrent chats to time, comma-separated")
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--device", choices=["cpu", "gpu"], default="cpu")
    args = ap.parse_args()
    print(cpu_report(), flush=True)  # every figure names its CPU
    model = args.model or default_model()
    from engines import make_lora  # bench/engines.py, beside this script

    adapters = args.adapter or [make_lora(model, Path(tempfile.mkdtemp()) / f"a{i}", i)
                                for i in (1, 2)]
    counts = [int(n) for n in args.chats.split(",")]
    workdir = Path(tempfile.mkdtemp(prefix="bench-vllm-"))
    python = os.environ.get("ASSISTANT_VLLM__PYTHON") or VllmSettings().python
    settings = Settings(data_dir=workdir, vllm=VllmSettings(device=args.device, python=python))
    started = time.perf_counter()
    with vllm_launch.serving(settings, workdir / "vllm.log", model=str(model)) as spec:
        print(f"vLLM ready in {time.perf_counter() - started:.0f} s ({spec.url}; log "
              f"{workdir / 'vllm.log'})", flush=True)
        gen = OpenAIGenerator(spec.url, model=spec.model, workers=max(counts))
        names = []
        for i, adapter in enumerate(adapters[:2], 1):
            started = time.perf_counter()
            gen.load_adapter(f"v{i}", adapter)
            names.append(f"v{i}")
            print(f"adapter v{i} loaded at runtime in {time.perf_counter() - started:.2f} s")
        run_chats(gen, 2, args.tokens, ["base", *names])  # warm-up: first prompts, adapters
        baseline, _ = run_chats(gen, 1, args.tokens, ["base"])
        print(f"\n{args.tokens}-token answers; baseline: 1 chat on base, {baseline:.1f} tok/s")
        for label, versions in (("base only", ["base"]), (f"{', '.join(names)}, base", [*names, "base"])):
            for n in counts:
                total, per_chat = run_chats(gen, n, args.tokens, versions)
                print(f"  {n} chat(s), {label:>14}: {total:6.1f} tok/s in all "
                      f"({total / baseline:.2f}x baseline), per chat {min(per_chat):.1f}-"
                      f"{max(per_chat):.1f} tok/s", flush=True)
        gen.close()


if __name__ == "__main__":
    main()
