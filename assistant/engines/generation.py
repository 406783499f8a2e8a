"""Token generation behind one small interface, whatever engine runs the model.

:class:`Generator` is everything the chat service needs from an engine: count prompt tokens,
stream an answer, and load / activate / unload trained versions (LoRA adapters) without
reloading the base model. Engines live in :mod:`assistant.engines` (transformers in-process,
llama.cpp in-process, any OpenAI-compatible server); ``bootstrap.build_generator`` picks one
from the ``engine`` setting.

This module imports neither torch nor an engine: the UI imports it for the data classes.
"""

from __future__ import annotations

import math
import queue
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol

from assistant.errors import AdapterError, AssistantError, GenerationFailed
from assistant.engines.messages import Messages
from assistant.versions import BASE_VERSION


#: How many of the last generated tokens the repetition penalty looks back on (llama.cpp's
#: ``last_n`` default; the transformers engine uses the same window).
REPEAT_WINDOW = 64
#: ``GenerationStats.finish_reason`` of an answer cut by ``max_new_tokens`` (or by the end of
#: the context window), as OpenAI-compatible servers name it; "stop": the model ended it.
FINISH_LENGTH = "length"
FINISH_STOP = "stop"


@dataclass(frozen=True)
class GenerationParams:
    temperature: float = 0.7
    top_p: float = 0.9
    max_new_tokens: int = 256
    system_prompt: str = ""
    #: Repetition control: the logit of every token among the last ``REPEAT_WINDOW``
    #: generated ones is divided by it (multiplied when negative), as llama.cpp's
    #: ``repeat_penalty`` and transformers' ``repetition_penalty`` do; 1.0 is off. The chat's
    #: default is a setting (``GenerationDefaults``), measured with bench/repetition.py.
    repetition_penalty: float = 1.0
    #: Ask for the log-probability of each token made (``GenerationStats.logprobs``): the
    #: quoting answer mode weighs the model's "The documents do not say." by it.
    logprobs: bool = False

    def as_dict(self) -> dict:
        """How the answer was generated, as stored with it (``logprobs`` is what the caller
        wanted back, not how the answer was made)."""
        return {k: v for k, v in asdict(self).items() if k != "logprobs"}


@dataclass
class GenerationStats:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    ttft_ms: float | None = None
    latency_ms: float = 0.0
    stopped: bool = False
    #: Why the answer ended: FINISH_STOP (the model ended it), FINISH_LENGTH (the token
    #: limit cut it); None while it runs, when stopped by the user, or when not known.
    finish_reason: str | None = None
    #: Each token made, as (its text, its natural-log probability under the model), when
    #: ``GenerationParams.logprobs`` asked and the engine gives them; None otherwise.
    logprobs: list[tuple[str, float]] | None = None


def leading_probability(logprobs: list[tuple[str, float]] | None, text: str) -> float | None:
    """The probability the model gave the start of its answer up to the end of ``text``
    (that start, stripped: its first sentence, say): the product of the probabilities of
    the tokens that spell it. None when the engine gave no log-probabilities or the tokens
    do not spell that much."""
    if logprobs is None:
        return None
    said, total = "", 0.0
    for piece, logprob in logprobs:
        said += piece
        total += logprob
        if len(said.lstrip()) >= len(text.strip()):
            return math.exp(total)
    return None


def token_logprob(logits: object, token: int, vocab: int) -> float:
    """The log-probability of ``token`` under one row of ``vocab`` logits behind a C pointer
    (llama.cpp's ``llama_get_logits``)."""
    import numpy as np

    row = np.ctypeslib.as_array(logits, shape=(vocab,)).astype(np.float64)
    top = row.max()
    return float(row[token] - top - np.log(np.exp(row - top).sum()))


class TokenStream(Protocol):
    """Text chunks as they are produced; ``stats`` is final once iteration ends.
    ``version`` names the model version that produced them ("base" or an adapter)."""

    stats: GenerationStats
    version: str

    def __iter__(self) -> Iterator[str]: ...

    def stop(self) -> None: ...


class Generator(Protocol):
    """A model behind an engine. ``engine`` and ``weights`` say what answers (shown in the
    app and stored with every answer): e.g. "llama.cpp" and "Q4_1"."""

    engine: str
    weights: str
    model_id: str
    model_version: str
    context_window: int

    def count_prompt_tokens(self, messages: Messages) -> int: ...

    def concurrent_streams(self) -> int:
        """How many answers the engine usefully generates at once (compare mode starts A and
        B together when it is more than 1). An engine that answers one at a time says 1 and
        runs the streams it is given in order."""
        ...

    def stream(
        self, messages: Messages, params: GenerationParams, version: str | None = None
    ) -> TokenStream:
        """Answer with ``version`` ("base" or a loaded adapter); None: ``model_version``.
        When ``messages`` ends with an assistant message, continue that answer
        (:func:`assistant.chat.prompting.continued_answer`): the stream yields only the new text."""
        ...

    def loaded_versions(self) -> list[str]:
        """"base" and the names of the adapters loaded so far."""
        ...

    def load_adapter(self, name: str, path: str | Path) -> None:
        """Make the peft adapter folder ``path`` servable as ``name`` (not activated); raise
        :class:`~assistant.errors.AdapterError` and change nothing if it cannot be."""
        ...

    def unload_adapter(self, name: str) -> None: ...

    def activate(self, name: str) -> None:
        """Answer with ``name`` when a stream names no version."""
        ...

    def close(self) -> None:
        """Finish the answer being generated and free the engine's workers (and model);
        nothing is served after it."""
        ...


