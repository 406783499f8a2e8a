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
# As the app and the CLI do at start (assistant.operations.permissions): data written by tests is
# private, so that `doctor` finds a healthy folder healthy.
os.umask(0o077)

from assistant.config import Settings  # noqa: E402
from assistant.storage import ConversationStore, Database, upgrade  # noqa: E402

from tests import pg  # noqa: E402
from tests.needs import missing  # noqa: E402

#: The databases the storage-level tests run on (a module opts in with
#: ``pytestmark = pytest.mark.both_databases``; a test that is about SQLite itself opts out
#: with ``@pytest.mark.sqlite_only``).
DATABASES = ("sqlite", "postgresql")


def pytest_generate_tests(metafunc):
    node = metafunc.definition
    if ("database_kind" in metafunc.fixturenames and node.get_closest_marker("both_databases")
            and not node.get_closest_marker("sqlite_only")):
        metafunc.parametrize("database_kind", DATABASES, indirect=True)


@pytest.fixture(scope="session")
def pg_databases() -> Iterator[pg.Databases]:
    """A throwaway PostgreSQL cluster for the whole run (started on first use, removed at the
    end); skips the PostgreSQL tests only where its binaries are not installed (fails in CI)."""
    reason = pg.missing_reason()
    if reason:
        missing(reason)
    cluster = pg.start_cluster()
    try:
        yield pg.Databases(cluster)
    finally:
        cluster.remove()


@contextmanager
def fresh_database_url(kind: str, request, folder: Path, *, migrated: bool = True) -> Iterator[str]:
    """The URL of a new, empty database of ``kind`` (a file in ``folder`` for SQLite; a
    database of its own on the test cluster, dropped afterwards, for PostgreSQL)."""
    if kind == "sqlite":
        yield f"sqlite:///{folder / 'assistant.db'}"
        return
    databases = request.getfixturevalue("pg_databases")
    url, name = databases.fresh(migrated=migrated)
    try:
        yield url
    finally:
        databases.cluster.drop_database(name)


@pytest.fixture
def database_kind(request) -> str:
    """"sqlite" unless the test's module runs on both databases (``both_databases``)."""
    return getattr(request, "param", "sqlite")


@pytest.fixture
def database_url(database_kind, request, tmp_path) -> Iterator[str | None]:
    """None (the SQLite file in the data folder, the default) or a fresh PostgreSQL database
    already at the newest schema."""
    if database_kind == "sqlite":
        yield None
        return
    with fresh_database_url(database_kind, request, tmp_path) as url:
        yield url

pytest_plugins = ["tests.engines", "tests.vllm_server"]


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory) -> Path:
    """One converted checkpoint for the whole run (the GGUF conversion takes ~30 s)."""
    return tmp_path_factory.mktemp("model-cache")


@pytest.fixture
def settings(tmp_path, model_cache, database_url) -> Settings:
    return Settings(data_dir=tmp_path / "data", model_cache_dir=model_cache, db_busy_timeout_s=0.5,
                    database_url=database_url)


@pytest.fixture
def env_settings(settings, monkeypatch) -> Settings:
    """The same settings, exported as ASSISTANT_* variables for the app and the CLI."""
    monkeypatch.setenv("ASSISTANT_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("ASSISTANT_MODEL_CACHE_DIR", str(settings.model_cache_dir))
    monkeypatch.setenv("ASSISTANT_DB_BUSY_TIMEOUT_S", str(settings.db_busy_timeout_s))
    if settings.database_url:
        monkeypatch.setenv("ASSISTANT_DATABASE_URL", settings.database_url)
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
    from assistant.engines.models import load_model

    return load_model(Settings(data_dir=model_cache.parent, model_cache_dir=model_cache))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A tiny random Llama (2 layers, 32 wide) with the real SmolLM2 tokenizer, saved as a
    transformers checkpoint folder: for tests of training and adapters that take seconds.
    ``Settings(model=str(tiny_model_dir))`` loads it like any user checkpoint."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from assistant.engines.model_files import embedded_gguf

    gguf = embedded_gguf()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    config = LlamaConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, vocab_size=len(tokenizer), max_position_embeddings=1024,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    out = tmp_path_factory.mktemp("tiny-model")
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture
def tiny_settings(tmp_path, tiny_model_dir, monkeypatch, database_url) -> Settings:
    """Settings on the tiny model (also exported as ASSISTANT_* for the CLI and children), on
    the transformers engine: these tests are about training and versions, and the tiny
    model's answers are compared bit for bit with transformers' own."""
    settings = Settings(model=str(tiny_model_dir), data_dir=tmp_path / "data",
                        model_cache_dir=tmp_path / "models", db_busy_timeout_s=2,
                        database_url=database_url, engine="transformers")
    settings.data_dir.mkdir(parents=True)
    monkeypatch.setenv("ASSISTANT_ENGINE", settings.engine)
    if database_url:
        monkeypatch.setenv("ASSISTANT_DATABASE_URL", database_url)
    monkeypatch.setenv("ASSISTANT_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("ASSISTANT_MODEL", settings.model)
    monkeypatch.setenv("ASSISTANT_MODEL_CACHE_DIR", str(settings.model_cache_dir))
    return settings


@pytest.fixture
def feedback_db(tiny_settings, tmp_path):
    """The tiny settings' database with 39 short real hh-rlhf pairs imported (of 40 lines) (preference
    pairs, KTO rows with both labels, SFT rows)."""
    from alignment.importers import import_hh_rlhf
    from assistant.bootstrap import open_database
    from tests.shared_data import HH_FILE, shared_file

    lines = shared_file(HH_FILE).read_text(encoding="utf-8").splitlines()
    short = tmp_path / "hh-short.jsonl"
    short.write_text("\n".join([line for line in lines if len(line) < 700][:40]) + "\n")
    db = open_database(tiny_settings)
    assert import_hh_rlhf(db, short).imported == 39  # one has an empty chosen answer
    yield db
    db.dispose()


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
