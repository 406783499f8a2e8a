"""The engine registry (assistant.engines.registry): the ``engine`` setting is checked
against it, a new engine is one registry entry (here added at run time, as a package's entry
point adds one), and no code outside ``assistant/engines`` switches on an engine's name."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import BaseModel, ValidationError

from assistant.bootstrap import build_chat_service, build_engine
from assistant.config import Settings
from assistant.engines import registry
from assistant.engines.registry import Engine, EngineSettingsInvalid, EngineSpec, UnknownEngine, engine_settings
from tests.fakes import FakeGenerator

ROOT = Path(__file__).resolve().parents[1]
prepared: list[tuple[Path, Path]] = []


def build_echo(settings, loaded=None) -> Engine:
    return Engine(FakeGenerator(answer="Echo engine here.", context_window=2000), lambda: "fp")


def prepare_echo(adapter_dir: Path, base_dir: Path) -> None:
    prepared.append((adapter_dir, base_dir))


@pytest.fixture
def echo():
    registry.register(EngineSpec("echo", "a test engine", f"{__name__}:build_echo", f"{__name__}:prepare_echo"))
    yield
    registry.unregister("echo")


def test_the_setting_names_a_registered_engine(tmp_path):
    assert registry.names()[:3] == ["llamacpp", "transformers", "openai"]
    with pytest.raises(ValidationError, match="no engine named 'ollama'; the engines are: llamacpp, "
                                              "transformers, openai"):
        Settings(data_dir=tmp_path, engine="ollama")
    with pytest.raises(UnknownEngine, match="the engines are"):
        registry.spec("ollama")


def test_a_new_engine_is_one_entry_and_serves_the_chat(echo, settings, tmp_path):
    s = settings.model_copy(update={"engine": "echo"})
    assert Settings(data_dir=tmp_path, engine="echo").engine == "echo"
    assert build_engine(s).generator.answer == "Echo engine here."
    service = build_chat_service(s)
    reply = service.send(None, "Hello?")
    assert "".join(reply).strip() == "Echo engine here."
    # Training readies a version through the registry, not by naming the engine.
    assert registry.prepare_version(s, tmp_path / "adapter", tmp_path / "base")
    assert prepared[-1] == (tmp_path / "adapter", tmp_path / "base")
    assert not registry.prepare_version(s.model_copy(update={"engine": "transformers"}),
                                        tmp_path / "a", tmp_path / "b")


class ShoutSettings(BaseModel):
    """A plugin engine's own settings model, as its module would define it."""

    greeting: str = "Hello"
    repeat: int = 1


def build_shout(settings, loaded=None) -> Engine:
    own = engine_settings(settings)
    return Engine(FakeGenerator(answer=" ".join([own.greeting] * own.repeat), context_window=2000), lambda: "fp")


def test_an_added_engine_reads_its_own_settings_from_the_environment(monkeypatch, settings, tmp_path):
    """Its settings model is named in its one entry; ASSISTANT_ENGINES__SHOUT__* fill it, and a
    value that does not fit is refused with the variable's name when the engine is built."""
    registry.register(EngineSpec("shout", "a test engine with settings", f"{__name__}:build_shout",
                                 settings=f"{__name__}:ShoutSettings"))
    try:
        monkeypatch.setenv("ASSISTANT_ENGINES__SHOUT__GREETING", "Ahoy")
        monkeypatch.setenv("ASSISTANT_ENGINES__SHOUT__REPEAT", "2")
        s = Settings(data_dir=tmp_path, engine="shout")
        assert build_engine(s).generator.answer == "Ahoy Ahoy"
        assert engine_settings(s.model_copy(update={"engines": {}})) == ShoutSettings()  # its defaults
        monkeypatch.setenv("ASSISTANT_ENGINES__SHOUT__REPEAT", "twice")
        with pytest.raises(EngineSettingsInvalid, match="ASSISTANT_ENGINES__SHOUT__REPEAT: Input should be "
                                                        "a valid integer"):
            build_engine(Settings(data_dir=tmp_path, engine="shout"))
        with pytest.raises(EngineSettingsInvalid, match="has no settings of its own"):
            engine_settings(s, "transformers")
    finally:
        registry.unregister("shout")


def test_no_engine_name_switch_outside_the_engines_package():
    switch = re.compile(r"""engine\s*(==|!=|in)\s*[("'\[]""")
    found = []
    for folder in ("assistant", "alignment", "ui"):
        for path in (ROOT / folder).rglob("*.py"):
            if "engines" in path.relative_to(ROOT).parts:
                continue
            for n, line in enumerate(path.read_text().splitlines(), start=1):
                if switch.search(line):
                    found.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert found == []
