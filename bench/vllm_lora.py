"""vLLM with runtime LoRA adapters, through the product's own OpenAI-compatible engine: needs a
CUDA GPU and ``pip install vllm`` (PyPI's vllm is a CUDA build; it is not a dependency).

    HF_HUB_OFFLINE=1 .venv/bin/python bench/vllm_lora.py [--model FOLDER] [--adapter DIR ...]
        [--chats 8] [--tokens 128]

Starts ``vllm serve`` on 127.0.0.1 with ``--enable-lora`` and
``VLLM_ALLOW_RUNTIME_LORA_UPDATING=True``, pushes two adapters with the engine's
``load_adapter`` (``POST /v1/load_lora_adapter``), then runs ``--chats`` concurrent chats,
spread over base and both adapters, and prints aggregate and per-chat tokens/s, the time
each adapter took to load, and the same with one chat as the baseline. Without
``--model`` it serves the embedded model's checkpoint (dequantized from its GGUF); without
``--adapter`` it makes two random LoRA adapters of rank 16 on all linear layers.
"""

from __future__ import annotations

from assistant.cpu import report as cpu_report
import argparse
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from assistant.engines.openai_server import OpenAIGenerator
from assistant.generation import GenerationParams

PROMPTS = ["Write a story about a dragon who loves books.", "Explain how bread rises.",
           "Describe a walk along the sea.", "List ten animals and one fact about each."]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def default_model() -> Path:
    from assistant.model_files import embedded_gguf
    from assistant.models import checkpoint_for_gguf

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
    ap.add_argument("--chats", type=int, default=8)
    ap.add_argument("--tokens", type=int, default=128)
    args = ap.parse_args()
    print(cpu_report(), flush=True)  # every figure names its CPU
    model = args.model or default_model()
    from engines import make_lora  # bench/engines.py, beside this script

    adapters = args.adapter or [make_lora(model, Path(tempfile.mkdtemp()) / f"a{i}", i)
                                for i in (1, 2)]
    port = free_port()
    env = {**os.environ, "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True"}
    log = open(Path(tempfile.mkdtemp()) / "vllm.log", "wb")
    server = subprocess.Popen(
        [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model),
         "--served-model-name", "base-model", "--host", "127.0.0.1", "--port", str(port),
         "--enable-lora", "--max-loras", "2", "--max-lora-rank", "16"],
        env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 900
        while True:
            if server.poll() is not None or time.monotonic() > deadline:
                sys.exit(f"vLLM did not start; its log: {log.name}")
            try:
                urllib.request.urlopen(f"{url}/models", timeout=2)
                break
            except OSError:
                time.sleep(2)
        gen = OpenAIGenerator(url, model="base-model", workers=args.chats)
        names = []
        for i, adapter in enumerate(adapters[:2], 1):
            started = time.perf_counter()
            gen.load_adapter(f"v{i}", adapter)
            names.append(f"v{i}")
            print(f"adapter v{i} loaded at runtime in {time.perf_counter() - started:.2f} s")
        one, _ = run_chats(gen, 1, args.tokens, ["base"])
        total, per_chat = run_chats(gen, args.chats, args.tokens, ["base", *names])
        print(f"1 chat: {one:.1f} tok/s")
        print(f"{args.chats} chats over base, {', '.join(names)}: {total:.1f} tok/s in all "
              f"({total / one:.2f}x one chat), per chat min {min(per_chat):.1f} / "
              f"max {max(per_chat):.1f} tok/s")
    finally:
        server.terminate()
        server.wait(timeout=60)


if __name__ == "__main__":
    main()
