"""Crash safety: real work in a child process (`python -m assistant.cli ...` on this test's
data folder), killed with SIGKILL in the middle; then the database, the FAISS index and the
model registry must agree, nothing committed may be lost, and `assistant doctor` must report
what was left and repair it.

Where the interesting moment is too short to hit by timing (between a database commit and
the index save, inside the transaction that activates a version), the child runs the real
command with a pause patched in at that point and writes a marker file when it gets there;
the test kills it then. Every wait polls a marker (a file, a row count, progress.json) with
a deadline: no fixed sleeps.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from alignment import runs
from assistant.bootstrap import open_database, open_registry
from assistant.operations.doctor import diagnose
from assistant.documents.embedding import EMBEDDED_NAME
from assistant.documents.index import VectorIndex
from assistant.storage.documents import DocumentStore

ROOT = Path(__file__).resolve().parents[1]

#: Patched into the child: pause for good (until killed) when the named moment comes.
PAUSE = """
import os, time
def _pause():
    open(os.environ["CRASH_MARK"], "w").close()
    time.sleep(600)
"""
#: ... at the Nth save of the FAISS index: after that file's database commit.
PAUSE_AT_INDEX_SAVE = PAUSE + """
import assistant.documents.index as _ix
_save, _calls = _ix.VectorIndex.save, []
def _paused_save(self):
    _calls.append(1)
    if len(_calls) == int(os.environ["CRASH_AT"]):
        _pause()
    _save(self)
_ix.VectorIndex.save = _paused_save
"""
#: ... inside the activation's transaction (row flushed, not committed), or just after it.
PAUSE_IN_ACTIVATION = PAUSE + """
from sqlalchemy import event
from sqlalchemy.orm import Session
from assistant.storage.schema import Activation
_flushed = []
@event.listens_for(Session, "after_flush")
def _after_flush(session, ctx):
    if any(isinstance(o, Activation) for o in session.new):
        _flushed.append(1)
        if os.environ["CRASH_POINT"] == "before-commit":
            _pause()
@event.listens_for(Session, "after_commit")
def _after_commit(session):
    if _flushed and os.environ["CRASH_POINT"] == "after-commit":
        _pause()
