"""The llama.cpp engine: a GGUF model in-process through llama-cpp-python.

It serves the GGUF file as it is (the embedded model's Q4_1 as shipped, no conversion before
the first answer) and decodes several times faster than the transformers engine on a CPU,
because it reads 4- or 8-bit weights. The product renders the chat template itself
(:mod:`assistant.engines.chat_template`) and hands llama.cpp token ids, so both engines read the same
prompt.

Trained versions are peft LoRA adapters; each is converted once to a GGUF LoRA kept in its
folder (:func:`assistant.engines.conversion.convert_adapter`), loaded next to the base model with
llama.cpp's adapter API (``llama_adapter_lora_init``), and set per answer with
``llama_set_adapters_lora``: switching versions never reloads the model. Answers run one at
a time on one worker thread (a llama context holds one sequence), so two answers with
different versions never mix; the KV cache is reused across answers with the same version
and a common prompt prefix (a follow-up question re-reads only the new turn), and dropped
when the version changes.
"""

from __future__ import annotations

import codecs
import contextlib
import ctypes
import functools
import logging
import os
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from assistant.engines.chat_template import ChatTemplate, from_gguf_vocab
from assistant.engines.conversion import convert_adapter, is_gguf
from assistant.cpu import CpuInfo
from assistant.errors import AdapterError, CorruptCheckpoint, EngineUnavailable, ModelNotFound
from assistant.engines.generation import (
    FINISH_LENGTH,
    FINISH_STOP,
    REPEAT_WINDOW,
    GenerationParams,
    QueuedTokenStream,
    VersionNames,
    token_logprob,
)
from assistant.versions import BASE_VERSION
from assistant.engines.messages import Messages

if TYPE_CHECKING:
    from llama_cpp._internals import LlamaModel

log = logging.getLogger(__name__)

ENGINE = "llama.cpp"
#: general.file_type in a GGUF header -> the name people know (llama.cpp's llama_ftype).
FILE_TYPES = {0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1",
              10: "Q2_K", 11: "Q3_K_S", 12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S",
              15: "Q4_K_M", 16: "Q5_K_S", 17: "Q5_K_M", 18: "Q6_K", 32: "BF16"}


def available() -> bool:
    """Whether llama-cpp-python is installed (``make setup`` builds it)."""
    import importlib.util

    return importlib.util.find_spec("llama_cpp") is not None


def default_threads() -> int:
    """Physical cores, as llama.cpp recommends (llama-cpp-python's default is half the
    logical CPUs: 1 on a 2-core machine)."""
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
               else os.cpu_count() or 1)


PROMPT_BATCH = 128

#: llama.cpp's weight layouts on a CPU. "repacked": its "extra buffer types" (weights
#: rearranged at load for the CPU's SIMD: AVX2/AVX-512 interleaved blocks, AMX tiles), the
#: fastest where they work; "plain": the weights as the file stores them. The AMX layout
#: crashes on some AMX hosts (a segfault in ggml_backend_amx_mul_mat on the first answer), so
#: :mod:`assistant.engines.llamacpp_check` picks the layout per host and tries it first.
LAYOUTS = ("repacked", "plain")
_params_lock = threading.Lock()


#: auto serves a quantized GGUF file up to this size as a bf16 copy where the CPU multiplies
#: bf16 natively (the copy is ~3.5x the file of a 4-bit model: at most ~1 GB).
BF16_COPY_MAX_FILE = 300 * 2**20
#: File types that are already wide: served as they are.
_WIDE = ("F32", "F16", "BF16")


def _file_type_of(meta: dict) -> str:
    return FILE_TYPES.get(int(meta.get("general.file_type", -1) or -1), "GGUF")


def file_type(path: Path) -> str:
    """The weight format a GGUF file's header names (``general.file_type``): "Q4_1", ...
    Reads the metadata only, once per version of the file (start-up asks twice)."""
    stat = path.stat()
    return _file_type(str(path.resolve()), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=16)
def _file_type(path: str, size: int, mtime_ns: int) -> str:
    model = _vocab_only(Path(path))
    try:
        return _file_type_of(model.metadata())
    finally:
        model.close()


def served_weights(path: Path, setting: str) -> str:
    """"file" (serve ``path`` as it is) or the format to serve a copy of it in. ``auto``: bf16
    for a small quantized file on a CPU with AMX or AVX512_BF16, where llama.cpp reads prompts
    2.3x faster in bf16 than in Q4_1 and decodes about as fast (docs/engines.md); the file
    elsewhere (on AVX2 bf16 is slow; a large model decodes slower from wider weights)."""
    if setting != "auto":
        return setting
    from assistant.cpu import bf16_fast

    if not bf16_fast() or path.stat().st_size > BF16_COPY_MAX_FILE:
        return "file"
    return "file" if file_type(path) in _WIDE else "bf16"


