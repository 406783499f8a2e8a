"""Compare mode on OpenAI-compatible servers: the wall time of one A/B pair with both answers
requested at once (the engine's ``workers`` = 2) against one after the other (``workers`` = 1),
through the chat's own path (``ChatService.compare`` read with ``side_by_side.interleave``),
on llama.cpp's server and on vLLM in one run (one server at a time, the CPU otherwise idle).

    HF_HUB_OFFLINE=1 .venv/bin/python bench/compare.py [--url http://host:8000/v1] \
        [--servers llama.cpp,vllm] [--tokens 96] [--rounds 3]

Without ``--url`` it starts each server itself: llama-cpp-python's (``python -m
assistant.engines.llamacpp_server``, ``interrupt_requests`` off, 2 threads) on the embedded
GGUF, and vLLM (``make vllm``; started as ``make vllm-serve`` does) on its checkpoint.
llama.cpp's server answers one request at a time, so expect little gain there: the gain is
for servers that batch concurrent requests (vLLM). Both answers are sampled (compare mode
samples the active version twice) and long enough to reach ``--tokens``; rounds alternate the
two modes; medians are reported, and the ratio at once / one after the other.
"""

from __future__ import annotations

from assistant.cpu import report as cpu_report
import argparse
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from assistant.chat.service import ChatService
from assistant.config import Settings
from assistant.engines.llamacpp import GGUFVocab
from assistant.engines.openai_server import OpenAIGenerator
from assistant.engines.generation import GenerationParams
from assistant.engines.model_files import embedded_gguf
from assistant.engines.serving import ServerDidNotStart, wait_until_serving
from assistant.chat.side_by_side import interleave
from assistant.storage import ConversationStore, Database, upgrade

QUESTION = "Write a long story about a dragon who loves books."


def start_server(workdir: Path) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = workdir / "server.json"
    config.write_text(json.dumps({
        "host": "127.0.0.1", "port": port, "interrupt_requests": False,
        "models": [{"model": str(embedded_gguf()), "model_alias": "smollm2", "n_ctx": 4096,
                    "n_threads": 2, "verbose": False}]}))
    proc = subprocess.Popen([sys.executable, "-m", "assistant.engines.llamacpp_server", "--config_file",
                             str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        wait_until_serving(url, proc, timeout=180, name="llama_cpp.server")
    except ServerDidNotStart as err:
        proc.kill()
        raise SystemExit(str(err)) from err
    return proc, url


def one_pair(service: ChatService, params: GenerationParams) -> tuple[float, int]:
    started = time.perf_counter()
    a, b = service.compare(None, QUESTION, params)
    for piece in interleave((a, b), service.compare_at_once()):
        if piece.error is not None:
            raise SystemExit(f"an answer failed: {piece.error}")
    tokens = a.message.record.completion_tokens + b.message.record.completion_tokens
    return time.perf_counter() - started, tokens


def start_vllm(workdir: Path) -> tuple[object, str]:
    from assistant.engines import vllm_launch

    settings = Settings(data_dir=workdir, model_cache_dir=Path("bench/out/models"))
    proc, spec = vllm_launch.start(settings, workdir / "vllm.log", port=free_port())
    return proc, spec.url


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def measure(url: str, model: str | None, local: bool, args, workdir: Path) -> tuple[float, float]:  # noqa: ANN001
    """Median wall time of a pair (at once, one after the other), printed round by round."""
    settings = Settings(data_dir=workdir / "data")
    db = Database(settings.resolved_database_url)
    upgrade(db)
    store = ConversationStore(db)
    vocab = GGUFVocab.open(embedded_gguf()) if local else None
    params = GenerationParams(temperature=0.7, top_p=0.9, max_new_tokens=args.tokens)
    services = {}
    for mode, workers in (("at once", 2), ("one after the other", 1)):
        generator = OpenAIGenerator(
            url, model=model, workers=workers,
            prompt_ids=vocab.prompt_ids if vocab else None,
            specials=vocab.template.specials if vocab else None)
        services[mode] = ChatService(store, generator, settings)
    one_pair(services["at once"], params)  # warm-up: the server's first prompt
    times: dict[str, list[float]] = {mode: [] for mode in services}
    for r in range(args.rounds):
        order = list(services) if r % 2 == 0 else list(reversed(services))
        for mode in order:
            seconds, tokens = one_pair(services[mode], params)
            times[mode].append(seconds)
            print(f"  round {r + 1} {mode:>20}: {seconds:6.2f} s, {tokens} tokens", flush=True)
    for service in services.values():
        service.generator.close()
    return statistics.median(times["at once"]), statistics.median(times["one after the other"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", help="an OpenAI-compatible server's /v1 URL (default: start them)")
    ap.add_argument("--model", help="the served model's name (default: the first it lists)")
    ap.add_argument("--servers", default="llama.cpp,vllm", help="the servers to start")
    ap.add_argument("--tokens", type=int, default=96)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    print(cpu_report(), flush=True)  # every figure names its CPU
    workdir = Path(tempfile.mkdtemp(prefix="bench-compare-"))
    if args.url:
        targets = [("the server at " + args.url, lambda: (None, args.url))]
    else:
        starters = {"llama.cpp": lambda: start_server(workdir), "vllm": lambda: start_vllm(workdir)}
        targets = [(name, starters[name]) for name in args.servers.split(",")]
    results = {}
    for name, starter in targets:
        started = time.perf_counter()
        proc, url = starter()
        print(f"{name}: serving at {url} (started in {time.perf_counter() - started:.0f} s)",
              flush=True)
        try:
            results[name] = measure(url, args.model, name == "llama.cpp", args, workdir / name)
        finally:
            if proc is not None and name == "vllm":
                from assistant.engines.vllm_launch import stop

                stop(proc)  # the server and its engine process
            elif proc is not None:
                proc.terminate()
                proc.wait(timeout=30)
    print(f"\nmedian wall time of an A/B pair, {args.tokens}-token answers, {args.rounds} rounds:")
    for name, (at_once, serial) in results.items():
        print(f"  {name:>10}: at once {at_once:6.2f} s, one after the other {serial:6.2f} s: "
              f"at once takes {at_once / serial:.2f}x the time")


if __name__ == "__main__":
    main()