"""


def spawn(tmp_path: Path, args: list[str], hook: str = "", **env: str) -> subprocess.Popen:
    """``assistant ARGS`` in a child process (its own process group), output to a log."""
    code = f"{hook}\nfrom assistant.cli import main\nmain({args!r})\n"
    log = open(tmp_path / "child.log", "ab")  # closed with the process
    proc = subprocess.Popen(
        [sys.executable, "-c", code], cwd=ROOT, stdin=subprocess.DEVNULL, stdout=log,
        stderr=subprocess.STDOUT, start_new_session=True,
        env={**os.environ, "OMP_NUM_THREADS": "1", "CRASH_MARK": str(tmp_path / "mark"), **env},
    )
    proc.log_path = tmp_path / "child.log"
    log.close()
    return proc


def wait_for(what: str, condition: Callable[[], object], proc: subprocess.Popen | None = None,
             timeout: float = 120, poll: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"the child ended (status {proc.returncode}) before {what}:\n{tail(proc)}")
        time.sleep(poll)
    pytest.fail(f"timed out after {timeout} s waiting for {what}"
                + (f":\n{tail(proc)}" if proc is not None else ""))


def kill(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL


def tail(proc: subprocess.Popen, n: int = 3000) -> str:
    return proc.log_path.read_text(errors="replace")[-n:]


def count_rows(db_file: Path, table: str) -> int:
    if not db_file.exists():
        return 0
    con = sqlite3.connect(db_file, timeout=5)
    try:
        return con.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
    except sqlite3.OperationalError:  # not created yet
        return 0
    finally:
        con.close()


# -- (a) ingest ------------------------------------------------------------------------------------
TOPICS = ["bread", "rivers", "glaciers", "violins", "taxes", "comets", "bees", "bridges"]


def write_documents(folder: Path, n: int = 40) -> dict[str, str]:
    folder.mkdir()
    texts = {}
    for i in range(n):
        topic = TOPICS[i % len(TOPICS)]
        body = "\n\n".join(
            f"Report {i} on {topic}, project kestrel{i}, paragraph {p}. "
            + " ".join(f"The {topic} survey noted finding {p}.{k} about {topic} in region {i}."
                       for k in range(8))
            for p in range(3)
        )
        (folder / f"doc{i:02}.txt").write_text(body)
        texts[f"doc{i:02}.txt"] = body
    return texts


@pytest.mark.parametrize("moment", ["after-two-files", "between-commit-and-index-save"])
def test_ingest_killed_midway(moment, settings, env_settings, tmp_path):
    texts = write_documents(tmp_path / "docs")
    db_file = settings.data_dir / "assistant.db"
    if moment == "after-two-files":
        proc = spawn(tmp_path, ["ingest", str(tmp_path / "docs")])
        wait_for("two documents committed", lambda: count_rows(db_file, "documents") >= 2, proc,
                 poll=0.01)
    else:  # the third file is committed; the index file still holds only two
        proc = spawn(tmp_path, ["ingest", str(tmp_path / "docs")], PAUSE_AT_INDEX_SAVE, CRASH_AT="3")
        wait_for("the third index save", (tmp_path / "mark").exists, proc)
    kill(proc)

    db = open_database(settings)
    try:
        store = DocumentStore(db)
        docs = store.list_documents()
        assert 2 <= len(docs) < len(texts), tail(proc)
        for d in docs:  # each committed document is whole: every chunk, with its vector
            chunks = store.document_chunks(d.id)
            assert [c.position for c in chunks] == list(range(len(chunks))) and len(chunks) >= 2
            flat = " ".join(texts[d.name].split())
            assert all(" ".join(c.text.split()) in flat for c in chunks)
        before = diagnose(settings)
        assert before.status("documents") == "ok" and before.status("integrity") == "ok"
        index = before.get("index")
        if moment == "between-commit-and-index-save":
            third = max(docs, key=lambda d: d.id)
            assert index.status == "problem", before.lines()
            assert f"{third.chunk_count} chunk(s) of the database are missing" in index.message
        # The index is saved by rename: the real file is never torn. A kill at a random moment
        # may leave the index's unfinished temporary copy, which doctor reports and removes.
        temp = before.get("temp")
        if moment == "between-commit-and-index-save" or temp.status == "ok":
            assert temp.status == "ok", before.lines()
        else:
            assert temp.items and all("unfinished write" in i and "ended" in i
                                      and str(settings.index_dir) in i for i in temp.items), temp

        after = diagnose(settings, repair=True)
        assert after.ok, after.lines()
        assert diagnose(settings).ok

        # Searchable: dense (the stored vector finds its chunk) and lexical (FTS5).
        index = VectorIndex(settings.index_dir, 384, "flat", EMBEDDED_NAME)
        assert index.ids() == store.chunk_ids()
        stored = {i: v for ids, vecs in store.iter_vectors() for i, v in zip(ids.tolist(), vecs, strict=True)}
        for d in docs:
            first = store.document_chunks(d.id)[0]
            assert index.search(stored[first.id], 1)[0][0] == first.id
            n = int(d.name[3:5])
            hits = store.lexical_search(f"kestrel{n}", 3)
            assert hits and store.chunks([hits[0][0]])[hits[0][0]].document_id == d.id
    finally:
        db.dispose()


# -- (b) export ------------------------------------------------------------------------------------
def _complete_export(folder: Path) -> dict:
    """The manifest of a complete export (every file it lists, every row it counts)."""
    manifest = json.loads((folder / "manifest.json").read_text())
    for split in ("train", "test"):
        lines = (folder / f"{split}.jsonl").read_text(encoding="utf-8").splitlines()
        assert len(lines) == manifest["report"][split]
        for line in lines:
            json.loads(line)
    assert sorted(p.name for p in folder.iterdir()) == sorted([*manifest["files"], "manifest.json"])
    return manifest


def test_export_killed_midway_leaves_the_earlier_export(settings, env_settings, tmp_path):
    from alignment.export import export, write_export
    from alignment.importers import import_hh_rlhf
    from tests.shared_data import HH_FILE, shared_file

    db = open_database(settings)
    try:
        assert import_hh_rlhf(db, shared_file(HH_FILE)).imported > 1000
        out = tmp_path / "exports" / "kto"
        earlier = _complete_export(write_export(export(db, "kto"), out))
    finally:
        db.dispose()

    hit = None
    for _attempt in range(4):  # the write takes ~0.1 s: catch it with a tight poll
        proc = spawn(tmp_path, ["data", "export", "--kind", "kto", "--seed", "1", "--out", str(out)])
        while proc.poll() is None:
            partial = list(out.parent.glob(".kto.tmp-*"))
            if partial:
                kill(proc)
                hit = partial[0]
                break
            time.sleep(0.001)
        if hit is not None:
            break
        assert proc.returncode == 0, tail(proc)  # finished first: a complete new export
        _complete_export(out)
    assert hit is not None, "the export finished before it could be killed, 4 times"

    # The target is the earlier export, whole; or (killed between the two renames) absent,
    # with the earlier export set aside beside it. Never a partial one.
    if out.exists():
        assert _complete_export(out) == earlier
    else:
        assert list(out.parent.glob(".kto.old-*"))
    report = diagnose(settings, scan=[out.parent])
    temp = report.get("temp")
    assert temp.status == "problem" and any(hit.name in item for item in temp.items), report.lines()

    report = diagnose(settings, repair=True, scan=[out.parent])
    assert report.ok, report.lines()
    assert _complete_export(out) == earlier
    assert [p.name for p in out.parent.iterdir()] == ["kto"]


# -- (c) training ----------------------------------------------------------------------------------
def register_adapter(settings, db, registry, parent: str = "base"):
    """A real LoRA adapter for the tiny model, registered as the training code does."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from assistant.engines.models import fingerprint

    model = AutoModelForCausalLM.from_pretrained(settings.model)
    fp = fingerprint(model)
    peft = get_peft_model(model, LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"],
                                            task_type="CAUSAL_LM"))
    staging = registry.staging_dir()
    peft.save_pretrained(str(staging / "adapter"))
    return registry.register(
        staging, kind="sft", base_model=settings.model, base_fingerprint=fp, parent=parent,
        data={"kind": "sft", "train_rows": 0, "test_rows": 0, "sha256": ""}, config={}, metrics={},
    ), fp


