"""Try llama.cpp on this CPU, with this model file and build, before the app serves with it.

llama.cpp is native code: a crash in it (a segfault in a weight layout on some CPUs, an
illegal instruction from a build compiled for another CPU) ends the whole process, which for
the app is every user's session. So before the llama.cpp engine loads a model in-process, a
child process loads the same file with the same settings and answers a test question (a
prompt longer than one prompt batch, then a few tokens). The first weight layout that
answers is used; when none does, the caller falls back to another engine and says why.

The outcome is kept in ``<model cache>/llamacpp-checks.json``, keyed by the model file (path,
size, modification time), the llama.cpp build (version and system info), the CPU (model and
SIMD features), the layout and the thread count, so that only the first start on a host
pays for the check: one model load and a short answer in a child process, 1.7 s with the
embedded model on 2 cores (docs/engines.md).

Which layouts are tried (``ASSISTANT_LLAMACPP__LAYOUT``): "auto" tries "repacked" then "plain",
except where the CPU and the build both have AMX: there llama.cpp's AMX layout crashes on
some hosts in ways a short test cannot rule out (an open llama.cpp report, machine-dependent),
so "auto" serves "plain" there; setting "repacked" tries it anyway (still checked first).
"""

from __future__ import annotations

import hashlib
import json
import logging
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from assistant import atomic
from assistant.cpu import CpuInfo, cpu_info, llamacpp_system_info
from assistant.engines.llamacpp import auto_layout

log = logging.getLogger(__name__)

#: The module the child process runs (tests point it at one that crashes on purpose).
PROBE_MODULE = "assistant.engines.llamacpp_probe"
CACHE_FILE = "llamacpp-checks.json"
#: A child that has not answered by then counts as hung (loading the embedded model and
#: answering takes ~1-3 s on 2 cores; a large model on a slow disk takes longer).
TIMEOUT_S = 300.0


@dataclass
class Attempt:
    layout: str
    ok: bool
    detail: str  # what the child said: its answer, or why it failed
    seconds: float
    cached: bool = False
    #: It did not answer in time: not cached, since a loaded machine can be the reason.
    hung: bool = False


@dataclass
class CheckResult:
    """The layout to serve with (None: llama.cpp did not answer in any), and every try."""

    layout: str | None
    attempts: list[Attempt] = field(default_factory=list)

    @property
    def seconds(self) -> float:
        """Time spent checking at this start (0 when every outcome came from the cache)."""
        return sum(a.seconds for a in self.attempts if not a.cached)

    def failures(self) -> str:
        return "; ".join(f"{a.layout} layout: {a.detail}" for a in self.attempts if not a.ok)


def layouts_to_try(setting: str, cpu: CpuInfo, system_info: str | None) -> list[str]:
    """In order: the layout the setting asks for, then the plain one (which needs nothing of
    the CPU beyond what the build was compiled for)."""
    if setting == "auto":
        setting = auto_layout(cpu, system_info)
    return [setting] if setting == "plain" else [setting, "plain"]


def describe_exit(returncode: int, stderr: str) -> str:
    """Why the child failed, for people."""
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        if name == "SIGILL":
            return ("crashed with SIGILL (an illegal instruction: this llama.cpp build was "
                    "compiled for another CPU; rebuild it here with `make clean setup`)")
        return f"crashed with {name}"
    tail = stderr.strip().splitlines()[-1:] or [f"exit status {returncode}"]
    return f"failed: {tail[0][:300]}"


def _key(gguf: Path, layout: str, threads: int, cpu: CpuInfo, system_info: str | None) -> str:
    import llama_cpp

    stat = gguf.stat()
    parts = [str(gguf.resolve()), str(stat.st_size), str(stat.st_mtime_ns), llama_cpp.__version__,
             system_info or "", cpu.key(), layout, str(threads), PROBE_MODULE]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:32]


def _read_cache(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def run_probe(gguf: Path, layout: str, threads: int, timeout: float | None = None) -> Attempt:
    """Load ``gguf`` in ``layout`` in a child process and answer a test question there."""
    timeout = timeout or TIMEOUT_S
    started = time.perf_counter()
    cmd = [sys.executable, "-m", PROBE_MODULE, str(gguf), layout, str(threads)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return Attempt(layout, False, f"did not answer within {timeout:.0f} s",
                       time.perf_counter() - started, hung=True)
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        return Attempt(layout, False, describe_exit(proc.returncode, proc.stderr), seconds)
    lines = proc.stdout.strip().splitlines()
    try:
        answer = json.loads(lines[-1])["answer"]
    except (IndexError, ValueError, KeyError, TypeError):
        return Attempt(layout, False, f"printed no answer ({proc.stdout[-200:]!r})", seconds)
    return Attempt(layout, True, f"answered {answer[:60]!r}", seconds)


def check(gguf: Path, setting: str, threads: int, cache_dir: Path) -> CheckResult:
    """The first layout in which llama.cpp answers with ``gguf`` here (outcomes cached)."""
    cpu = cpu_info()
    system_info = llamacpp_system_info()
    cache_path = cache_dir / CACHE_FILE
    cache = _read_cache(cache_path)
    result = CheckResult(None)
    for layout in layouts_to_try(setting, cpu, system_info):
        key = _key(gguf, layout, threads, cpu, system_info)
        if key in cache:
            attempt = Attempt(**{**cache[key], "cached": True})
        else:
            log.info("Checking llama.cpp with %s in the %s layout on %s", gguf.name, layout,
                     cpu.line())
            attempt = run_probe(gguf, layout, threads)
            if not attempt.hung:
                cache[key] = {k: v for k, v in asdict(attempt).items() if k not in ("cached", "hung")}
                cache_dir.mkdir(parents=True, exist_ok=True)
                atomic.write_text(cache_path, json.dumps(cache, indent=1))
        result.attempts.append(attempt)
        if attempt.ok:
            result.layout = layout
            break
        log.warning("llama.cpp with %s, %s layout, %s", gguf.name, layout, attempt.detail)
    return result
