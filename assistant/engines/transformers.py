"""The transformers engine: the model in-process, exact fp32, or bf16 where it is fast.

The reference the other engines are checked against, and the model training uses.
Generation runs on long-lived worker threads with transformers' own
``TextIteratorStreamer``, so the caller never blocks on a whole answer.

LoRA adapters (folders written by peft's ``save_pretrained``) are loaded onto the one base
model and switched between answers without reloading it; each answer names the version
("base" or an adapter) that produced it.

Just over 500 lines: the engine is one class (threads, adapters, streaming, stop strings)
whose parts share its lock and worker pool; its construction is already apart
(:mod:`.transformers_build`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from transformers import (
    LogitsProcessor,
    LogitsProcessorList,
    StoppingCriteria,
    StoppingCriteriaList,
    TextIteratorStreamer,
)

from assistant.engines.chat_template import ChatTemplate, from_hf_tokenizer
from assistant.errors import AdapterError, GenerationFailed
from assistant.engines.generation import (
    FINISH_LENGTH,
    FINISH_STOP,
    REPEAT_WINDOW,
    GenerationParams,
    GenerationStats,
    VersionNames,
)
from assistant.engines.models import LoadedModel
from assistant.versions import BASE_VERSION
from assistant.engines.messages import Messages

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

log = logging.getLogger(__name__)

ENGINE = "transformers"


def encode(template: ChatTemplate, tokenizer: PreTrainedTokenizerBase, messages: Messages) -> list[int]:
    """Token ids of the rendered prompt (the template carries its own BOS, if any)."""
    return tokenizer(template.prompt(messages), add_special_tokens=False)["input_ids"]


class _StopOnEvent(StoppingCriteria):
    def __init__(self, event: threading.Event) -> None:
        self.event = event

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs) -> torch.BoolTensor:
        return torch.full(
            (input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device
        )


class _RecentRepetitionPenalty(LogitsProcessor):
    """llama.cpp's repeat penalty: each distinct token among the last ``REPEAT_WINDOW``
    generated ones (not the prompt's) has its logit divided by ``penalty`` (multiplied when
    negative). transformers' own ``repetition_penalty`` looks at the whole prompt too, so
    the two engines would answer differently."""

    def __init__(self, penalty: float, prompt_tokens: int) -> None:
        self.penalty = penalty
        self.prompt_tokens = prompt_tokens

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        made = input_ids[:, self.prompt_tokens:][:, -REPEAT_WINDOW:]
        if made.shape[1] == 0:
            return scores
        seen = torch.gather(scores, 1, made)
        seen = torch.where(seen <= 0, seen * self.penalty, seen / self.penalty)
        return scores.scatter(1, made, seen)


class _LogprobRecorder(LogitsProcessor):
    """Keeps the log-probability of each token made, under the model's own distribution
    (first in the processor list: before any penalty). A step sees the token the step
    before chose at the end of ``input_ids``; the last token's is taken by :meth:`finish`."""

    def __init__(self, prompt_tokens: int) -> None:
        self.prompt_tokens = prompt_tokens
        self.ids: list[int] = []
        self.logprobs: list[float] = []
        self._last: torch.Tensor | None = None

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        self._take(input_ids)
        self._last = torch.log_softmax(scores[0].float(), dim=-1)
        return scores

    def _take(self, input_ids: torch.LongTensor) -> None:
        if self._last is not None and input_ids.shape[1] > self.prompt_tokens + len(self.ids):
            token = int(input_ids[0, -1])
            self.ids.append(token)
            self.logprobs.append(float(self._last[token]))
            self._last = None

    def finish(self, last_token: int | None, made: int) -> None:
        if self._last is not None and last_token is not None and len(self.ids) < made:
            self.ids.append(last_token)
            self.logprobs.append(float(self._last[last_token]))
        self._last = None