def test_training_killed_midway_registers_nothing(tiny_settings, feedback_db, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    registry = open_registry(tiny_settings, feedback_db)
    v1, _ = register_adapter(tiny_settings, feedback_db, registry)
    registry.activate(v1.name)
    history = registry.history()

    run = runs.start(tiny_settings, ["train", "sft", "--steps", "500", "--max-length", "96",
                                     "--batch-size", "2", "--grad-accum", "1"], "sft")
    wait_for("two training steps", lambda: runs.load(run.path).progress.get("step", 0) >= 2,
             timeout=240, poll=0.2)
    os.killpg(run.pid, signal.SIGKILL)
    run = wait_for("the run to be seen dead",
                   lambda: (r := runs.load(run.path)).status == "died" and r, timeout=30)
    assert run.progress["step"] < 500

    assert [v.name for v in registry.list()] == ["v1"]
    assert registry.active() == "v1" and registry.history() == history
    stray = registry.stray_folders()
    assert len(stray) == 1 and stray[0].name.startswith(".staging-")
    assert (stray[0] / "data").is_dir() and not (stray[0] / "adapter").exists()

    report = diagnose(tiny_settings)
    assert report.status("stray") == "problem" and report.get("stray").items == (stray[0].name,)
    assert report.status("runs") == "problem" and run.id in report.get("runs").items[0]
    assert (report.status("versions"), report.status("active")) == ("ok", "ok")
    report = diagnose(tiny_settings, repair=True)
    repaired = {f.check for f in report.repaired}
    assert report.ok and {"stray", "runs"} <= repaired <= {"stray", "runs", "temp"}, report.lines()
    if "temp" in repaired:  # killed while it rewrote progress.json: its temporary file
        assert all(".progress.json." in item for item in report.get("temp").items)
    assert registry.stray_folders() == [] and runs.load(run.path).status == "died"
    assert diagnose(tiny_settings).ok and registry.active() == "v1"


# -- (d) activation --------------------------------------------------------------------------------
@pytest.mark.parametrize("point, expected", [("before-commit", "v1"), ("after-commit", "v2")])
def test_activation_killed_leaves_the_old_or_the_new_version(point, expected, tiny_settings, tmp_path):
    db = open_database(tiny_settings)
    try:
        registry = open_registry(tiny_settings, db)
        v1, fp = register_adapter(tiny_settings, db, registry)
        register_adapter(tiny_settings, db, registry, parent="v1")
        registry.activate(v1.name)

        proc = spawn(tmp_path, ["models", "activate", "v2", "--force"], PAUSE_IN_ACTIVATION,
                     CRASH_POINT=point)
        wait_for(f"the activation ({point})", (tmp_path / "mark").exists, proc)
        kill(proc)

        assert registry.active() == expected
        assert registry.check_servable(expected, fp).name == expected
        report = diagnose(tiny_settings)
        assert report.ok, report.lines()
        assert registry.activate("v1") == "v1"  # the killed writer's lock is gone
    finally:
        db.dispose()