def auto_layout(cpu: CpuInfo, system_info: str | None) -> str:
    """The layout ``auto`` means: "plain" where both the CPU and the llama.cpp build have AMX
    (its AMX layout crashes on some such hosts), else "repacked"."""
    return "plain" if cpu.amx and "AMX_INT8 = 1" in (system_info or "") else "repacked"


def default_layout() -> str:
    """:func:`auto_layout` for this machine and this llama.cpp build."""
    from assistant.cpu import cpu_info, llamacpp_system_info

    return auto_layout(cpu_info(), llamacpp_system_info())


@contextlib.contextmanager
def weight_layout(layout: str) -> Iterator[None]:
    """Load models in ``layout`` while inside. ``Llama(...)`` does not expose the model
    parameter ``use_extra_bufts``: it takes llama.cpp's defaults (extra buffer types on) from
    ``llama_model_default_params``, so that function is wrapped while a model loads."""
    if layout == "auto":
        layout = default_layout()
    if layout not in LAYOUTS:
        raise ValueError(f"unknown llama.cpp weight layout {layout!r}: one of {LAYOUTS}")
    if layout == "repacked":
        yield
        return
    import llama_cpp.llama_cpp as native

    with _params_lock:
        original = native.llama_model_default_params

        def plain() -> object:
            params = original()
            params.use_extra_bufts = False
            return params

        native.llama_model_default_params = plain
        try:
            yield
        finally:
            native.llama_model_default_params = original


class GGUFVocab:
    """The tokenizer and chat template of a GGUF model, as llama.cpp reads them. ``model`` is
    llama-cpp-python's model wrapper: a loaded model's, or one loaded with ``vocab_only``
    (:meth:`open`: no weights, fast), which is how the OpenAI-compatible engine counts the
    tokens of a model it does not run."""

    def __init__(self, model: LlamaModel, path: Path) -> None:
        import llama_cpp

        self._model = model
        meta = model.metadata()
        self.weights = _file_type_of(meta)
        self.n_ctx_train = model.n_ctx_train()
        control = llama_cpp.LLAMA_TOKEN_ATTR_CONTROL
        vocab = model.vocab
        n_vocab = llama_cpp.llama_vocab_n_tokens(vocab)
        specials = {model.token_get_text(t) for t in range(n_vocab)
                    if llama_cpp.llama_vocab_get_attr(vocab, t) & control}
        names = {"bos_token": model.token_bos(), "eos_token": model.token_eos()}
        variables = {k: model.token_get_text(t) for k, t in names.items() if t >= 0}
        self.template: ChatTemplate = from_gguf_vocab(
            meta.get("tokenizer.chat_template"), specials, variables, str(path))

    @classmethod
    def open(cls, path: str | Path) -> GGUFVocab:
        path = _checked_gguf(Path(path).expanduser())
        return cls(_vocab_only(path), path)

    def prompt_ids(self, messages: Messages) -> list[int]:
        text = self.template.prompt(messages)
        return self._model.tokenize(text.encode("utf-8"), add_bos=False, special=True)


def _vocab_only(path: Path) -> LlamaModel:
    """``path``'s metadata and vocabulary, without its weights (fast)."""
    import llama_cpp
    from llama_cpp._internals import LlamaModel

    params = llama_cpp.llama_model_default_params()
    params.vocab_only = True
    try:
        return LlamaModel(path_model=str(path), params=params, verbose=False)
    except (ValueError, RuntimeError, OSError) as err:
        raise CorruptCheckpoint(
            f"llama.cpp could not read the vocabulary of {path} ({err}): the file is "
            "truncated or corrupt."
        ) from err


def _checked_gguf(path: Path) -> Path:
    if not path.is_file():
        raise ModelNotFound(f"GGUF file {path} does not exist.")
    if not is_gguf(path):
        raise CorruptCheckpoint(
            f"{path} is not a GGUF file (it does not start with the GGUF magic bytes). "
            "Point ASSISTANT_MODEL at a .gguf file or a transformers checkpoint folder."
        )
    return path


@dataclass
class _Adapter:
    path: Path  # the peft folder
    gguf: Path
    handle: object  # llama_adapter_lora_p


