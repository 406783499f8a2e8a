"""Answering with a trained version, the one path evaluation, on-policy data and synthetic
questions take: the chat's own engine (``bootstrap.build_engine``: llama.cpp, transformers or
a server), the versions checked as servable on its base model and loaded as the chat loads
them, greedy answers in windows (a server batches them), and whatever was loaded for the
purpose unloaded afterwards (the engine may be shared)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import TYPE_CHECKING

from tqdm.auto import tqdm

from assistant.engines.generation import GenerationParams, GenerationStats, Generator, engine_label
from assistant.engines.messages import Messages
from assistant.versions import BASE_VERSION

if TYPE_CHECKING:
    from assistant.config import Settings
    from assistant.engines.models import LoadedModel
    from assistant.registry import Registry


def penalty_of(settings: Settings, option: float | None) -> float:
    """The repetition penalty answers are generated with: the option, else the chat's."""
    return settings.generation.repetition_penalty if option is None else option


class VersionAnswers:
    """The compared versions answering through the chat's own engine (``bootstrap.build_engine``:
    llama.cpp, transformers or a server), greedy, with the versions loaded as the chat loads
    them: what is judged is what serves. ``repetition_penalty`` is the chat's when the
    answers are judged as the chat's (the evaluation); 1.0 (off) by default."""

    def __init__(self, generator: Generator, registry: Registry, fingerprint: str,
                 names: set[str], repetition_penalty: float = 1.0) -> None:
        self.generator = generator
        self.repetition_penalty = repetition_penalty
        self.loaded: list[str] = []
        for name in sorted(names - {BASE_VERSION}):
            version = registry.check_servable(name, fingerprint)
            if name not in generator.loaded_versions():
                generator.load_adapter(name, version.adapter_dir)
                self.loaded.append(name)

    def generate(self, name: str, conversations: list[Messages], max_new_tokens: int,
                 batch_size: int = 8, desc: str = "",
                 params: GenerationParams | None = None) -> list[str]:
        """Greedy with :attr:`repetition_penalty`, unless ``params`` (then its
        ``max_new_tokens`` is used too)."""
        return [text for text, _ in self.generate_with_stats(
            name, conversations, max_new_tokens, batch_size, desc, params)]

    def generate_with_stats(self, name: str, conversations: list[Messages], max_new_tokens: int,
                            batch_size: int = 8, desc: str = "",
                            params: GenerationParams | None = None,
                            logprobs: bool = False) -> list[tuple[str, GenerationStats]]:
        """:meth:`generate`'s answers with each one's statistics (and its tokens'
        log-probabilities when ``logprobs`` and the engine gives them)."""
        params = params or GenerationParams(temperature=0.0, top_p=1.0, max_new_tokens=max_new_tokens,
                                            repetition_penalty=self.repetition_penalty)
        params = replace(params, logprobs=logprobs)
        out: list[tuple[str, GenerationStats]] = []
        with tqdm(total=len(conversations), desc=desc, leave=False) as bar:
            # A window of requests at once: a server batches them, an in-process engine queues.
            for i in range(0, len(conversations), batch_size):
                streams = [self.generator.stream(c, params, version=name)
                           for c in conversations[i:i + batch_size]]
                for stream in streams:
                    out.append(("".join(stream).strip(), stream.stats))
                    bar.update()
        return out

    @property
    def engine(self) -> str:
        """What answers, as stored with each answer: "llama.cpp (Q4_1)"."""
        return engine_label(self.generator)

    def close(self) -> None:
        """Unload what was loaded for the evaluation (the engine may be shared)."""
        for name in self.loaded:
            self.generator.unload_adapter(name)
        self.loaded = []


@contextmanager
def answering(settings: Settings, registry: Registry, names: Iterable[str], *,
              loaded: LoadedModel | None = None, repetition_penalty: float = 1.0,
              generator: Generator | None = None, fingerprint: str | None = None,
              ) -> Iterator[VersionAnswers]:
    """:class:`VersionAnswers` for ``names`` on the chat's engine for ``settings`` (built on
    ``loaded`` when given), or on ``generator`` (a teacher, ...); the base model's
    ``fingerprint`` is computed only when a trained version must be checked against it."""
    names = set(names)
    if generator is None:
        from assistant.bootstrap import build_engine

        engine = build_engine(settings, loaded)
        generator = engine.generator
        if fingerprint is None:
            fingerprint = engine.fingerprint() if names - {BASE_VERSION} else ""
    models = VersionAnswers(generator, registry, fingerprint or "", names,
                            repetition_penalty=repetition_penalty)
    try:
        yield models
    finally:
        models.close()
