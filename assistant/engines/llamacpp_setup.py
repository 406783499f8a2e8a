"""How the llama.cpp engine is set up from the settings: which GGUF file serves
``ASSISTANT_MODEL`` (the embedded file, a .gguf, or a checkpoint folder converted once), the
weight format it is served in (a bf16 copy on CPUs with fast bf16), the start-up check in a
child process with its fallbacks (another layout, the file itself, the transformers engine),
and readying a trained version (its adapter converted to GGUF). Also the base model's
tokenizer read from its GGUF file, which the OpenAI-compatible engine uses to count tokens.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from assistant.engines.registry import Engine

if TYPE_CHECKING:
    from assistant.config import Settings
    from assistant.engines.llamacpp_check import CheckResult
    from assistant.engines.models import LoadedModel

log = logging.getLogger(__name__)


def build(settings: Settings, loaded: LoadedModel | None = None) -> Engine:
    """The llama.cpp engine for ``settings`` (see the module)."""
    from assistant.engines import llamacpp
    from assistant.engines.transformers_build import build as transformers_build

    if not llamacpp.available():
        engine = transformers_build(settings, loaded)
        engine.notices.insert(0, (
            "llama-cpp-python is not installed (`make setup` builds it; it needs a C++ compiler "
            "and cmake), so the chat runs on the slower transformers engine."))
        return engine
    original, model_id, checkpoint = gguf_for(settings)
    c = settings.llamacpp
    threads = c.threads or llamacpp.default_threads()
    notices: list[str] = []
    gguf, weights = original, None
    if not Path(settings.model).expanduser().is_dir():  # a folder is converted to its format directly
        gguf, weights = _served_copy(original, c.weights, settings.resolved_model_cache_dir, notices)
    layout, setup = c.layout, None
    if c.check:
        from assistant.engines.llamacpp_check import check

        cache = settings.resolved_model_cache_dir
        result = check(gguf, c.layout, threads, cache)
        if result.layout is None and gguf != original:  # the copy failed: try the file itself
            notices.append(_failed(gguf, result, "The file itself is served instead."))
            gguf, weights = original, None
            result = check(gguf, c.layout, threads, cache)
        if result.layout is None:
            engine = transformers_build(settings, loaded)
            engine.notices[:0] = [_failed(gguf, result, (
                "The chat runs on the slower transformers engine instead. Rebuild llama.cpp "
                "(`make clean setup`) or set ASSISTANT_ENGINE=transformers to skip this check.")),
                *notices]
            return engine
        if result.failures():
            notices.append(_failed(gguf, result, f"It serves in the {result.layout} layout "
                                                 "instead (prompts are read more slowly)."))
        layout = result.layout
        when = (f"checked on this CPU in {result.seconds:.1f} s" if result.seconds
                else "checked on this CPU before")
        setup = f"{layout} weight layout, {when}"
    generator = llamacpp.LlamaCppGenerator(
        gguf, model_id, settings.context_window, threads, checkpoint, layout=layout)
    if weights:
        generator.weights = weights
    if setup:
        generator.setup = setup
    return Engine(generator, once(lambda: checkpoint_fingerprint(checkpoint())), notices)


def _failed(gguf: Path, result: CheckResult, then: str) -> str:
    """A notice: what failed when llama.cpp was tried with ``gguf`` here, and what now."""
    from assistant.cpu import cpu_info

    verb = "could not answer a test question with" if result.layout is None else "failed with"
    return f"llama.cpp {verb} {gguf.name} on this CPU ({cpu_info().line()}): {result.failures()}. {then}"


def _served_copy(gguf: Path, setting: str, cache: Path, notices: list[str]) -> tuple[Path, str | None]:
    """The file llama.cpp serves for ``gguf`` (a copy in another weight format, made once, when
    the ``weights`` setting asks for one), and its label for people ("Q4_1 as BF16"; None:
    the file's own)."""
    from assistant.engines.conversion import requantize
    from assistant.engines import llamacpp
    from assistant.errors import ConversionFailed

    served = llamacpp.served_weights(gguf, setting)
    if served == "file":
        return gguf, None
    try:
        copy = requantize(gguf, cache / f"{gguf.stem}.{served}.gguf", served)
    except (ConversionFailed, OSError) as err:
        notices.append(f"Could not make a {served} copy of {gguf.name} ({err}): serving the "
                       "file as it is.")
        return gguf, None
    return copy, f"{llamacpp.file_type(gguf)} as {served.upper()}"


def prepare_version(adapter_dir: Path, base_dir: Path) -> None:
    """Make a trained version servable by llama.cpp now (in the training process, not when
    someone activates it): its adapter converted to GGUF against the base checkpoint
    folder ``base_dir`` (nothing to do when the base is not a folder here)."""
    from assistant.engines.conversion import convert_adapter

    if Path(base_dir).is_dir():
        convert_adapter(adapter_dir, base_dir)


def gguf_for(settings: Settings) -> tuple[Path, str, Callable[[], Path]]:
    """The GGUF file llama.cpp serves for ``ASSISTANT_MODEL``, the model's name, and how to
    get the matching transformers checkpoint (what adapters are converted against)."""
    from assistant.config import EMBEDDED_MODEL
    from assistant.errors import ModelNotFound
    from assistant.engines.model_files import EMBEDDED_FILE, EMBEDDED_NAME, embedded_gguf, is_hub_id

    cache = settings.resolved_model_cache_dir

    def dequantized(gguf: Path) -> Callable[[], Path]:
        def checkpoint() -> Path:
            from assistant.engines.models import checkpoint_for_gguf

            return checkpoint_for_gguf(gguf, cache)
        return checkpoint

    spec = settings.model
    if spec == EMBEDDED_MODEL:
        gguf = embedded_gguf()
        return gguf, f"{EMBEDDED_NAME} (embedded {EMBEDDED_FILE})", dequantized(gguf)
    path = Path(spec).expanduser()
    if path.is_file():
        return path, spec, dequantized(path)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelNotFound(
                f"{path} has no config.json: ASSISTANT_MODEL must point at a transformers "
                "checkpoint folder (config.json, weights, tokenizer) or at a .gguf file.")
        from assistant.engines.conversion import convert_checkpoint

        fmt = _conversion_format(path, settings.llamacpp.convert_to)
        gguf = convert_checkpoint(path, cache / f"{path.resolve().name}.{fmt}.gguf", fmt)
        return gguf, spec, lambda: path
    if is_hub_id(spec):
        raise ModelNotFound(
            f"The llama.cpp engine serves local files, and {spec!r} is a hub id. Download it "
            "and set ASSISTANT_MODEL to its folder or .gguf file, or use "
            "ASSISTANT_ENGINE=transformers (which can fetch it with network).")
    raise ModelNotFound(
        f"Model path '{spec}' does not exist. Set ASSISTANT_MODEL to a checkpoint folder, a "
        ".gguf file, or 'embedded' (the default).")


def _conversion_format(folder: Path, setting: str) -> str:
    """``convert_to``, with auto resolved: bf16 where the CPU multiplies it natively and the
    checkpoint is small (llama.cpp reads prompts fastest from bf16 there: docs/engines.md),
    q8_0 elsewhere (and for large models, whose decoding is bound by the bytes read)."""
    if setting != "auto":
        return setting
    from assistant.cpu import bf16_fast

    size = sum(p.stat().st_size for p in folder.glob("*.safetensors")) or sum(
        p.stat().st_size for p in folder.glob("*.bin"))
    return "bf16" if bf16_fast() and size <= 2 * 2**30 else "q8_0"


@dataclass
class _Vocab:
    prompt_ids: Callable
    template: object
    checkpoint: Callable[[], Path]


def local_vocab(settings: Settings) -> _Vocab:
    """The base model's tokenizer and chat template from its GGUF file, read by llama.cpp
    without its weights (``vocab_only``): fast, and no torch."""
    from assistant.engines.llamacpp import GGUFVocab

    gguf, _, checkpoint = gguf_for(settings)
    vocab = GGUFVocab.open(gguf)
    return _Vocab(vocab.prompt_ids, vocab.template, checkpoint)


def checkpoint_fingerprint(folder: Path) -> str:
    from assistant.engines.models import checkpoint_fingerprint

    return checkpoint_fingerprint(folder)


def once(compute: Callable[[], str]) -> Callable[[], str]:
    value: list[str] = []

    def get() -> str:
        if not value:
            value.append(compute())
        return value[0]

    return get
