"""Hugging Face checkpoints and peft adapters into GGUF files, for llama.cpp.

The conversion scripts are llama.cpp's own (``convert_hf_to_gguf.py``,
``convert_lora_to_gguf.py`` with their ``conversion/`` package and ``gguf-py``). PyPI's
llama-cpp-python wheel does not carry them, its sdist does: ``make setup`` copies them from
that sdist into ``<venv>/share/llama.cpp-convert`` (``scripts/install_llamacpp.sh``). They
run in a child process with the venv's Python, offline: ``--base`` always points at a local
folder, so nothing is fetched from a hub.

Each conversion writes to a temporary name beside its target and renames it into place, so
a conversion that fails or is killed halfway leaves nothing half-written where a reader
would find it. A manifest beside each output records what it was made from; an output whose
source changed is made again.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from assistant.errors import AdapterError, ConversionFailed

log = logging.getLogger(__name__)

SCRIPTS_ENV = "ASSISTANT_LLAMA_CONVERT_DIR"
#: A GGUF file starts with these four bytes.
GGUF_MAGIC = b"GGUF"
#: An adapter converted for llama.cpp, kept inside the adapter's folder.
ADAPTER_GGUF = "adapter_model.gguf"
CONVERT_TIMEOUT_S = 1800


def scripts_dir() -> Path:
    """Where llama.cpp's conversion scripts are; raises :class:`ConversionFailed` if they
    were not installed."""
    configured = os.environ.get(SCRIPTS_ENV)
    folder = Path(configured) if configured else Path(sys.prefix) / "share" / "llama.cpp-convert"
    if not (folder / "convert_hf_to_gguf.py").is_file():
        raise ConversionFailed(
            f"llama.cpp's conversion scripts are not in {folder}. Run `make setup` (it copies "
            "them from the llama-cpp-python sdist), or set "
            f"{SCRIPTS_ENV} to a llama.cpp checkout."
        )
    return folder


def is_gguf(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(4) == GGUF_MAGIC
    except OSError:
        return False


def _source_stamp(paths: list[Path]) -> dict:
    return {str(p.name): [p.stat().st_size, p.stat().st_mtime_ns] for p in sorted(paths)}


def _manifest(out: Path) -> Path:
    return out.with_name(out.name + ".json")


def is_current(out: Path, sources: list[Path], options: dict) -> bool:
    """``out`` exists and was made from ``sources`` as they are now, with ``options``."""
    try:
        recorded = json.loads(_manifest(out).read_text())
    except (OSError, ValueError):
        return False
    return out.is_file() and recorded == {"sources": _source_stamp(sources), **options}


def _run(script: str, args: list[str], out: Path, sources: list[Path], options: dict,
         what: str) -> Path:
    """Run one conversion script into a temporary file beside ``out``, then move it (and its
    manifest) into place."""
    folder = scripts_dir()
    return _run_command(lambda tmp: [sys.executable, str(folder / script), *args, "--outfile", str(tmp)],
                        out, sources, options, what)


# llama.cpp's own quantizer, in a child process (native code; it also prints every tensor).
_QUANTIZE = """
import ctypes, sys, llama_cpp
params = llama_cpp.llama_model_quantize_default_params()
params.ftype = getattr(llama_cpp, "LLAMA_FTYPE_MOSTLY_" + sys.argv[3].upper())
params.allow_requantize = True
sys.exit(llama_cpp.llama_model_quantize(sys.argv[1].encode(), sys.argv[2].encode(), ctypes.byref(params)))
"""


def requantize(gguf: Path, out: Path, ftype: str) -> Path:
    """``gguf`` with its weights in another format (``ftype``: bf16, f16, q8_0, ...), made
    once by llama.cpp's quantizer and reused while ``gguf`` is unchanged. Widening a
    quantized file (Q4_1 to bf16) keeps its values (to bf16's precision): the same model, laid
    out for CPUs that multiply bf16 natively. The embedded model takes ~0.5 s."""
    options = {"ftype": ftype}
    if is_current(out, [gguf], options):
        return out
    return _run_command(lambda tmp: [sys.executable, "-c", _QUANTIZE, str(gguf), str(tmp), ftype],
                        out, [gguf], options, f"{gguf.name} ({ftype})")


def _run_command(command: Callable[[Path], list[str]], out: Path, sources: list[Path],
                 options: dict, what: str) -> Path:
    """Run ``command(tmp)``, which writes a GGUF file to ``tmp`` beside ``out``, then move it
    (and its manifest) into place."""
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{out.name}-", suffix=".tmp", dir=out.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    started = time.perf_counter()
    log.info("Converting %s into %s (once)", what, out)
    try:
        proc = subprocess.run(command(tmp), env=env, capture_output=True, text=True,
                              timeout=CONVERT_TIMEOUT_S)
        if proc.returncode != 0 or not is_gguf(tmp):
            tail = " ".join((proc.stderr or proc.stdout).strip().splitlines()[-3:])[-400:]
            raise ConversionFailed(
                f"Converting {what} to GGUF failed (exit {proc.returncode}): {tail or 'no output'}"
            )
        os.replace(tmp, out)
        _manifest(out).write_text(json.dumps({"sources": _source_stamp(sources), **options}))
    except subprocess.TimeoutExpired as err:
        raise ConversionFailed(
            f"Converting {what} to GGUF took longer than {CONVERT_TIMEOUT_S} s and was stopped."
        ) from err
    finally:
        tmp.unlink(missing_ok=True)
    log.info("Converted %s in %.1f s", what, time.perf_counter() - started)
    return out


def convert_checkpoint(checkpoint: Path, out: Path, outtype: str = "q8_0") -> Path:
    """A transformers checkpoint folder as one GGUF file (``outtype``: f32, f16, bf16,
    q8_0); reused while the checkpoint is unchanged."""
    sources = [p for p in checkpoint.iterdir() if p.suffix in (".json", ".safetensors", ".bin")]
    options = {"outtype": outtype}
    if is_current(out, sources, options):
        return out
    return _run("convert_hf_to_gguf.py", [str(checkpoint), "--outtype", outtype],
                out, sources, options, f"the checkpoint {checkpoint}")


def convert_adapter(adapter: Path, base_checkpoint: Path, outtype: str = "f32") -> Path:
    """A peft LoRA adapter folder as a GGUF LoRA file inside that folder, made once.

    ``base_checkpoint`` is the local transformers folder of the base model (only its
    config is read)."""
    weights = [p for p in (adapter / "adapter_model.safetensors", adapter / "adapter_model.bin")
               if p.is_file()]
    if not weights or not (adapter / "adapter_config.json").is_file():
        raise AdapterError(
            f"{adapter} is not a LoRA adapter folder (adapter_config.json and "
            "adapter_model.safetensors): nothing to convert for llama.cpp."
        )
    out = adapter / ADAPTER_GGUF
    sources = [adapter / "adapter_config.json", *weights]
    options = {"outtype": outtype, "base": str(base_checkpoint)}
    if is_current(out, sources, options):
        return out
    try:
        return _run("convert_lora_to_gguf.py",
                    [str(adapter), "--base", str(base_checkpoint), "--outtype", outtype],
                    out, sources, options, f"the adapter {adapter}")
    except PermissionError as err:
        raise AdapterError(
            f"{adapter} is not writable, so its llama.cpp copy cannot be kept there: "
            "copy the adapter folder somewhere writable."
        ) from err