class LlamaCppGenerator(VersionNames):
    """A GGUF model served in-process by llama.cpp, with live LoRA switching.

    ``base_checkpoint`` returns the local transformers folder of the same base model (its
    config is what the adapter conversion needs); it is called only when an adapter is
    first loaded.
    """

    def __init__(
        self,
        model_path: str | Path,
        model_id: str,
        context_window: int | None = None,
        threads: int | None = None,
        base_checkpoint: Callable[[], Path] | None = None,
        layout: str = "auto",
    ) -> None:
        path = _checked_gguf(Path(model_path).expanduser())
        try:
            from llama_cpp import Llama
        except ImportError as err:
            raise EngineUnavailable(
                "llama-cpp-python is not installed (`make setup` builds it; it needs a C++ "
                "compiler and cmake). Set ASSISTANT_ENGINE=transformers meanwhile."
            ) from err
        self.path = path
        self.engine = ENGINE
        self.model_id = model_id
        self.model_version = BASE_VERSION
        self._base_checkpoint = base_checkpoint
        self.threads = threads or default_threads()
        self.layout = default_layout() if layout == "auto" else layout
        #: How it runs on this host, for people (the app sets it after its start-up check).
        self.setup = f"{self.layout} weight layout"
        try:
            # Prompts are read 128 tokens at a time: 8-11% faster than llama.cpp's 512 on
            # every weight format of the embedded model here (bench/prefill.py).
            with weight_layout(self.layout):
                self._llm = Llama(
                    model_path=str(path), n_ctx=context_window or 0, n_threads=self.threads,
                    n_threads_batch=self.threads, n_batch=PROMPT_BATCH, n_ubatch=PROMPT_BATCH,
                    last_n_tokens_size=REPEAT_WINDOW,
                    verbose=False,
                )
        except (ValueError, RuntimeError, OSError) as err:
            raise CorruptCheckpoint(
                f"llama.cpp could not load {path} ({err}): the file is truncated or corrupt, "
                "or its architecture is one this llama.cpp build does not know. Copy it again "
                "or point ASSISTANT_MODEL elsewhere."
            ) from err
        self.context_window = self._llm.n_ctx()
        self.vocab = GGUFVocab(self._llm._model, path)
        self.template = self.vocab.template
        self.weights = self.vocab.weights
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="llama.cpp")
        self._adapters: dict[str, _Adapter] = {}
        self._current: str | None = BASE_VERSION  # the version the context is set up for
        self._lock = threading.Lock()  # loading / unloading vs. the worker's switch

    # -- prompt --------------------------------------------------------------------------------
    def prompt_ids(self, messages: Messages) -> list[int]:
        """The token ids the model reads for ``messages`` (the template carries its BOS)."""
        return self.vocab.prompt_ids(messages)

    def count_prompt_tokens(self, messages: Messages) -> int:
        return len(self.vocab.prompt_ids(messages))

    def close(self) -> None:
        """Finish the answer being generated, then stop the worker; nothing more is served."""
        self._executor.shutdown(wait=True, cancel_futures=True)
        llm, self._llm = self._llm, None
        if llm is not None and hasattr(llm, "close"):
            llm.close()  # frees the model and its context now, not when collected

    def concurrent_streams(self) -> int:
        return 1  # one context, one sequence: answers queue on the one worker

    # -- answers -------------------------------------------------------------------------------
    def stream(
        self, messages: Messages, params: GenerationParams, version: str | None = None
    ) -> QueuedTokenStream:
        version = self.model_version if version is None else version
        self._check_known(version)
        ids = self.prompt_ids(messages)

        def job(out: QueuedTokenStream) -> None:
            self._use(version)
            self._generate(ids, params, out)

        return QueuedTokenStream(self._executor, job, version, prompt_tokens=len(ids),
                                 logprobs=params.logprobs)

    def _generate(self, ids: list[int], params: GenerationParams, out: QueuedTokenStream) -> None:
        import llama_cpp

        llm = self._llm
        vocab = llm._model.vocab
        room = self.context_window - len(ids)
        limit = min(params.max_new_tokens, room)
        if limit <= 0:
            out.stats.finish_reason = FINISH_LENGTH
            return
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        greedy = params.temperature <= 0
        # top_k / min_p / typical off: the same sampling the transformers engine does. The
        # repeat penalty looks at the last `last_n_tokens_size` (REPEAT_WINDOW) tokens made.
        tokens = llm.generate(
            ids, temp=0.0 if greedy else params.temperature, top_p=1.0 if greedy else params.top_p,
            top_k=0, min_p=0.0, typical_p=1.0, repeat_penalty=params.repetition_penalty,
            reset=True,
        )
        made = 0
        finish = None
        try:
            for token in tokens:
                if llama_cpp.llama_vocab_is_eog(vocab, token):
                    finish = FINISH_STOP
                    break
                made += 1
                # The logits the token was chosen from (the next is evaluated after we have it).
                logprob = token_logprob(llm._ctx.get_logits(), token, llm.n_vocab()) if params.logprobs else None
                out.emit(decoder.decode(llm.detokenize([token])), logprob=logprob)
                if made >= limit:
                    finish = FINISH_LENGTH
                    break
                if out.stopping():
                    break
            out.emit(decoder.decode(b"", final=True), tokens=0)
        finally:
            tokens.close()
        out.stats.finish_reason = finish

    # -- versions ------------------------------------------------------------------------------


    def load_adapter(self, name: str, path: str | Path) -> None:
        """Convert the peft adapter in ``path`` to a GGUF LoRA (once, kept in that folder) and
        load it next to the base model under ``name`` (not activated)."""
        import llama_cpp

        path = Path(path).expanduser().resolve()
        if name == BASE_VERSION or not name:
            raise AdapterError(
                f'"{name}" cannot name an adapter: "{BASE_VERSION}" means the model without '
                "one. Pick another name."
            )
        known = self._adapters.get(name)
        if known is not None:
            if known.path == path:
                return
            raise AdapterError(
                f'An adapter named "{name}" is already loaded from {known.path}. Unload it '
                f"first to load {path} under that name, or pick another name."
            )
        _check_peft_folder(path)
        if self._base_checkpoint is None:
            raise AdapterError(
                f"{self.path.name} has no transformers checkpoint to read the base config from, "
                "so adapters cannot be converted for llama.cpp here."
            )
        gguf = convert_adapter(path, self._base_checkpoint())

        # On the worker, between answers, like every change to the model and its context.
        def job() -> None:
            handle = llama_cpp.llama_adapter_lora_init(self._llm._model.model,
                                                       str(gguf).encode("utf-8"))
            if not handle:
                raise AdapterError(
                    f"llama.cpp refused the adapter {gguf} (converted from {path}): it does not "
                    f"fit {self.model_id} (trained on another base model?)."
                )
            with self._lock:
                self._adapters[name] = _Adapter(path, gguf, handle)

        self._executor.submit(job).result()
        log.info("Loaded adapter %s from %s", name, gguf)

    def unload_adapter(self, name: str) -> None:
        import llama_cpp

        if name == BASE_VERSION:
            raise AdapterError(f'"{BASE_VERSION}" is the model itself and cannot be unloaded.')
        self._check_known(name)

        # On the worker, between answers: no answer is using the adapter when it is freed.
        def job() -> None:
            with self._lock:
                adapter = self._adapters.pop(name)
                if self._current == name:
                    self._set([])
                    self._current = BASE_VERSION
                llama_cpp.llama_adapter_lora_free(adapter.handle)

        self._executor.submit(job).result()
        if self.model_version == name:
            self.model_version = BASE_VERSION
        log.info("Unloaded adapter %s", name)

    # -- internals -----------------------------------------------------------------------------

    def _use(self, version: str) -> None:
        """On the worker: set the context up for ``version`` if it is not already."""
        with self._lock:
            if self._current == version:
                return
            if version == BASE_VERSION:
                self._set([])
            else:
                adapter = self._adapters.get(version)
                if adapter is None:
                    raise AdapterError(
                        f'Adapter "{version}" was unloaded before this answer started. '
                        "Pick another version and ask again."
                    )
                self._set([adapter.handle])
            self._current = version

    def _set(self, handles: list) -> None:
        import llama_cpp

        n = len(handles)
        adapters = (llama_cpp.llama_adapter_lora_p_ctypes * max(n, 1))(*handles)
        scales = (ctypes.c_float * max(n, 1))(*([1.0] * n))
        if llama_cpp.llama_set_adapters_lora(self._llm._ctx.ctx, adapters if n else None, n,
                                             scales if n else None):
            raise AdapterError("llama.cpp could not set the adapter on its context.")
        # The cached keys and values were computed with the previous weights.
        self._llm.reset()