class _CountingStreamer(TextIteratorStreamer):
    """Counts generated tokens and stamps the first one (text may lag a token or two
    behind while the streamer waits for a word boundary)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.new_tokens = 0
        self.last_token: int | None = None
        self.first_token_at: float | None = None

    def put(self, value: torch.Tensor) -> None:
        if not (self.skip_prompt and self.next_tokens_are_prompt):
            self.new_tokens += int(value.numel())
            self.last_token = int(value.reshape(-1)[-1])
            if self.first_token_at is None:
                self.first_token_at = time.perf_counter()
        super().put(value)


class TransformersTokenStream:
    def __init__(
        self,
        loaded: LoadedModel,
        template: ChatTemplate,
        messages: Messages,
        params: GenerationParams,
        executor: ThreadPoolExecutor,
        version: str = BASE_VERSION,
        prepare: Callable[[str], AbstractContextManager[torch.nn.Module]] | None = None,
    ):
        tok = loaded.tokenizer
        self.stats = GenerationStats()
        self.version = version
        self._stop = threading.Event()
        self._error: BaseException | None = None
        ids = encode(template, tok, messages)
        enc = {
            "input_ids": torch.tensor([ids], device=loaded.device),
            "attention_mask": torch.ones((1, len(ids)), dtype=torch.long, device=loaded.device),
        }
        self.stats.prompt_tokens = int(enc["input_ids"].shape[1])
        self._streamer = _CountingStreamer(tok, skip_prompt=True, skip_special_tokens=True)
        sampling = params.temperature > 0
        kwargs = dict(
            **enc,
            max_new_tokens=params.max_new_tokens,
            streamer=self._streamer,
            stopping_criteria=StoppingCriteriaList([_StopOnEvent(self._stop)]),
            do_sample=sampling,
            pad_token_id=tok.pad_token_id,
        )
        if sampling:
            kwargs.update(temperature=params.temperature, top_p=params.top_p)
        else:  # greedy: clear sampling defaults a checkpoint's generation_config may carry
            kwargs.update(temperature=None, top_p=None, top_k=None)
        processors: list[LogitsProcessor] = []
        self._recorder = _LogprobRecorder(len(ids)) if params.logprobs else None
        if self._recorder is not None:
            processors.append(self._recorder)
        if params.repetition_penalty != 1.0:
            processors.append(_RecentRepetitionPenalty(params.repetition_penalty, len(ids)))
        if processors:
            kwargs["logits_processor"] = LogitsProcessorList(processors)
        self._tokenizer = tok
        self._max_new_tokens = params.max_new_tokens
        eos = loaded.model.generation_config.eos_token_id
        self._eos = set(eos if isinstance(eos, list) else [eos]) | {tok.eos_token_id}
        # Run on the worker right before generate: sets the model up for `version` and
        # yields it (the model can change between now and then: adapters load and unload).
        self._prepare = prepare or (lambda _version: nullcontext(loaded.model))
        self._kwargs = kwargs
        self._started = time.perf_counter()
        self._job: Future = executor.submit(self._run)

    def _run(self) -> None:
        try:
            with self._prepare(self.version) as model, torch.inference_mode():
                if self._stop.is_set():  # stopped while waiting for the model
                    self._streamer.end()
                    return
                model.generate(**self._kwargs)
        except BaseException as err:  # noqa: BLE001 - handed to the consuming thread
            self._error = err
            self._streamer.end()

    def __iter__(self) -> Iterator[str]:
        for chunk in self._streamer:
            if chunk:
                yield chunk
        if not self._job.cancelled():
            self._job.result()
        self._finish()
        if self._error is not None:
            raise GenerationFailed(
                f"Generation failed: {type(self._error).__name__}: {self._error}"
            ) from self._error

    def stop(self) -> None:
        """Ask the worker to stop after the current token and wait for it."""
        self._stop.set()
        if self._job.cancel():  # still queued behind another answer: it never runs
            self._streamer.end()  # wake a consumer waiting for text
        else:
            self._job.result()
        self._finish()

    def _finish(self) -> None:
        s = self.stats
        s.completion_tokens = self._streamer.new_tokens
        s.stopped = self._stop.is_set()
        if not s.stopped and self._error is None:
            cut = s.completion_tokens >= self._max_new_tokens and self._streamer.last_token not in self._eos
            s.finish_reason = FINISH_LENGTH if cut else FINISH_STOP
        if self._recorder is not None:
            r = self._recorder
            r.finish(self._streamer.last_token, s.completion_tokens)
            s.logprobs = [(self._tokenizer.decode([t], skip_special_tokens=True), lp)
                          for t, lp in zip(r.ids, r.logprobs) if t not in self._eos]
        s.latency_ms = (time.perf_counter() - self._started) * 1000
        if self._streamer.first_token_at is not None:
            s.ttft_ms = (self._streamer.first_token_at - self._started) * 1000


class _VersionGate:
    """Which adapter is active is state of the shared model's LoRA layers, not of a call. So
    generations may overlap only while they use the same version; one that wants another
    version waits until the running ones finish, then switches the model (``switch``).

    Waiters go first come, first served: a run of same-version answers cannot starve another
    version. ``exclusive()`` (loading or unloading adapters) waits its turn the same way, for
    an idle model, and holds everyone off until it is done.
    """

    def __init__(self, switch: Callable[[str], None]) -> None:
        self._switch = switch
        self._cond = threading.Condition()
        self._queue: deque[object] = deque()
        self._running = 0
        self._current: str | None = None  # the version the model is set up for; None: unknown

    def _wait_turn(self, ready: Callable[[], bool]) -> None:  # with the lock held
        ticket = object()
        self._queue.append(ticket)
        try:
            self._cond.wait_for(lambda: self._queue[0] is ticket and ready())
        finally:
            self._queue.remove(ticket)
            self._cond.notify_all()  # the next in line may be free to go as well

    @contextmanager
    def use(self, version: str) -> Iterator[None]:
        with self._cond:
            self._wait_turn(lambda: self._running == 0 or self._current == version)
            if self._current != version:
                self._current = None  # stays unknown if the switch fails halfway
                self._switch(version)
                self._current = version
            self._running += 1
        try:
            yield
        finally:
            with self._cond:
                self._running -= 1
                self._cond.notify_all()

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        with self._cond:
            self._wait_turn(lambda: self._running == 0)
            self._current = None  # the adapters change: the next answer sets the model up anew
            yield


@dataclass(frozen=True)
class _Adapter:
    peft_name: str
    path: Path


_ADAPTER_FILES = "adapter_config.json and adapter_model.safetensors"


def _read_adapter(path: Path, key_mapping: dict | None) -> tuple[object, set[str]]:
    """Check an adapter folder before the model is touched; return its peft config and the
    names of its tensors (to check after loading that every one found its place)."""
    from peft import PeftConfig, PeftType, load_peft_weights

    if not path.is_dir():
        raise AdapterError(
            f"Adapter folder {path} does not exist. Point to the folder that training wrote "
            f"with peft's save_pretrained ({_ADAPTER_FILES})."
        )
    if not (path / "adapter_config.json").is_file():
        raise AdapterError(
            f"{path} has no adapter_config.json, so it is not a LoRA adapter folder. Point to "
            f"the folder that training wrote ({_ADAPTER_FILES})."
        )
    try:
        config = PeftConfig.from_pretrained(str(path))
    except Exception as err:
        raise AdapterError(
            f"{path / 'adapter_config.json'} is unreadable ({type(err).__name__}: "
            f"{str(err)[:200]}). Copy the adapter folder again or retrain the adapter."
        ) from err
    task = getattr(config, "task_type", None)
    if config.peft_type != PeftType.LORA or task not in (None, "CAUSAL_LM"):
        kind = getattr(config.peft_type, "value", config.peft_type)
        raise AdapterError(
            f"{path} holds a {kind} adapter for task {task}; chat needs a LoRA "
            "adapter trained for causal language modelling (task_type CAUSAL_LM). A reward "
            "model's adapter (SEQ_CLS) cannot answer chats."
        )
    if not any((path / f).is_file() for f in ("adapter_model.safetensors", "adapter_model.bin")):
        raise AdapterError(
            f"{path} has no adapter_model.safetensors: the adapter's weights are missing. "
            "Copy the whole folder again or retrain the adapter."
        )
    try:
        weights = load_peft_weights(str(path), device="cpu", key_mapping=key_mapping)
    except Exception as err:
        raise AdapterError(
            f"The adapter weights in {path} are unreadable ({type(err).__name__}: "
            f"{str(err)[:200]}): the file is truncated or corrupt. Copy the folder again or "
            "retrain the adapter."
        ) from err
    return config, set(weights)


def _strip_lora(model: torch.nn.Module) -> None:
    """Put the original layers back where peft injected LoRA layers. This is what
    ``PeftModel.unload()`` does, but it also works after ``PeftModel.from_pretrained`` failed
    halfway: peft injects into ``model`` in place and then leaves no PeftModel to unload."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    for name, module in list(model.named_modules()):
        if isinstance(module, BaseTunerLayer):
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent), child, module.get_base_layer())
    model.__dict__.pop("peft_config", None)  # peft leaves its config dict on the model


