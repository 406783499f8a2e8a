"""What CPU this is, what it runs fast, and the line every figure is printed under.

Hosts differ (AVX2 only, AVX-512 with or without AVX512_BF16, AMX), and what is fastest or even
safe depends on them: bf16 matmul is many times slower than fp32 on an AVX2 CPU and several
times faster on an AMX one; llama.cpp's AMX weight layout crashes on some AMX hosts. This
module reads the CPU's features once (``/proc/cpuinfo`` on Linux) so that those choices are
made per host, and says which host a figure came from (``python -m assistant.cpu``).

It imports neither torch nor llama.cpp at import time.
"""

from __future__ import annotations

import functools
import os
import platform
from dataclasses import dataclass
from pathlib import Path

#: Feature flags people know by these names, in the order they are shown.
SIMD = (("avx2", "AVX2"), ("avx512f", "AVX-512"), ("avx512_bf16", "AVX512_BF16"),
        ("avx512_vnni", "AVX512_VNNI"), ("amx_bf16", "AMX"))


@dataclass(frozen=True)
class CpuInfo:
    model: str
    flags: frozenset[str]
    cores: int

    @property
    def amx(self) -> bool:
        return "amx_bf16" in self.flags or "amx_int8" in self.flags

    @property
    def avx512_bf16(self) -> bool:
        return "avx512_bf16" in self.flags

    @property
    def avx2(self) -> bool:
        return "avx2" in self.flags

    def simd(self) -> list[str]:
        return [name for flag, name in SIMD if flag in self.flags]

    def line(self) -> str:
        """``AMD EPYC, 2 cores: AVX2 AVX-512 AVX512_BF16 AVX512_VNNI (no AMX)``."""
        simd = " ".join(self.simd()) or "no AVX2"
        return f"{self.model}, {self.cores} cores: {simd}{'' if self.amx else ' (no AMX)'}"

    def key(self) -> str:
        """What a cached per-CPU decision is keyed on."""
        return f"{self.model}|{' '.join(sorted(f for f, _ in SIMD if f in self.flags))}"


def _usable_cores() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def parse_cpuinfo(text: str, cores: int) -> CpuInfo:
    model, flags = "", ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and not model:
            model = value.strip()
        elif key == "flags" and not flags:
            flags = value
    return CpuInfo(model or platform.processor() or platform.machine() or "unknown CPU",
                   frozenset(flags.split()), cores)


@functools.cache
def cpu_info() -> CpuInfo:
    """This machine's CPU (cached: it does not change while the process runs)."""
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:  # not Linux: no flags, so every choice falls back to the safe one
        text = ""
    return parse_cpuinfo(text, _usable_cores())


def llamacpp_system_info() -> str | None:
    """The llama.cpp build's own account of the features it was compiled with and found
    (``AVX512 = 1 | AMX_INT8 = 1 | REPACK = 1 ...``), or None when it is not installed."""
    try:
        import llama_cpp
    except ImportError:
        return None
    return llama_cpp.llama_print_system_info().decode("utf-8", "replace").strip()


def report() -> str:
    """The lines printed at the top of every benchmark and before the tests."""
    import torch

    cpu = cpu_info()
    lines = [f"CPU: {cpu.line()}",
             f"torch {torch.__version__}, {torch.get_num_threads()} threads; "
             f"bf16 here: {bf16_reason(cpu)}"]
    info = llamacpp_system_info()
    lines.append(f"llama.cpp: {info}" if info else "llama.cpp: not installed")
    return "\n".join(lines)


def bf16_fast(cpu: CpuInfo | None = None) -> bool:
    """Whether bf16 matmul is fast on this CPU: AMX, or AVX512_BF16 (measured in
    docs/engines.md: without either, bf16 runs through slow conversion paths)."""
    cpu = cpu or cpu_info()
    return cpu.amx or cpu.avx512_bf16


def bf16_reason(cpu: CpuInfo | None = None) -> str:
    cpu = cpu or cpu_info()
    if cpu.amx:
        return "fast (AMX)"
    if cpu.avx512_bf16:
        return "fast (AVX512_BF16)"
    return "slow (no AVX512_BF16 or AMX)"


if __name__ == "__main__":
    print(report())
