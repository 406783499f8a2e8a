"""A stand-in generator for tests about the chat service's wiring, not about the model.

It implements the same :class:`assistant.engines.generation.Generator` protocol as the real one
and is handed to the real :class:`ChatService` exactly as the real one is.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

from assistant.engines.generation import FINISH_LENGTH, FINISH_STOP, GenerationParams, GenerationStats
from assistant.engines.messages import Messages


def count_words(messages: Messages) -> int:
    """One token per whitespace word, plus 3 per message for the template's markers."""
    return sum(len(m["content"].split()) + 3 for m in messages) + 2


class FakeStream:
    def __init__(self, answer: str, prompt_tokens: int, delay: float, fail_after: int | None,
                 version: str = "fake-v1", cut: bool = False, word_logprob: float | None = None):
        self.stats = GenerationStats(prompt_tokens=prompt_tokens,
                                     logprobs=None if word_logprob is None else [])
        self._word_logprob = word_logprob
        self._cut = cut
        self.version = version
        self._words = answer.split()
        self._delay = delay
        self._fail_after = fail_after
        self._stop = threading.Event()
        self._t0 = time.perf_counter()

    def __iter__(self) -> Iterator[str]:
        for i, word in enumerate(self._words):
            if self._stop.is_set():
                break
            if self._fail_after is not None and i == self._fail_after:
                raise RuntimeError("boom")
            time.sleep(self._delay)
            if self.stats.ttft_ms is None:
                self.stats.ttft_ms = (time.perf_counter() - self._t0) * 1000
            self.stats.completion_tokens += 1
            if self.stats.logprobs is not None:
                self.stats.logprobs.append((word + " ", self._word_logprob))
            yield word + " "
        self._finish()

    def stop(self) -> None:
        self._stop.set()
        self._finish()

    def _finish(self) -> None:
        self.stats.stopped = self._stop.is_set()
        if not self.stats.stopped:
            self.stats.finish_reason = FINISH_LENGTH if self._cut else FINISH_STOP
        self.stats.latency_ms = (time.perf_counter() - self._t0) * 1000


class FakeGenerator:
    model_id = "fake-model"
    model_version = "fake-v1"

    def __init__(
        self,
        answer: str = "Paris is the capital of France.",
        context_window: int = 200,
        delay: float = 0.0,
        fail_after: int | None = None,
        streams: int = 1,
        word_logprob: float | None = None,
    ) -> None:
        self.answer = answer
        #: Each word's log-probability, given when a stream asks for them (None: never).
        self.word_logprob = word_logprob
        self.params: list[GenerationParams] = []
        self.streams = streams
        self.context_window = context_window
        self.delay = delay
        self.fail_after = fail_after
        self.prompts: list[Messages] = []
        #: version name -> adapter folder ("loaded" like the real generator's adapters).
        self.adapters: dict[str, object] = {}

    def count_prompt_tokens(self, messages: Messages) -> int:
        return count_words(messages)

    def concurrent_streams(self) -> int:
        return self.streams

    def close(self) -> None:
        pass

    def load_adapter(self, name: str, path) -> None:
        self.adapters[name] = path

    def loaded_versions(self) -> list[str]:
        return [self.model_version, *self.adapters]

    def activate(self, name: str) -> None:
        if name not in self.loaded_versions() and name != "base":
            raise KeyError(name)
        self.model_version = name

    def stream(self, messages: Messages, params: GenerationParams, version: str | None = None) -> FakeStream:
        self.prompts.append(messages)
        self.params.append(params)
        version = version or self.model_version
        words = self.answer.split()
        if messages[-1]["role"] == "assistant":  # continue an answer: the words after it
            words = words[len(messages[-1]["content"].split()):]
        cut = len(words) > params.max_new_tokens  # one word a token
        words = words[: params.max_new_tokens]
        if version != self.model_version:  # another version answers differently
            words = [version, *words]
        return FakeStream(" ".join(words), count_words(messages), self.delay, self.fail_after, version,
                          cut, self.word_logprob if params.logprobs else None)
