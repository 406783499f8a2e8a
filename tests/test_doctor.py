"""`assistant doctor`: each kind of damage a crash (or a hand) can leave, found and, where it
can be, repaired, on the real SQLite file, the real FAISS index and the real registry folders.

No model is loaded: the vectors are random unit vectors stored the way ingest stores them
(the doctor only needs the embedding model to re-embed, which these tests do not ask for)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest
from click.testing import CliRunner
from sqlalchemy import text

from assistant.documents.chunking import Chunk
from assistant.cli import main
from assistant.operations.cli_ops import register
from assistant.operations.doctor import CHECKS, DOCTOR_REASON, RESTORE_MARKER, diagnose
from assistant.documents.embedding import EMBEDDED_NAME
from assistant.documents.index import INDEX_FILE, VectorIndex
from assistant.registry import Registry
from assistant.versions import BASE_VERSION as BASE
from assistant.storage import ConversationStore
from assistant.storage.migrate import downgrade
from assistant.storage.documents import DocumentStore
from assistant.storage.schema import Activation, Document

pytestmark = pytest.mark.both_databases  # SQLite and PostgreSQL (tests/conftest.py)

DIM = 384
if "doctor" not in main.commands:  # until assistant/cli.py registers them itself
    register(main)


# -- helpers -------------------------------------------------------------------------------------
def unit_vectors(n: int, seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def add_document(db, name: str, chunks: int = 3, seed: int = 0):
    parts = [Chunk(i, f"{name} part {i}: {' '.join(['word'] * 5)} unique{seed}x{i}", 8)
             for i in range(chunks)]
    return DocumentStore(db).add(
        name=name, kind="txt", content_hash=f"{name}-{seed}", size_bytes=100,
        embed_model=EMBEDDED_NAME, chunks=parts, vectors=unit_vectors(chunks, seed),
    )


def save_index(settings, db) -> VectorIndex:
    index = VectorIndex(settings.index_dir, DIM, settings.retrieval.index_type, EMBEDDED_NAME)
    index.rebuild(DocumentStore(db).iter_vectors())
    index.save()
    return index


def write_adapter(folder) -> None:
    """A LoRA adapter folder as peft writes it (config + safetensors weights)."""
    from safetensors.numpy import save_file

    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text(json.dumps(
        {"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": 2}))
    save_file({"base_model.model.layer.lora_A.weight": np.ones((2, 8), np.float32)},
              str(folder / "adapter_model.safetensors"))


def make_version(registry: Registry, kind: str = "sft", parent: str = BASE):
    staging = registry.staging_dir()
    write_adapter(staging / "adapter")
    return registry.register(
        staging, kind=kind, base_model="tiny", base_fingerprint="f" * 32, parent=parent,
        data={"kind": "sft", "train_rows": 4, "test_rows": 0, "sha256": "ab"}, config={},
        metrics={},
    )


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def cli(*args: str):
    return CliRunner().invoke(main, list(args))


@pytest.fixture
def registry(db, settings) -> Registry:
    return Registry(db, settings.versions_dir)


# -- a healthy folder -----------------------------------------------------------------------------
@pytest.mark.sqlite_only
def test_a_fresh_data_folder_is_fine_and_is_left_untouched(settings):
    settings.data_dir.mkdir(parents=True)
    report = diagnose(settings, repair=True)
    assert report.ok and [f.status for f in report.findings] == ["ok"] * len(report.findings)
    assert "no database yet" in report.get("database").message
    assert not (settings.data_dir / "assistant.db").exists()  # a check creates nothing


def test_a_healthy_data_folder_passes_every_check(settings, env_settings, db, registry):
    add_document(db, "a.txt", seed=1)
    add_document(db, "b.txt", seed=2)
    save_index(settings, db)
    v1 = make_version(registry)
    registry.activate(v1.name)
    store = ConversationStore(db)
    q = store.add_user_message(None, "hello")
    store.rate(store.add_assistant_message(q.conversation_id, "hi", _record()).id, 1)

    report = diagnose(settings)
    assert [f.check for f in report.findings] == list(CHECKS)
    assert report.ok and not report.problems, report.lines()
    assert "agrees with the database: 6 chunks" in report.get("index").message
    assert report.get("active").message == "the chat uses v1"

    result = cli("doctor")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == f"Data folder {settings.data_dir}"
    assert lines[1].split()[:2] == ["ok", "database"] and lines[-1] == "All checks pass."


# -- documents and the index -------------------------------------------------------------------
def test_an_index_behind_and_ahead_of_the_database_is_rebuilt(settings, env_settings, db):
    add_document(db, "a.txt", seed=1)
    gone = add_document(db, "b.txt", seed=2)
    save_index(settings, db)
    # A crash after the commit and before the index was saved; and a delete whose index
    # save never happened.
    added = add_document(db, "c.txt", chunks=4, seed=3)
    DocumentStore(db).delete(gone.document.id)

    report = diagnose(settings)
    index = report.get("index")
    assert index.status == "problem" and not report.ok
    assert "4 chunk(s) of the database are missing from it and 3 in it are no longer" in index.message
    result = cli("doctor")
    assert result.exit_code == 1 and "problem   index" in result.output
    assert "run `assistant doctor --repair`" in result.output

    result = cli("doctor", "--repair")
    assert result.exit_code == 0, result.output
    assert "repaired  index" in result.output and "rebuilt it from the 7 vectors" in result.output
    assert diagnose(settings).ok
    rebuilt = VectorIndex(settings.index_dir, DIM, "flat", EMBEDDED_NAME)
    assert rebuilt.ids() == DocumentStore(db).chunk_ids()
    vec = np.frombuffer(_embedding(db, added.added_ids[0]), dtype=np.float32)
    assert rebuilt.search(vec, 1)[0][0] == added.added_ids[0]


def test_an_unreadable_index_file_is_rebuilt(settings, db):
    add_document(db, "a.txt", seed=1)
    save_index(settings, db)
    (settings.index_dir / INDEX_FILE).write_bytes(b"\0garbage")
    assert diagnose(settings).status("index") == "problem"
    assert diagnose(settings, repair=True).status("index") == "repaired"
    assert diagnose(settings).ok


@pytest.mark.sqlite_only
def test_full_text_index_out_of_step_is_rebuilt(settings, db):
    add_document(db, "a.txt", seed=1)
    save_index(settings, db)
    with db.write() as s:  # a row the triggers never wrote
        s.execute(text("INSERT INTO chunks_fts(rowid, text) VALUES (999, 'ghost')"))
    report = diagnose(settings)
    assert report.status("fts") == "problem" and "full-text index disagrees" in report.get("fts").message
    assert diagnose(settings, repair=True).status("fts") == "repaired"
    assert diagnose(settings).ok
    assert DocumentStore(db).lexical_search("ghost", 5) == []
    assert DocumentStore(db).lexical_search("unique1x0", 5)


def test_a_document_without_chunks_is_removed(settings, db):
    kept = add_document(db, "a.txt", seed=1)
    save_index(settings, db)
    with db.write() as s:
        s.add(Document(name="half.pdf", kind="pdf", content_hash="h", size_bytes=1,
                       embed_model=EMBEDDED_NAME))
    report = diagnose(settings)
    assert report.status("documents") == "problem"
    assert report.get("documents").items[0].endswith("half.pdf: no chunks")
    assert diagnose(settings, repair=True).status("documents") == "repaired"
    assert [d.name for d in DocumentStore(db).list_documents()] == ["a.txt"]
    assert DocumentStore(db).get(kept.document.id).chunk_count == 3
    assert diagnose(settings).ok


@pytest.mark.sqlite_only
def test_rows_left_by_deletes_with_foreign_keys_off_are_finished(settings, db):
    import sqlite3

    doomed = add_document(db, "a.txt", seed=1)
    add_document(db, "b.txt", seed=2)
    save_index(settings, db)
    store = ConversationStore(db)
    q = store.add_user_message(None, "hello")
    a = store.add_assistant_message(q.conversation_id, "hi", _record(), reply_to_id=q.id)
    store.rate(a.id, 1)
    db.dispose()
    con = sqlite3.connect(settings.data_dir / "assistant.db")  # another tool: FKs off
    con.execute("DELETE FROM documents WHERE id = ?", (doomed.document.id,))
    con.execute("DELETE FROM conversations WHERE id = ?", (q.conversation_id,))
    con.commit()
    con.close()

    report = diagnose(settings)
    assert report.status("integrity") == "problem"
    items = report.get("integrity").items
    assert len(items) == 5 and sum("chunks row" in i for i in items) == 3  # and 2 messages
    report = diagnose(settings, repair=True)
    assert report.status("integrity") == "repaired" and report.status("index") == "repaired"
    assert report.ok, report.lines()
    assert ConversationStore(db).counts() == {"conversations": 0, "messages": 0, "feedback": 0}
    assert DocumentStore(db).chunk_count() == 3 and diagnose(settings).ok


# -- the registry ----------------------------------------------------------------------------------
def test_versions_with_missing_files_and_an_active_version_that_cannot_serve(settings, env_settings, db, registry):
    v1, v2, v3 = make_version(registry), make_version(registry), make_version(registry)
    for v in (v1, v2, v3):
        registry.activate(v.name)
    (v3.adapter_dir / "adapter_model.safetensors").unlink()
    weights = v2.adapter_dir / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-10])  # truncated

    report = diagnose(settings)
    versions, active = report.get("versions"), report.get("active")
    assert versions.status == "problem" and "assistant restore" in versions.message
    assert [i.split(":")[0] for i in versions.items] == ["v2", "v3"]
    assert "truncated" in versions.items[0] and "weights" in versions.items[1]
    assert active.status == "problem" and "switches the chat back to v1" in active.message

    result = cli("doctor", "--repair")
    assert result.exit_code == 1  # the files themselves cannot come back without a backup
    assert "repaired  active" in result.output and "problem   versions" in result.output
    assert registry.active() == "v1"
    assert registry.history()[-1].reason == DOCTOR_REASON
    assert diagnose(settings).status("active") == "ok"


def test_an_active_version_that_does_not_exist_goes_back_to_base(settings, db, registry):
    with db.write() as s:
        s.add(Activation(version="v9", forced=False, reason="activate"))
    report = diagnose(settings, repair=True)
    assert report.status("active") == "repaired" and "v9 is not a registered version" in report.get("active").message
    assert registry.active() == BASE


def test_folders_left_by_killed_training_are_removed_unless_training_runs(settings, db, registry):
    make_version(registry)
    root = registry.root
    hour_ago = time.time() - 3600
    old_staging = root / f".staging-{time.strftime('%Y%m%d-%H%M%S', time.localtime(hour_ago))}-abcd1234"
    (old_staging / "data").mkdir(parents=True)
    orphan = root / f".orphaned-v1-{time.time_ns()}"
    write_adapter(orphan / "adapter")
    unregistered = root / "v7"  # renamed into place, killed before the commit
    write_adapter(unregistered / "adapter")
    os.utime(unregistered, (hour_ago, hour_ago))

    # A training process of this data folder is running: what it may be writing stays.
    trainer = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)", "-m", "assistant.cli", "train", "sft"],
        env={**os.environ, "ASSISTANT_DATA_DIR": str(settings.data_dir)},
    )
    try:
        time.sleep(0.1)
        live = registry.staging_dir()
        report = diagnose(settings)
        stray = report.get("stray")
        assert stray.status == "problem"
        assert sorted(stray.items) == sorted([old_staging.name, orphan.name, "v7"])
        assert "left alone" in stray.message and str(trainer.pid) in stray.message

        report = diagnose(settings, repair=True)
        assert report.status("stray") == "repaired", report.lines()
        assert registry.stray_folders() == [live]
        assert diagnose(settings).status("stray") == "ok"
    finally:
        trainer.kill()
        trainer.wait()
    assert diagnose(settings, repair=True).status("stray") == "repaired"  # its run is over
    assert registry.stray_folders() == [] and [v.name for v in registry.list()] == ["v1"]


# -- the database itself ---------------------------------------------------------------------------
def test_a_schema_behind_head_is_migrated(settings, db):
    downgrade(db, "0003")
    report = diagnose(settings)
    assert report.status("schema") == "problem" and "0003" in report.get("schema").message
    assert [f.check for f in report.findings][-3:] == ["runs", "temp", "permissions"]  # the rest needs the schema
    report = diagnose(settings, repair=True)
    assert report.status("schema") == "repaired" and report.ok, report.lines()


@pytest.mark.sqlite_only
def test_a_damaged_database_file_is_reported_not_repaired(settings, env_settings, db):
    store = ConversationStore(db)
    for n in range(200):
        store.add_user_message(None, f"question {n} " + "padding " * 40)
    db.dispose()
    path = settings.data_dir / "assistant.db"
    with open(path, "r+b") as f:  # WAL checkpointed on close; scribble over later pages
        f.seek(4096 * 3)
        f.write(os.urandom(4096 * 4))
    report = diagnose(settings, repair=True)
    assert not report.ok
    problem = report.problems[0]
    assert problem.check in ("database", "integrity") and "assistant restore" in problem.message
    result = cli("doctor", "--repair")
    assert result.exit_code == 1 and "Traceback" not in result.output


# -- temporary files ---------------------------------------------------------------------------------
def test_leftovers_of_interrupted_writes_are_cleaned_up(settings, db, tmp_path):
    exports = tmp_path / "exports"
    exports.mkdir()
    gone = dead_pid()
    partial = exports / f".pref.tmp-{gone}-1"
    partial.mkdir()
    (partial / "train.jsonl").write_text('{"prompt": [')
    earlier = exports / f".kto.old-{gone}-2"  # killed between the two renames
    earlier.mkdir()
    (earlier / "manifest.json").write_text("{}")
    mine = exports / f".sft.tmp-{os.getpid()}-3"  # a live writer: left alone
    mine.mkdir()
    settings.index_dir.mkdir(parents=True)
    stale_tmp = settings.index_dir / ".chunks.faiss-ab12cd34"
    stale_tmp.write_bytes(b"x")
    os.utime(stale_tmp, (time.time() - 3600,) * 2)
    fresh_tmp = settings.index_dir / ".chunks.json-zz99yy88"
    fresh_tmp.write_text("{}")
    progress = settings.runs_dir / "r1" / f".progress.json.{gone}.tmp"
    progress.parent.mkdir(parents=True)
    progress.write_text("{")

    report = diagnose(settings, scan=[exports])
    temp = report.get("temp")
    assert temp.status == "problem" and "4 temporary" in temp.message and "2 may still be being written" in temp.message
    assert diagnose(settings).status("temp") == "problem"  # found without --scan too (the rest)

    report = diagnose(settings, repair=True, scan=[exports])
    assert report.status("temp") == "repaired" and report.ok, report.lines()
    assert not partial.exists() and not stale_tmp.exists() and not progress.exists()
    assert (exports / "kto" / "manifest.json").is_file()  # the earlier export is back
    assert mine.exists() and fresh_tmp.exists()


@pytest.mark.sqlite_only
def test_an_interrupted_restore_is_reported(settings, db):
    (settings.data_dir / RESTORE_MARKER).write_text(json.dumps({"source": "/b/x.tar.gz", "started": "t"}))
    report = diagnose(settings, repair=True)
    assert report.status("temp") == "problem" and "/b/x.tar.gz was interrupted" in report.get("temp").message


# -- little helpers ----------------------------------------------------------------------------------
def _record():
    from assistant.storage.conversations import AnswerRecord

    return AnswerRecord(model_id="m", model_version="base", params={}, prompt_tokens=1,
                        completion_tokens=1, latency_ms=1.0, ttft_ms=1.0)


def _embedding(db, chunk_id: int) -> bytes:
    with db.read() as s:
        return s.execute(text("SELECT embedding FROM chunks WHERE id = :i"), {"i": chunk_id}).scalar()
