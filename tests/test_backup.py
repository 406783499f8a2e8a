"""`assistant backup` / `restore` on real parts: a SQLite file that another thread keeps
writing to while it is backed up, documents ingested with the real embedding model into the
real FAISS index, registered versions with adapter files; restored into a fresh data folder
and read back through the app's own stores, search and registry."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from assistant.operations.backup import backup, restore
from assistant.operations.backup_archive import BackupError, sha256, verify
from assistant.bootstrap import open_database, open_library, open_registry
from assistant.cli import main
from assistant.operations.cli_ops import register
from assistant.config import Settings
from assistant.documents.embedding import Embedder
from assistant.storage import ConversationStore, Database
from assistant.storage.conversations import AnswerRecord
from assistant.storage.documents import DocumentStore
from tests.test_doctor import make_version

if "doctor" not in main.commands:  # until assistant/cli.py registers them itself
    register(main)

RECORD = AnswerRecord(model_id="m", model_version="v2", params={"temperature": 0.2},
                      prompt_tokens=3, completion_tokens=2, latency_ms=5.0, ttft_ms=1.0)
COOKING = ("To bake sourdough bread, mix flour, water and salt with an active starter. "
           "Knead the dough, let it rise overnight and bake it in a very hot oven.")
ASTRONOMY = ("Jupiter is the largest planet of the solar system and has dozens of moons. "
             "The Great Red Spot is a storm larger than the Earth.")


@pytest.fixture(scope="module")
def embedder():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a few sentences at a time: a second thread only spins
    yield Embedder()
    torch.set_num_threads(threads)


@pytest.fixture
def app(settings, env_settings, db, embedder):
    """A data folder in use: documents, conversations with feedback, two versions."""
    library = open_library(settings, db)
    for name, body in (("cooking.txt", COOKING), ("astronomy.txt", ASTRONOMY)):
        assert library.ingestor.ingest_bytes(name, body.encode()).status == "indexed"
    store = ConversationStore(db)
    for n in range(5):
        q = store.add_user_message(None, f"question {n}")
        a = store.add_assistant_message(q.conversation_id, f"answer {n}", RECORD, reply_to_id=q.id)
        b = store.add_assistant_message(q.conversation_id, f"better {n}", RECORD, reply_to_id=q.id)
        store.rate(a.id, -1, "meh", tags=["unhelpful"])
        store.choose(b.id)
        store.edit(a.id, f"edited {n}")
    registry = open_registry(settings, db)
    make_version(registry)
    make_version(registry, kind="dpo", parent="v1")
    registry.activate("v1")
    registry.activate("v2")
    return library


class Writer(threading.Thread):
    """Another connection pool on the same file (as the app's would be) adding questions,
    answers and ratings as fast as SQLite lets it."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.db = Database(url, busy_timeout_s=10)
        self.stop = threading.Event()
        self.rounds = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        store = ConversationStore(self.db)
        try:
            while not self.stop.is_set():
                q = store.add_user_message(None, f"live question {self.rounds}")
                a = store.add_assistant_message(q.conversation_id, "live answer", RECORD,
                                                reply_to_id=q.id)
                store.rate(a.id, 1 if self.rounds % 2 else -1)
                self.rounds += 1
        except BaseException as err:  # noqa: BLE001 - reported by the test
            self.error = err
        finally:
            self.db.dispose()


def counts(db_file: Path) -> dict[str, int]:
    con = sqlite3.connect(db_file)
    try:
        return {t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
                for t in ("conversations", "messages", "feedback", "documents", "chunks",
                          "model_versions")}
    finally:
        con.close()


def fresh(tmp_path: Path, name: str, settings: Settings) -> Settings:
    return Settings(data_dir=tmp_path / name, model_cache_dir=settings.model_cache_dir,
                    db_busy_timeout_s=2)


# -- backup while the app writes --------------------------------------------------------------
def test_a_backup_taken_while_another_thread_writes_is_consistent(app, settings, tmp_path):
    db_file = settings.data_dir / "assistant.db"
    before = counts(db_file)
    writer = Writer(settings.resolved_database_url)
    writer.start()
    try:
        while writer.rounds < 5 and writer.is_alive():
            time.sleep(0.01)
        results = []
        for n in range(3):
            results.append(backup(settings, tmp_path / f"live-{n}"))
            time.sleep(0.05)
        during = writer.rounds
    finally:
        writer.stop.set()
        writer.join(timeout=30)
    assert writer.error is None, writer.error
    assert during > 5 and writer.rounds > during  # the writer kept going through the backups

    for result in results:
        copy = result.path / "assistant.db"
        con = sqlite3.connect(copy)
        try:
            assert con.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
            assert con.execute("PRAGMA foreign_key_check").fetchall() == []
            assert con.execute("PRAGMA journal_mode").fetchone()[0] == "delete"  # one self-contained file
            orphans = con.execute("SELECT count(*) FROM feedback f LEFT JOIN messages m "
                                  "ON m.id = f.message_id WHERE m.id IS NULL").fetchone()[0]
            answers_without_question = con.execute(
                "SELECT count(*) FROM messages a LEFT JOIN messages q ON q.id = a.reply_to_id "
                "WHERE a.reply_to_id IS NOT NULL AND q.id IS NULL").fetchone()[0]
        finally:
            con.close()
        assert orphans == 0 and answers_without_question == 0
        got = counts(copy)
        m = result.manifest["counts"]
        assert (m["conversations"], m["messages"], m["feedback"], m["versions"]) == (
            got["conversations"], got["messages"], got["feedback"], got["model_versions"])
        assert got["conversations"] > before["conversations"]  # taken mid-stream
        assert got["documents"] == 2 and result.manifest["versions"] == ["v1", "v2"]
        assert result.manifest["active_version"] == "v2"
        assert verify(result.path) == result.manifest
    later = [counts(r.path / "assistant.db")["messages"] for r in results]
    assert later == sorted(later)


# -- restore into a fresh data folder ---------------------------------------------------------
def test_restore_into_a_fresh_data_folder_reads_the_same(app, settings, db, tmp_path, embedder):
    result = backup(settings, tmp_path / "nightly")
    target = fresh(tmp_path, "restored", settings)
    restored = restore(target, result.path)
    assert restored.doctor.ok, restored.doctor.lines()
    assert restored.set_aside == ()  # nothing was there before

    db2 = open_database(target)
    try:
        old, new = ConversationStore(db), ConversationStore(db2)
        assert [(c.id, c.title) for c in new.list_conversations()] == [
            (c.id, c.title) for c in old.list_conversations()]
        for c in old.list_conversations():
            assert new.messages(c.id, include_inactive=True) == old.messages(c.id, include_inactive=True)
        assert new.counts() == old.counts()

        assert [(d.name, d.chunk_count, d.content_hash) for d in DocumentStore(db2).list_documents()] == [
            (d.name, d.chunk_count, d.content_hash) for d in DocumentStore(db).list_documents()]
        library = open_library(target, db2, repair=False)  # the restored index as it is
        assert library.sync.ok and library.sync.in_index == library.sync.in_db > 0
        hits = library.retriever.search("how long should dough rise", k=1, mode="dense")
        assert hits[0].document_name == "cooking.txt"
        hits = library.retriever.search("largest planet storm", k=1, mode="hybrid")
        assert hits[0].document_name == "astronomy.txt"

        reg_old, reg_new = open_registry(settings, db), open_registry(target, db2)
        assert [(v.name, v.kind, v.parent) for v in reg_new.list()] == [
            (v.name, v.kind, v.parent) for v in reg_old.list()]
        assert reg_new.active() == "v2" and reg_new.history() == reg_old.history()
        for v in reg_old.list():
            w = reg_new.get(v.name).adapter_dir / "adapter_model.safetensors"
            assert sha256(w) == sha256(v.adapter_dir / "adapter_model.safetensors")
    finally:
        db2.dispose()


def test_tar_gz_round_trip_and_restore_over_existing_data(app, settings, tmp_path):
    archive = tmp_path / "b" / "nightly.tar.gz"
    result = CliRunner().invoke(main, ["backup", str(archive)])
    assert result.exit_code == 0, result.output
    assert "Backed up to" in result.output and "5 conversations" in result.output
    assert archive.is_file() and not list(archive.parent.glob(".*"))  # no temp left beside it
    out = CliRunner().invoke(main, ["restore", "--verify-only", str(archive)])
    assert out.exit_code == 0 and "hashes match" in out.output

    # Restore over a data folder that holds other data: it is set aside, not lost.
    target = fresh(tmp_path, "other", settings)
    other = open_database(target)
    ConversationStore(other).add_user_message(None, "something else")
    other.dispose()
    restored = restore(target, archive)
    assert restored.doctor.ok, restored.doctor.lines()
    aside = restored.set_aside[0]
    assert aside.name.startswith("pre-restore-") and (aside / "assistant.db").is_file()
    assert counts(aside / "assistant.db")["conversations"] == 1
    assert counts(target.data_dir / "assistant.db")["conversations"] == 5


def test_a_damaged_backup_is_refused_and_nothing_changes(app, settings, tmp_path):
    result = backup(settings, tmp_path / "b1")
    damaged = tmp_path / "b2"
    shutil.copytree(result.path, damaged)
    adapter = next(damaged.glob("versions/v1/adapter/adapter_model.safetensors"))
    adapter.write_bytes(adapter.read_bytes()[:-1] + b"\x01")
    target = fresh(tmp_path, "t", settings)
    with pytest.raises(BackupError, match="is damaged: versions/v1/adapter/adapter_model.safetensors has changed"):
        restore(target, damaged)
    assert not (target.data_dir / "assistant.db").exists()
    assert [p.name for p in target.data_dir.iterdir()] == []  # no staging left behind

    manifest = json.loads((result.path / "manifest.json").read_text())
    manifest["files"].append({"path": "../escape", "size": 1, "sha256": "0"})
    (damaged / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BackupError, match="no part of a backup"):
        restore(target, damaged)


def test_restore_refuses_a_database_in_use(app, settings, tmp_path, hold_lock):
    result = backup(settings, tmp_path / "b")
    target = fresh(tmp_path, "busy", settings)
    open_database(target).dispose()
    db_file = target.data_dir / "assistant.db"
    with hold_lock(db_file):  # another process is writing: never replaced, --force or not
        with pytest.raises(BackupError, match="being written by another process"):
            restore(target, result.path, force=True)

    holder = subprocess.Popen(  # the app, idle, with the file open
        [sys.executable, "-c", textwrap.dedent("""
            import sqlite3, sys
            con = sqlite3.connect(sys.argv[1]); con.execute("SELECT 1").fetchall()
            print("open", flush=True); sys.stdin.read()
        """), str(db_file)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "open"
        with pytest.raises(BackupError, match=f"open in another process \\(pid {holder.pid}"):
            restore(target, result.path)
        assert counts(db_file)["conversations"] == 0
        out = CliRunner().invoke(main, ["restore", str(result.path)],
                                 env={"ASSISTANT_DATA_DIR": str(target.data_dir)})
        assert out.exit_code == 1 and "pass --force" in out.output and "Traceback" not in out.output
        assert restore(target, result.path, force=True).doctor.ok
        assert counts(db_file)["conversations"] == 5
    finally:
        holder.stdin.close()
        holder.wait(timeout=10)


def test_backup_refuses_other_databases_and_existing_targets(settings, tmp_path, db):
    pg = Settings(data_dir=tmp_path / "pg", database_url="postgresql+psycopg://u@localhost/app")
    with pytest.raises(BackupError, match="pg_dump"):
        backup(pg, tmp_path / "x")
    with pytest.raises(BackupError, match="pg_restore"):
        restore(pg, tmp_path)
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "notes.txt").write_text("mine")
    with pytest.raises(BackupError, match="not an empty folder"):
        backup(settings, taken)
    assert (taken / "notes.txt").read_text() == "mine"
    with pytest.raises(BackupError, match="holds no manifest.json"):
        restore(settings, taken)


def test_an_index_that_moved_on_after_the_snapshot_is_rebuilt_in_the_backup(app, settings, db, tmp_path):
    from tests.test_doctor import add_document

    add_document(db, "late.txt", seed=7)  # committed, the index not saved yet (as mid-ingest)
    result = backup(settings, tmp_path / "b")
    assert result.manifest["index"]["rebuilt"] is True
    assert "rebuilt from the backed-up vectors" in "\n".join(result.summary())
    target = fresh(tmp_path, "t", settings)
    report = restore(target, result.path).doctor
    assert report.status("index") == "ok", report.lines()  # agreed as restored, no repair needed


def test_a_backup_of_an_older_schema_is_migrated_on_restore(settings, db, tmp_path):
    from assistant.storage.migrate import downgrade, head_revision

    ConversationStore(db).add_user_message(None, "kept across the migration")
    downgrade(db, "0003")
    result = backup(settings, tmp_path / "old")
    assert result.manifest["schema_revision"] == "0003"
    target = fresh(tmp_path, "t", settings)
    report = restore(target, result.path).doctor
    assert report.status("schema") == "repaired" and report.ok, report.lines()
    db2 = open_database(target)
    try:
        from assistant.storage.migrate import current_revision

        assert current_revision(db2) == head_revision()
        assert [c.title for c in ConversationStore(db2).list_conversations()] == ["kept across the migration"]
    finally:
        db2.dispose()


def test_restore_to_a_database_outside_the_data_folder(app, settings, tmp_path):
    result = backup(settings, tmp_path / "b")
    db_file = tmp_path / "elsewhere" / "app.db"
    target = Settings(data_dir=tmp_path / "t", database_url=f"sqlite:///{db_file}",
                      model_cache_dir=settings.model_cache_dir)
    open_database(target).dispose()  # an empty database is there already
    restored = restore(target, result.path)
    assert restored.doctor.ok, restored.doctor.lines()
    assert counts(db_file)["conversations"] == 5
    (aside,) = restored.set_aside  # beside the database: a rename cannot cross file systems
    assert aside.parent == db_file.parent and aside.name.startswith("app.db.pre-restore-")
    assert (aside / "app.db").is_file()
    assert not list(db_file.parent.glob(".app.db.restore-*"))
