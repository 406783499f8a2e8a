"""Concurrency: sessions chat, upload and rate at once on one SQLite file (``bench/load.py``,
bounded), and the per-process writer queue of ``Database`` that the load test asked for.

No timing is asserted (the machine is shared): what is asserted is that nothing reaches a
user and nothing is lost, and that the harness would have said so if it had.
"""

from __future__ import annotations

import threading
import time

import pytest
from sqlalchemy import delete, event, select

from assistant.bootstrap import open_database
from assistant.errors import DatabaseLocked
from assistant.storage import ConversationStore, Database, upgrade
from assistant.storage.schema import Conversation, Feedback
from bench.load import LoadOptions, audit, run_load


def test_sessions_and_a_second_process_lose_nothing(tmp_path):
    """8 session threads sharing one Database and ChatService (as Streamlit's do), with
    uploads through the real ingest path, plus another process chatting, rating and
    exporting on the same file: no error reaches a session, every rating is there."""
    o = LoadOptions(tmp_path / "data", sessions=8, processes=1, process_sessions=2, seconds=3,
                    upload_p=0.2, export_every=1.0, seed=7)
    result = run_load(o)  # loads the embedding model while the other process starts

    assert dict(result.recorder.errors) == {}, result.recorder.examples
    assert all(turns > 0 for turns in result.turns_by_process)  # both processes wrote
    ms = result.recorder.ms
    for kind in ("conv.add_user_message", "conv.add_assistant_message", "conv.rate",
                 "conv.choose", "docs.add", "docs.lexical_search", "export.load_feedback"):
        assert ms[kind], f"no {kind} in the run"
    a, ledger = result.audit, result.ledger
    assert a.ratings_believed == len(ledger.ratings) > 0
    assert a.ratings_matching == a.ratings_believed and a.ratings_wrong == []
    assert a.feedback_rows_found == a.feedback_rows_expected == ledger.feedback_rows
    assert ledger.rate_calls > ledger.feedback_rows  # some re-rated the same: no row added
    assert (a.conversations_missing, a.messages_missing, a.documents_missing) == (0, 0, 0)
    assert a.choices_found == a.choices_expected > 0
    assert ledger.documents and a.rated_unknown == 0
    assert a.ok


def _hold_for(hold_lock, db_file, seconds: float) -> threading.Thread:
    """Another process holds SQLite's write lock for ``seconds``, from now."""
    held = threading.Event()

    def hold() -> None:
        with hold_lock(db_file):
            held.set()
            time.sleep(seconds)

    thread = threading.Thread(target=hold, daemon=True)
    thread.start()
    assert held.wait(30)
    return thread


def test_the_harness_counts_locked_errors_and_they_lose_nothing(tmp_path, hold_lock):
    """With a tiny busy timeout and the write lock held by another process for part of the
    run, the sessions do see DatabaseLocked, and the harness counts it; what failed was not
    stored, and what succeeded is all there."""
    o = LoadOptions(tmp_path / "data", sessions=2, processes=0, seconds=2.5, documents=False,
                    busy_timeout_s=0.05)
    db = open_database(o.settings())  # the schema, before the lock
    holder = _hold_for(hold_lock, o.settings().data_dir / "assistant.db", 1.0)
    result = run_load(o)
    holder.join()
    db.dispose()

    assert result.locked_errors > 0
    assert set(result.recorder.errors) == {"DatabaseLocked"}
    assert "locked by another process" in result.recorder.examples["DatabaseLocked"]
    assert result.ledger.ratings  # writes went through once the lock was released
    assert result.audit.ok


def test_the_audit_sees_a_lost_rating(tmp_path):
    o = LoadOptions(tmp_path / "data", sessions=1, processes=0, seconds=1.0, documents=False)
    result = run_load(o)
    assert result.audit.ok and result.ledger.ratings
    db = open_database(o.settings())
    with db.write() as s:
        newest = s.scalar(select(Feedback.id).order_by(Feedback.id.desc()))
        s.execute(delete(Feedback).where(Feedback.id == newest))
    lost = audit(db, result.ledger)
    db.dispose()
    assert not lost.ok
    assert lost.feedback_rows_found == lost.feedback_rows_expected - 1
    assert len(lost.ratings_wrong) == 1


