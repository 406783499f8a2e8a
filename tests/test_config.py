from __future__ import annotations

import importlib

from assistant.config import EMBEDDED_MODEL, Settings, get_settings


def test_defaults_use_the_embedded_model_and_a_sqlite_file(tmp_path):
    s = Settings(data_dir=tmp_path)
    assert s.model == EMBEDDED_MODEL
    assert s.resolved_database_url == f"sqlite:///{tmp_path.resolve() / 'assistant.db'}"
    assert s.resolved_model_cache_dir == tmp_path / "models"


def test_environment_overrides(monkeypatch, tmp_path):
    monkeypatch.setenv("ASSISTANT_MODEL", " /models/mine ")
    monkeypatch.setenv("ASSISTANT_DATABASE_URL", "postgresql+psycopg://u@h/db")
    monkeypatch.setenv("ASSISTANT_GENERATION__TEMPERATURE", "0.2")
    monkeypatch.setenv("ASSISTANT_DATA_DIR", str(tmp_path / "d"))
    s = get_settings()
    assert s.model == "/models/mine"
    assert s.resolved_database_url == "postgresql+psycopg://u@h/db"
    assert s.generation.temperature == 0.2
    assert (tmp_path / "d").is_dir()


def test_blank_model_means_embedded(monkeypatch):
    monkeypatch.setenv("ASSISTANT_MODEL", "  ")
    assert Settings().model == EMBEDDED_MODEL


def test_nothing_is_built_at_import(monkeypatch):
    import assistant.config as config

    monkeypatch.setenv("ASSISTANT_DATA_DIR", "/nonexistent/should-not-be-created")
    importlib.reload(config)
    assert not any(isinstance(v, config.Settings) for v in vars(config).values())