_DTYPE_NAMES = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}


class TransformersGenerator(VersionNames):
    """The in-process model: base weights, plus LoRA adapters switched between answers.

    Generation runs on long-lived worker threads (``workers``, default 1): torch's OpenMP
    thread team is kept per calling thread, and a fresh thread per answer measured ~9%
    slower decoding on 2 cores. With one worker, concurrent answers queue instead of
    oversubscribing the cores; a serving engine is the way to batch many users.

    Adapters are injected into the one base model (peft wraps it in a ``PeftModel`` at the
    first :meth:`load_adapter` and unwraps it when the last one is unloaded); the base
    weights are never changed. A :class:`_VersionGate` keeps answers that want different
    versions from running on the shared model at the same time.
    """

    def __init__(self, loaded: LoadedModel, workers: int = 1) -> None:
        self.loaded = loaded
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="generate")
        self.engine = ENGINE
        self.weights = _DTYPE_NAMES.get(loaded.dtype, str(loaded.dtype).removeprefix("torch."))
        #: How it runs on this host, for people: the dtype's reason and the device.
        self.setup = f"{self.weights} on {loaded.device.type}" + (
            f" ({loaded.dtype_reason})" if loaded.dtype_reason else "")
        self.template = from_hf_tokenizer(loaded.tokenizer)
        self.model_id = loaded.model_id
        self.model_version = loaded.version
        self.context_window = loaded.context_window
        self._base = loaded.model  # the plain transformers model, also inside any PeftModel
        self._peft = None  # the PeftModel while adapters are loaded
        self._adapters: dict[str, _Adapter] = {}
        self._serial = 0
        # peft freezes the base parameters when it wraps the model; restored on unwrap
        self._grad_flags = [p.requires_grad for p in self._base.parameters()]
        self._gate = _VersionGate(self._switch)

    def count_prompt_tokens(self, messages: Messages) -> int:
        return len(encode(self.template, self.loaded.tokenizer, messages))

    def close(self) -> None:
        """Finish the answer being generated, then stop the worker; nothing more is served."""
        self._executor.shutdown(wait=True, cancel_futures=True)

    def concurrent_streams(self) -> int:
        # Even with several workers, answers on the one model share its cores (and wait for
        # each other when their versions differ): nothing is batched.
        return 1

    def prompt_ids(self, messages: Messages) -> list[int]:
        """The token ids the model reads for ``messages`` (compared across engines)."""
        return encode(self.template, self.loaded.tokenizer, messages)

    def stream(
        self, messages: Messages, params: GenerationParams, version: str | None = None
    ) -> TransformersTokenStream:
        version = self.model_version if version is None else version
        self._check_known(version)
        return TransformersTokenStream(
            self.loaded, self.template, messages, params, self._executor, version, self._prepare
        )

    # -- versions ---------------------------------------------------------------------------


    def load_adapter(self, name: str, path: str | Path) -> None:
        """Load the LoRA adapter in folder ``path`` under ``name`` (not activated). Raises
        :class:`AdapterError` if the folder is not a readable adapter or does not fit the
        base model; the model is then left exactly as it was."""
        from peft import PeftModel, get_peft_model_state_dict

        path = Path(path).expanduser().resolve()
        if name == BASE_VERSION or not name:
            raise AdapterError(
                f'"{name}" cannot name an adapter: "{BASE_VERSION}" means the model without '
                "one. Pick another name."
            )
        if self._already_loaded(name, path):
            return
        key_mapping = getattr(self._base, "_checkpoint_conversion_mapping", None) or None
        config, expected = _read_adapter(path, key_mapping)  # before the model is held

        with self._gate.exclusive():
            if self._already_loaded(name, path):  # by another thread meanwhile
                return
            # Versions are free-form labels ("dpo-v1.2"); peft uses adapter names as module
            # keys (no ".") and matches them as substrings of state-dict keys (a name inside
            # "lora_" breaks that), so each adapter gets a plain name of our own.
            self._serial += 1
            peft_name = f"adapter{self._serial}"
            # Adapter weights in the base model's dtype on its device (peft would upcast
            # bf16 to fp32, made for training); load_state_dict copies onto that device.
            kwargs = dict(
                adapter_name=peft_name, autocast_adapter_dtype=False,
                torch_device=str(self.loaded.device),
            )
            try:
                if self._peft is None:
                    self._peft = PeftModel.from_pretrained(self._base, str(path), **kwargs)
                else:
                    self._peft.load_adapter(str(path), **kwargs)
                # peft warns about adapted layers that got no weights and says nothing about
                # tensors that match no layer (an adapter for a deeper model): either way a
                # half-loaded adapter would answer with only some of its layers.
                got = set(get_peft_model_state_dict(self._peft, adapter_name=peft_name))
                if got != expected:
                    unused, unfilled = sorted(expected - got), sorted(got - expected)
                    what = [f"{len(unused)} of its tensors match no layer of the model "
                            f"(e.g. {unused[0]})"] if unused else []
                    what += [f"{len(unfilled)} of the layers it adapts got no weights "
                             f"(e.g. {unfilled[0]})"] if unfilled else []
                    raise AdapterError(
                        f"The adapter in {path} does not fit the base model {self.model_id}: "
                        f"{'; '.join(what)}. {_trained_on(config)}"
                    )
            except Exception as err:
                self._discard(peft_name)
                if isinstance(err, AdapterError):
                    raise
                # torch lists every size mismatch, one a line: the first one tells enough
                detail = " ".join(str(err).strip().splitlines()[:2])[:300]
                raise AdapterError(
                    f"The adapter in {path} does not fit the base model {self.model_id} "
                    f"({type(err).__name__}: {detail}). {_trained_on(config)}"
                ) from err
            # peft's load_adapter already calls eval() (is_trainable=False); kept explicit
            # because LoRA dropout left in train mode would make answers random.
            self._peft.eval()
            self.loaded.model = self._peft
            self._adapters[name] = _Adapter(peft_name, path)
        log.info("Loaded adapter %s from %s", name, path)

    def unload_adapter(self, name: str) -> None:
        """Remove adapter ``name`` from the model; if it was active, "base" answers next."""
        if name == BASE_VERSION:
            raise AdapterError(f'"{BASE_VERSION}" is the model itself and cannot be unloaded.')
        with self._gate.exclusive():
            self._check_known(name)
            self._discard(self._adapters.pop(name).peft_name)
            if self.model_version == name:
                self.model_version = BASE_VERSION
        log.info("Unloaded adapter %s", name)

    # -- internals --------------------------------------------------------------------------
    def _already_loaded(self, name: str, path: Path) -> bool:
        adapter = self._adapters.get(name)
        if adapter is None:
            return False
        if adapter.path == path:
            return True
        raise AdapterError(
            f'An adapter named "{name}" is already loaded from {adapter.path}. Unload it '
            f"first to load {path} under that name, or pick another name."
        )


    @contextmanager
    def _prepare(self, version: str) -> Iterator[torch.nn.Module]:
        """On the worker thread, right before generate: wait until the model may run
        ``version``, switch to it, and hold it there until this answer is done."""
        with self._gate.use(version):
            yield self.loaded.model

    def _switch(self, version: str) -> None:
        """Set the model up for ``version``; the gate calls it while nothing generates."""
        if version == BASE_VERSION:
            if self._peft is not None:
                # Not `with peft_model.disable_adapter():` per answer: that context saves and
                # restores a model-wide flag, so overlapping base answers would re-enable the
                # adapter under each other. The flag is flipped once; the gate keeps it.
                self._peft.base_model.disable_adapter_layers()
            return
        adapter = self._adapters.get(version)
        if adapter is None:
            raise AdapterError(
                f'Adapter "{version}" was unloaded before this answer started. '
                "Pick another version and ask again."
            )
        self._peft.set_adapter(adapter.peft_name, inference_mode=True)
        self._peft.base_model.enable_adapter_layers()

    def _discard(self, peft_name: str) -> None:
        """Take one adapter out of the model (also a half-loaded one); once none is left,
        unwrap the base model so it runs exactly as it did before any adapter."""
        if self._peft is not None and peft_name in self._peft.peft_config:
            self._peft.delete_adapter(peft_name)
        if self._peft is None or not self._peft.peft_config:
            _strip_lora(self._base)
            for param, flag in zip(self._base.parameters(), self._grad_flags):
                param.requires_grad_(flag)
            self._peft = None
            self.loaded.model = self._base


def _trained_on(config: object) -> str:
    base = getattr(config, "base_model_name_or_path", None) or "another model"
    return (
        f"It was probably trained on {base}: load it with that base model, or train an "
        "adapter on this one."
    )