class VersionNames:
    """The version bookkeeping every engine shares: ``_adapters`` holds the loaded adapters
    by name; "base" is always there."""

    model_version: str
    _adapters: dict

    def loaded_versions(self) -> list[str]:
        return [BASE_VERSION, *self._adapters]

    def activate(self, name: str) -> None:
        """Answer with ``name`` ("base" or a loaded adapter) when a stream names no version."""
        self._check_known(name)
        self.model_version = name

    def _check_known(self, version: str) -> None:
        if version != BASE_VERSION and version not in self._adapters:
            raise AdapterError(
                f'No adapter named "{version}" is loaded (loaded: '
                f'{", ".join(self.loaded_versions())}). Load it first, or pick one of those.'
            )


def engine_label(generator: Generator) -> str:
    """The engine and its weight format, as stored with each answer: "llama.cpp (Q4_1)"."""
    engine = getattr(generator, "engine", None) or type(generator).__name__
    weights = getattr(generator, "weights", None)
    return f"{engine} ({weights})" if weights else engine


def describe(generator: Generator) -> str:
    """One line for people: which model, engine, weights and version are answering."""
    return f"{generator.model_id} · {engine_label(generator)} · version {generator.model_version}"


def setup_of(generator: Generator) -> str | None:
    """How the engine runs on this host and why, when it says ("bf16 on cpu (auto: bf16 is
    fast (AVX512_BF16) on this CPU)", "plain weight layout, checked on this CPU in 1.8 s")."""
    return getattr(generator, "setup", None) or None


class QueuedTokenStream:
    """A stream fed by a job on an engine's worker thread: the job calls ``emit(text)`` for
    each piece and checks ``stopping()`` between tokens; the consumer iterates on its own
    thread and may ``stop()`` from any thread. Engines supply the job; this class owns the
    hand-over, the stop protocol and the statistics."""

    _END = object()

    def __init__(
        self,
        executor: ThreadPoolExecutor,
        job: Callable[[QueuedTokenStream], None],
        version: str,
        prompt_tokens: int = 0,
        logprobs: bool = False,
    ) -> None:
        self.stats = GenerationStats(prompt_tokens=prompt_tokens, logprobs=[] if logprobs else None)
        self.version = version
        self._queue: queue.Queue = queue.Queue()
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._first_at: float | None = None
        self._started = time.perf_counter()
        self._job: Future = executor.submit(self._run, job)

    # -- the worker's side -------------------------------------------------------------------
    def emit(self, text: str, tokens: int = 1, logprob: float | None = None) -> None:
        """Hand ``text`` (``tokens`` tokens) to the reader; ``logprob``: the token's
        log-probability, kept when the stream was made with ``logprobs``."""
        if self._first_at is None and text:  # the first text a reader sees
            self._first_at = time.perf_counter()
        self.stats.completion_tokens += tokens
        if logprob is not None and self.stats.logprobs is not None:
            self.stats.logprobs.append((text, logprob))
        if text:
            self._queue.put(text)

    def stopping(self) -> bool:
        return self._stop.is_set()

    def _run(self, job: Callable[[QueuedTokenStream], None]) -> None:
        try:
            if not self._stop.is_set():
                job(self)
        except BaseException as err:  # noqa: BLE001 - handed to the consuming thread
            self._error = err
        finally:
            self._queue.put(self._END)

    # -- the consumer's side -----------------------------------------------------------------
    def __iter__(self) -> Iterator[str]:
        while (item := self._queue.get()) is not self._END:
            yield item
        self._finish()
        if self._error is not None:
            if isinstance(self._error, AssistantError):  # already says what to do
                raise self._error
            raise GenerationFailed(
                f"Generation failed: {type(self._error).__name__}: {self._error}"
            ) from self._error

    def stop(self) -> None:
        """Ask the worker to stop after the current token and wait for it."""
        self._stop.set()
        if self._job.cancel():  # still queued behind another answer: it never runs
            self._queue.put(self._END)
        else:
            self._job.result()
        self._finish()

    def _finish(self) -> None:
        s = self.stats
        s.stopped = self._stop.is_set()
        s.latency_ms = (time.perf_counter() - self._started) * 1000
        if self._first_at is not None:
            s.ttft_ms = (self._first_at - self._started) * 1000
