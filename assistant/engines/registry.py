"""The engines the ``engine`` setting can name: one :class:`EngineSpec` each.

An engine is a module under ``assistant/engines`` (or any installed package) with a
``build(settings, loaded) -> Engine`` function, and one line here (:data:`BUILT_IN`) or an
entry point in the ``assistant.engines`` group whose value is an :class:`EngineSpec`.
``Settings.engine`` is checked against :func:`names`; the CLI and the sidebar list them from
here; training asks :func:`prepare_version` to make a new version servable (llama.cpp
converts its adapter to GGUF) instead of naming an engine.

An engine's own settings: a pydantic model named by ``EngineSpec.settings``, filled from
``ASSISTANT_ENGINES__<NAME>__<FIELD>`` (``Settings.engines``) and checked when the engine is
built (:func:`engine_settings`), so a new engine with settings is still one module and one
entry. (The built-in engines' settings predate this: their groups in ``assistant/config.py``,
``ASSISTANT_LLAMACPP__*``, ``ASSISTANT_OPENAI__*``, ``ASSISTANT_VLLM__*``, stay as they are.)

This module imports no engine: builders are named as ``"module:function"`` and imported when
used, so that reading the settings stays fast.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING

from assistant.errors import AssistantError

if TYPE_CHECKING:
    from pydantic import BaseModel

    from assistant.config import Settings
    from assistant.engines.generation import Generator
    from assistant.engines.models import LoadedModel

log = logging.getLogger(__name__)

#: The entry-point group a package adds engines with (value: an EngineSpec).
ENTRY_POINTS = "assistant.engines"


@dataclass
class Engine:
    """A generator and what the service needs to know about its base model."""

    generator: Generator
    #: The base model's fingerprint (``models.fingerprint``), computed when first needed:
    #: adapters are checked against it before they are served.
    fingerprint: Callable[[], str]
    notices: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class EngineSpec:
    """An engine the ``engine`` setting can name."""

    name: str
    #: One line for people: what runs the model.
    summary: str
    #: ``"module:function"``: ``function(settings, loaded) -> Engine``.
    builder: str
    #: ``"module:function"``: ``function(adapter_dir, base_dir)`` readies a trained version
    #: for this engine when it is registered (None: it serves peft adapters as they are).
    prepare: str | None = None
    #: ``"module:Class"``: the pydantic model of its own settings (:func:`engine_settings`).
    settings: str | None = None


BUILT_IN = (
    EngineSpec("llamacpp", "llama.cpp in-process: fast on CPUs (falls back to transformers "
               "when llama-cpp-python is missing or fails its start-up check)",
               "assistant.engines.llamacpp_setup:build", "assistant.engines.llamacpp_setup:prepare_version"),
    EngineSpec("transformers", "transformers in-process: exact fp32/bf16, the reference",
               "assistant.engines.transformers_build:build"),
    EngineSpec("openai", "an OpenAI-compatible server (vLLM, llama.cpp's servers): see `openai`",
               "assistant.engines.openai_server:build"),
)

_added: dict[str, EngineSpec] = {}


class EngineSettingsInvalid(AssistantError):
    """An engine's own settings (``ASSISTANT_ENGINES__<NAME>__*``) do not fit its model."""


class UnknownEngine(ValueError):
    def __init__(self, name: str) -> None:
        super().__init__(f"No engine named {name!r}; the engines are: {', '.join(names())}.")


@cache
def _installed() -> tuple[EngineSpec, ...]:
    found = []
    for ep in entry_points(group=ENTRY_POINTS):
        try:
            spec = ep.load()
        except Exception as err:  # noqa: BLE001 - a broken plugin must not stop the app
            log.warning("Engine entry point %s could not be loaded: %s", ep.name, err)
            continue
        if isinstance(spec, EngineSpec):
            found.append(spec)
        else:
            log.warning("Engine entry point %s is not an EngineSpec: ignored", ep.name)
    return tuple(found)


def engines() -> dict[str, EngineSpec]:
    """Every engine by name: the built-in ones, installed packages', and :func:`register`'s."""
    out = {s.name: s for s in BUILT_IN}
    out.update({s.name: s for s in _installed()})
    out.update(_added)
    return out


def names() -> list[str]:
    return list(engines())


def register(spec: EngineSpec) -> None:
    """Add (or replace) an engine at run time, as an entry point would."""
    _added[spec.name] = spec


def unregister(name: str) -> None:
    _added.pop(name, None)


def spec(name: str) -> EngineSpec:
    found = engines().get(name)
    if found is None:
        raise UnknownEngine(name)
    return found


def _resolve(target: str) -> Callable:
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


def build(settings: Settings, loaded: LoadedModel | None = None) -> Engine:
    """The engine ``settings.engine`` names, built from the settings."""
    return _resolve(spec(settings.engine).builder)(settings, loaded)


def engine_settings(settings: Settings, name: str | None = None) -> BaseModel:
    """The settings of engine ``name`` (default: ``settings.engine``) as its own model, from
    ``ASSISTANT_ENGINES__<NAME>__<FIELD>``; :class:`EngineSettingsInvalid` naming the
    variables when they do not fit."""
    from pydantic import ValidationError

    name = name or settings.engine
    target = spec(name).settings
    if target is None:
        raise EngineSettingsInvalid(f"The {name} engine has no settings of its own.")
    values = settings.engines.get(name, {})
    try:
        return _resolve(target).model_validate(values)
    except ValidationError as err:
        problems = "; ".join(
            f"ASSISTANT_ENGINES__{name.upper()}__{'__'.join(map(str, e['loc'])).upper()}: {e['msg']}"
            for e in err.errors())
        raise EngineSettingsInvalid(f"The {name} engine's settings do not fit: {problems}.") from err


def prepare_version(settings: Settings, adapter_dir: str | Path, base_dir: str | Path) -> bool:
    """Ready a trained version's adapter for the configured engine (e.g. llama.cpp's GGUF
    copy), when the engine needs that; True when something was done."""
    target = spec(settings.engine).prepare
    if target is None:
        return False
    _resolve(target)(Path(adapter_dir), Path(base_dir))
    return True
