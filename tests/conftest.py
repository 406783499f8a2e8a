from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from assistant.config import Settings  # noqa: E402

from assistant.storage import ConversationStore, Database, upgrade  # noqa: E402


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory) -> Path:
    """One converted checkpoint for the whole run (the GGUF conversion takes ~30 s)."""
    return tmp_path_factory.mktemp("model-cache")


@pytest.fixture
def settings(tmp_path, model_cache) -> Settings:
    return Settings(data_dir=tmp_path / "data", model_cache_dir=model_cache, db_busy_timeout_s=0.5)


@pytest.fixture
def env_settings(settings, monkeypatch) -> Settings:
    """The same settings, exported as ASSISTANT_* variables for the app and the CLI."""
    monkeypatch.setenv("ASSISTANT_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("ASSISTANT_MODEL_CACHE_DIR", str(settings.model_cache_dir))
    monkeypatch.setenv("ASSISTANT_DB_BUSY_TIMEOUT_S", str(settings.db_busy_timeout_s))
    return settings


@pytest.fixture
def db(settings) -> Iterator[Database]:
    database = Database(settings.resolved_database_url, settings.db_busy_timeout_s)
    upgrade(database)
    yield database
    database.dispose()


@pytest.fixture
def store(db) -> ConversationStore:
    return ConversationStore(db)


@pytest.fixture(scope="session")
def embedded(model_cache):
    """The real embedded model, loaded once per test run."""
    from assistant.models import load_model

    return load_model(Settings(data_dir=model_cache.parent, model_cache_dir=model_cache))


_LOCKER = textwrap.dedent(
    """
    import sqlite3, sys
    con = sqlite3.connect(sys.argv[1], isolation_level=None)
    con.execute("BEGIN EXCLUSIVE")
    print("locked", flush=True)
    sys.stdin.read()
    con.execute("ROLLBACK")
    """
)


@contextmanager
def locked_by_another_process(db_file: Path) -> Iterator[None]:
    """Hold SQLite's write lock on ``db_file`` from a separate process."""
    proc = subprocess.Popen(
        [sys.executable, "-c", _LOCKER, str(db_file)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout.readline().strip() == "locked"
        yield
    finally:
        proc.stdin.close()
        proc.wait(timeout=10)


@pytest.fixture
def hold_lock():
    return locked_by_another_process
