"""Building the transformers engine from the settings (kept apart from the engine module so
that naming the builder imports nothing heavy until it is used)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from assistant.engines.registry import Engine

if TYPE_CHECKING:
    from assistant.config import Settings
    from assistant.engines.models import LoadedModel


def build(settings: Settings, loaded: LoadedModel | None = None) -> Engine:
    """The transformers engine (reusing ``loaded``, a model already in memory)."""
    from assistant.engines.transformers import TransformersGenerator
    from assistant.engines.models import load_model

    loaded = loaded or load_model(settings)
    generator = TransformersGenerator(loaded, workers=settings.generation_workers)
    return Engine(generator, lambda: loaded.fingerprint, list(loaded.notices))