def _check_peft_folder(path: Path) -> None:
    """The checks the transformers engine makes before touching the model, on files only."""
    import json

    if not path.is_dir():
        raise AdapterError(
            f"Adapter folder {path} does not exist. Point to the folder that training wrote "
            "with peft's save_pretrained (adapter_config.json and adapter_model.safetensors)."
        )
    try:
        config = json.loads((path / "adapter_config.json").read_text())
    except FileNotFoundError as err:
        raise AdapterError(
            f"{path} has no adapter_config.json, so it is not a LoRA adapter folder. Point to "
            "the folder that training wrote (adapter_config.json and adapter_model.safetensors)."
        ) from err
    except (OSError, ValueError) as err:
        raise AdapterError(
            f"{path / 'adapter_config.json'} is unreadable ({err}). Copy the adapter folder "
            "again or retrain the adapter."
        ) from err
    task = config.get("task_type")
    if config.get("peft_type") != "LORA" or task not in (None, "CAUSAL_LM"):
        raise AdapterError(
            f"{path} holds a {config.get('peft_type')} adapter for task {task}; chat needs a "
            "LoRA adapter trained for causal language modelling (task_type CAUSAL_LM). A "
            "reward model's adapter (SEQ_CLS) cannot answer chats."
        )
    if not (path / "adapter_model.safetensors").is_file():
        raise AdapterError(
            f"{path} has no adapter_model.safetensors: the adapter's weights are missing. "
            "Copy the whole folder again or retrain the adapter."
        )