# -- the writer queue ----------------------------------------------------------------------------
def test_writers_of_one_process_wait_for_their_turn_before_asking_sqlite(db):
    """A second thread's write does not start its SQLite transaction (and so never sleeps in
    SQLite's busy handler) while another thread of the process holds the write lock; it
    goes in as soon as that one commits."""
    begins: list[str] = []

    @event.listens_for(db.engine, "before_cursor_execute")
    def count(conn, cursor, statement, *args):
        if statement.startswith("BEGIN IMMEDIATE"):
            begins.append(threading.current_thread().name)

    inside, release, done = threading.Event(), threading.Event(), threading.Event()

    def first() -> None:
        with db.write() as s:
            s.add(Conversation(title="first"))
            s.flush()
            inside.set()
            release.wait(30)

    def second() -> None:
        with db.write() as s:
            s.add(Conversation(title="second"))
        done.set()

    a = threading.Thread(target=first, name="first")
    a.start()
    assert inside.wait(30)
    b = threading.Thread(target=second, name="second")
    b.start()
    time.sleep(0.3)
    assert begins == ["first"] and not done.is_set()
    release.set()
    a.join(30)
    b.join(30)
    assert begins == ["first", "second"] and done.is_set()
    with db.read() as s:
        assert list(s.scalars(select(Conversation.title).order_by(Conversation.id))) == [
            "first", "second"]


def test_a_write_waits_for_another_process_and_goes_in_once_it_is_done(tmp_path, hold_lock):
    """The head of the queue tries BEGIN IMMEDIATE again while another process holds the
    lock (SQLite's own handler is off meanwhile), and gets in once it is released; the
    connection keeps its busy timeout for everything else."""
    db = Database(f"sqlite:///{tmp_path / 'a.db'}", busy_timeout_s=30)
    upgrade(db)
    store = ConversationStore(db)
    holder = _hold_for(hold_lock, tmp_path / "a.db", 0.5)
    store.add_user_message(None, "waited")
    holder.join()
    assert [c.title for c in store.list_conversations()] == ["waited"]
    with db.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30_000
    db.dispose()

    db = Database(f"sqlite:///{tmp_path / 'a.db'}", busy_timeout_s=0.2)
    with hold_lock(tmp_path / "a.db"):
        with pytest.raises(DatabaseLocked):
            ConversationStore(db).add_user_message(None, "refused")
    with db.engine.connect() as conn:  # the connection that gave up
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 200
    assert [c.title for c in ConversationStore(db).list_conversations()] == ["waited"]
    db.dispose()


def test_a_write_queued_past_the_busy_timeout_is_refused_cleanly(db, store):
    """Waiting behind another thread's write counts against the busy timeout (0.5 s in the
    test settings): past it, the user gets DatabaseLocked and nothing is stored."""
    inside, release = threading.Event(), threading.Event()

    def long_write() -> None:
        with db.write():
            inside.set()
            release.wait(30)

    holder = threading.Thread(target=long_write)
    holder.start()
    assert inside.wait(30)
    try:
        with pytest.raises(DatabaseLocked, match="locked"):
            store.add_user_message(None, "queued too long")
    finally:
        release.set()
        holder.join(30)
    assert store.counts()["messages"] == 0
    store.add_user_message(None, "after")
    assert store.counts()["messages"] == 1


# -- found by the load test ----------------------------------------------------------------------
def test_an_answer_whose_source_was_deleted_while_it_streamed_is_stored(db, store):
    """A session answers from a chunk; before the answer is stored, another session replaces
    or deletes that document (seconds pass while an answer streams). The answer is stored
    with its snapshot of the source, unlinked, as if the document had gone afterwards (the
    load test saw a FOREIGN KEY error lose the answer instead)."""
    import numpy as np

    from assistant.documents.chunking import Chunk
    from assistant.storage.conversations import AnswerRecord, SourceRecord
    from assistant.storage.documents import DocumentStore

    docs = DocumentStore(db)
    kept, gone = (
        docs.add(name=name, kind="txt", content_hash=name, size_bytes=10, embed_model="m",
                 chunks=[Chunk(0, f"{name} text", 2)], vectors=np.ones((1, 4), np.float32))
        for name in ("kept.txt", "gone.txt")
    )
    q = store.add_user_message(None, "question")
    sources = tuple(
        SourceRecord(rank=n, chunk_id=c.added_ids[0], document_name=c.document.name,
                     location=None, text=f"{c.document.name} text", score=0.5)
        for n, c in enumerate((kept, gone), start=1)
    )
    docs.delete(gone.document.id)  # while the answer streamed

    record = AnswerRecord("m", "base", {}, 1, 1, 1.0, 1.0)
    answer = store.add_assistant_message(q.conversation_id, "answer [1][2]", record, sources,
                                         reply_to_id=q.id)
    assert [(s.chunk_id, s.document_name, s.text) for s in answer.sources] == [
        (kept.added_ids[0], "kept.txt", "kept.txt text"),
        (None, "gone.txt", "gone.txt text"),
    ]
