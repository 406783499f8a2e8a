"""Concurrency load test: sessions chat, upload and rate at once against one SQLite file
(and, with ``--postgres``, the same load on a PostgreSQL database, printed side by side).

    HF_HUB_OFFLINE=1 .venv/bin/python bench/load.py [--sessions 8 --processes 1 --seconds 30]
    HF_HUB_OFFLINE=1 .venv/bin/python bench/load.py --seconds 12 --baseline-seconds 0 --postgres

What runs, for ``--seconds``, on loopback (no browser, no sockets: the app's own services):

* the app process: ``--sessions`` threads sharing one ``Database`` and one ``ChatService``,
  as Streamlit's browser sessions share those of ``ui/resources.py``, with the real document
  library (all-MiniLM-L6-v2, FAISS, FTS5): every message is searched, and uploads go
  through the real ingest path (parse, chunk, embed, store, index);
* ``--processes`` other OS processes on the same file, as a terminal's ``assistant chat``
  and ``assistant data export`` would be: each runs ``--process-sessions`` sessions of its
  own (no documents: a CLI chat started with them off) and reads every feedback row for an
  export every ``--export-every`` seconds.

Each session loops: send a message (a new conversation every 3-8 turns) and read the
streamed answer; rate it (thumbs, often a comment, sometimes tags); sometimes rate an
earlier answer again (changed, or the same again, which must add nothing); sometimes
regenerate and choose one of the alternatives; sometimes list the conversations and open
one; and, in the app process, upload a small document with probability ``--upload-p``.
The generator is the tests' fake, handed to the real ``ChatService``; it streams at once
(``--token-ms`` per word): the figures are about storage, not decoding.
``--real-generator`` answers with the embedded model in the app process instead.

Every storage call (``ConversationStore``, ``DocumentStore``, ``Registry``, the export's
read) is timed, the outermost call only, so that kinds do not overlap; failed calls are
timed too; so is each write's wait for its turn (``sqlite.write_wait``; of it,
``sqlite.begin_immediate`` waits for another process) and how long it then holds the lock
(``sqlite.write_hold``). Every exception a session sees is counted by type: it is what a
user would see. ``--no-write-queue`` makes writers wait as before ``Database``'s writer
queue (in SQLite's busy handler alone), to compare.
At the end the ratings each session believes it made are compared with the newest rating
of each message in the database, and the feedback rows with the rate() calls that changed
something; every conversation, message and document a session created must be there.

A baseline runs before and after: one session, no other process, documents on, each on a
fresh file, for ``--baseline-seconds``. Throughput and p95 are printed as ratios to the two
pooled, with the drift between them (this machine is shared and noisy: compare within a
run, not across runs).
"""

from __future__ import annotations

from assistant.cpu import report as cpu_report
import argparse
import functools
import json
import logging
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from assistant.bootstrap import Library, open_database, open_registry  # noqa: E402
from assistant.config import Settings  # noqa: E402
from assistant.storage import ConversationStore, Database  # noqa: E402
from assistant.storage.conversations import DocumentChoice  # noqa: E402
from assistant.storage.schema import Choice, Conversation, Document, Feedback, Message  # noqa: E402

log = logging.getLogger("bench.load")

#: Storage calls timed, per object: kind = "<prefix>.<method>".
TIMED = {
    "conv": (
        "add_user_message", "add_assistant_message", "rate", "choose", "messages",
        "get_message", "get_conversation", "history_before", "list_conversations",
    ),
    "docs": ("add", "find_by_hash", "find_by_name", "lexical_search", "chunks", "chunk_ids_of"),
    "registry": ("active",),
}
#: Kinds that are storage calls (the others: "action." a user's action end to end, and
#: "sqlite.write_wait" the part of a write spent waiting for its turn, of which
#: "sqlite.begin_immediate" waiting for SQLite's lock, i.e. for another process;
#: "sqlite.write_hold" the time it then held the lock, of which "sqlite.commit" its commit).
STORAGE = ("conv", "docs", "registry", "export")
COMMENTS = (None, None, "good", "wrong: see the second source", "too long", "  ", "thanks!")
TAGS = ("inaccurate", "unhelpful", "wrong citation", "unsafe")
SYNTHETIC_QUESTIONS = (
    "Who ruled Normandy in the tenth century?", "What is the capital of France?",
    "How do solar panels turn light into electricity?", "When was the printing press invented?",
    "Why is the sky blue?", "What does a reward model learn from ratings?",
)
SYNTHETIC_TEXT = (
    "The Normans were the people who in the 10th and 11th centuries gave their name to "
    "Normandy, a region in France. They were descended from Norse raiders and pirates from "
    "Denmark, Iceland and Norway who, under their leader Rollo, agreed to swear fealty to "
    "King Charles III of West Francia."
)


# -- measuring -------------------------------------------------------------------------------
class Recorder:
    """Latencies (ms) per kind and errors per type, from any number of threads."""

    def __init__(self) -> None:
        self.ms: dict[str, list[float]] = defaultdict(list)
        self.errors: Counter[str] = Counter()
        self.examples: dict[str, str] = {}
        self._lock = threading.Lock()
        self._local = threading.local()

    def add(self, kind: str, ms: float) -> None:
        with self._lock:
            self.ms[kind].append(ms)

    def error(self, err: BaseException) -> None:
        name = type(err).__name__
        with self._lock:
            self.errors[name] += 1
            self.examples.setdefault(name, str(err)[:300])
            first = self.errors[name] == 1
        if first:
            log.warning("first %s seen by a session: %s", name, err, exc_info=not _expected(err))

    def timed(self, kind: str, fn: Callable) -> Callable:
        """``fn``, timed when it is the outermost timed call of its thread."""

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):  # noqa: ANN202
            if getattr(self._local, "busy", False):
                return fn(*args, **kwargs)
            self._local.busy = True
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self._local.busy = False
                self.add(kind, (time.perf_counter() - t0) * 1000)

        return wrapper

    def instrument(self, obj: object, prefix: str) -> None:
        for name in TIMED[prefix]:
            setattr(obj, name, self.timed(f"{prefix}.{name}", getattr(obj, name)))

    def time_lock_waits(self, db: Database) -> None:
        """Record, for each write, how long it waited for its turn (from ``db.write()`` to
        the end of its ``BEGIN IMMEDIATE``: this process's writers, then SQLite's lock),
        how long it then held the lock, and how long its commit took (the ORM's flush, the
        COMMIT, and a WAL checkpoint when the commit starts one)."""
        from sqlalchemy import event

        write = db.write

        @contextmanager
        def timed_write() -> Iterator:
            self._local.write_t0 = time.perf_counter()
            self._local.begin_t0 = self._local.begin_done = None
            with write() as session:
                yield session
                commit_t0 = time.perf_counter()
            end = time.perf_counter()
            self.add("sqlite.commit", (end - commit_t0) * 1000)
            if self._local.begin_done is not None:
                self.add("sqlite.write_hold", (end - self._local.begin_done) * 1000)

        db.write = timed_write

        @event.listens_for(db.engine, "before_cursor_execute")
        def _before(conn, cursor, statement, *args):  # noqa: ANN001, ANN202
            # The first try: BEGIN IMMEDIATE is tried again while another process writes.
            if statement.startswith("BEGIN IMMEDIATE") and getattr(self._local, "begin_t0", None) is None:
                self._local.begin_t0 = time.perf_counter()

        @event.listens_for(db.engine, "after_cursor_execute")
        def _after(conn, cursor, statement, *args):  # noqa: ANN001, ANN202
            if not statement.startswith("BEGIN IMMEDIATE"):
                return
            now = time.perf_counter()
            self.add("sqlite.begin_immediate", (now - self._local.begin_t0) * 1000)
            self._local.begin_t0 = None
            t0 = getattr(self._local, "write_t0", None)
            if t0 is not None:
                self._local.write_t0, self._local.begin_done = None, now
                self.add("sqlite.write_wait", (now - t0) * 1000)

    def to_json(self) -> dict[str, Any]:
        return {"ms": dict(self.ms), "errors": dict(self.errors), "examples": self.examples}

    def merge(self, data: dict[str, Any]) -> None:
        with self._lock:
            for kind, values in data["ms"].items():
                self.ms[kind].extend(values)
            self.errors.update(data["errors"])
            for name, text in data["examples"].items():
                self.examples.setdefault(name, text)


def _expected(err: BaseException) -> bool:
    from assistant.errors import AssistantError

    return isinstance(err, AssistantError)


@dataclass
class Ledger:
    """What sessions believe they stored; checked against the database at the end."""

    conversations: set[int] = field(default_factory=set)
    messages: set[int] = field(default_factory=set)
    #: message id -> (rating, comment, tags) of the newest rating the session made.
    ratings: dict[int, tuple] = field(default_factory=dict)
    rate_calls: int = 0
    #: rate() calls that changed the current rating: each must have added one row.
    feedback_rows: int = 0
    choices: int = 0
    documents: set[str] = field(default_factory=set)
    turns: int = 0

    def merge(self, other: Ledger) -> None:
        self.conversations |= other.conversations
        self.messages |= other.messages
        self.ratings.update(other.ratings)
        self.documents |= other.documents
        for name in ("rate_calls", "feedback_rows", "choices", "turns"):
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["conversations"], d["messages"] = sorted(self.conversations), sorted(self.messages)
        d["documents"] = sorted(self.documents)
        d["ratings"] = {str(k): [v[0], v[1], list(v[2])] for k, v in self.ratings.items()}
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Ledger:
        return cls(
            set(d["conversations"]), set(d["messages"]),
            {int(k): (v[0], v[1], tuple(v[2])) for k, v in d["ratings"].items()},
            d["rate_calls"], d["feedback_rows"], d["choices"], set(d["documents"]), d["turns"],
        )


# -- one simulated user ----------------------------------------------------------------------
class UploadFailed(Exception):
    pass


class Session:
    """One user: chats, rates, regenerates, browses and uploads until the deadline."""

    def __init__(self, name: str, service, recorder: Recorder, rng: random.Random,  # noqa: ANN001
                 corpus: Corpus, library: Library | None = None, upload_p: float = 0.0,
                 think_s: float = 0.0, cover_all: bool = False) -> None:
        self.name, self.service, self.store = name, service, service.store
        self.recorder, self.rng, self.corpus = recorder, rng, corpus
        self.library, self.upload_p, self.think_s = library, upload_p, think_s
        self.cover_all = cover_all
        self.ledger = Ledger()
        self.conversation: int | None = None
        self.turns_left = 0
        self.last_answer: int | None = None
        self.answers: list[int] = []
        self.uploads = 0

    def run(self, deadline: float) -> None:
        # The first loop of a ``cover_all`` session does every action once (rating the same
        # again included), so that even a run of a few seconds exercises every path.
        first = self.cover_all
        while time.monotonic() < deadline:
            self.act("turn", self.turn)
            if self.last_answer is not None:
                self.act("rate", lambda: self.rate(self.last_answer))
            r = self.rng.random()
            if self.answers and (first or r < 0.25):
                self.act("rerate", lambda: self.rerate(same=True if first else None))  # noqa: B023 - act() calls it at once
            if self.last_answer is not None and (first or 0.25 <= r < 0.40):
                self.act("regenerate", self.regenerate)
            if first or 0.40 <= r < 0.60:
                self.act("browse", self.browse)
            if self.library is not None and (first or self.rng.random() < self.upload_p):
                self.act("upload", self.upload)
            first = False
            if self.think_s:
                time.sleep(self.rng.uniform(0, 2 * self.think_s))

    def act(self, name: str, fn: Callable[[], None]) -> None:
        t0 = time.perf_counter()
        try:
            fn()
        except Exception as err:  # noqa: BLE001 - counted: this is what a user would see
            self.recorder.error(err)
        finally:
            self.recorder.add(f"action.{name}", (time.perf_counter() - t0) * 1000)

    def turn(self) -> None:
        if self.conversation is None or self.turns_left <= 0:
            self.conversation, self.turns_left = None, self.rng.randint(3, 8)
            self.last_answer, docs = None, DocumentChoice(use_documents=self.library is not None)
        else:
            docs = None
        self.ledger.turns += 1
        reply = self.service.send(self.conversation, self.corpus.question(self.rng), documents=docs)
        self.conversation = reply.question.conversation_id
        self.ledger.conversations.add(self.conversation)
        self.ledger.messages.add(reply.question.id)
        self.turns_left -= 1
        self.last_answer = self._finish(reply)

    def _finish(self, reply) -> int:  # noqa: ANN001
        for _ in reply:
            pass
        assert reply.message is not None
        self.ledger.messages.add(reply.message.id)
        self.answers.append(reply.message.id)
        return reply.message.id

    def rate(self, message_id: int, same: bool = False) -> None:
        if same and message_id in self.ledger.ratings:
            rating, comment, tags = self.ledger.ratings[message_id]
        else:
            rating = self.rng.choice((1, 1, -1, -1, None))
            comment = self.rng.choice(COMMENTS)
            tags = tuple(self.rng.sample(TAGS, self.rng.choice((0, 0, 0, 1, 2))))
        self.store.rate(message_id, rating, comment, tags)
        # What ConversationStore.rate promises: blank comments are none, tags a sorted set;
        # a rating identical to the current one adds no row, any other adds one.
        key = (rating, (comment or "").strip() or None, tuple(sorted(tags)))
        self.ledger.rate_calls += 1
        if self.ledger.ratings.get(message_id, object()) != key:
            self.ledger.feedback_rows += 1
        self.ledger.ratings[message_id] = key

    def rerate(self, same: bool | None = None) -> None:
        """Rate one of this session's answers again: the same again (which must add no row)
        or drawn afresh."""
        same = self.rng.random() < 0.4 if same is None else same
        self.rate(self.rng.choice(self.answers), same=same)

    def regenerate(self) -> None:
        reply = self.service.regenerate(self.last_answer)
        new_id = self._finish(reply)
        alternatives = self.store.get_message(new_id).alternatives
        chosen = self.rng.choice(alternatives)
        self.store.choose(chosen)
        self.ledger.choices += 1
        self.last_answer = chosen

    def browse(self) -> None:
        chats = self.store.list_conversations(chats_only=True)
        if chats:
            self.store.messages(self.rng.choice(chats[:20]).id)

    def upload(self) -> None:
        self.uploads += 1
        replace_earlier = self.uploads > 1 and self.rng.random() < 0.2
        n = self.rng.randint(1, self.uploads - 1) if replace_earlier else self.uploads
        name = f"load-{self.name}-{n}.txt"
        data = self.corpus.document(self.rng, f"{self.name} upload {self.uploads}")
        result = self.library.ingestor.ingest_bytes(name, data.encode())
        if not result.ok:
            raise UploadFailed(result.describe())
        self.ledger.documents.add(result.name)


class Corpus:
    """Questions and document text: SQuAD's when the shared data is there, else built in."""

    def __init__(self) -> None:
        self.questions, self.paragraphs = list(SYNTHETIC_QUESTIONS), [SYNTHETIC_TEXT]
        try:
            from tests.shared_data import SHARED_DATA

            data = json.loads((SHARED_DATA / "squad2_dev_2_articles.json").read_text())["data"]
        except (ImportError, OSError, ValueError, KeyError):
            return
        paragraphs = [p for article in data for p in article["paragraphs"]]
        self.paragraphs = [p["context"] for p in paragraphs]
        self.questions = [q["question"] for p in paragraphs for q in p["qas"]]

    def question(self, rng: random.Random) -> str:
        return rng.choice(self.questions)

    def document(self, rng: random.Random, header: str) -> str:
        # The header makes every upload's content new (the same bytes would be skipped).
        return "\n\n".join([header, *rng.sample(self.paragraphs, min(2, len(self.paragraphs)))])


# -- a process's worth of sessions -----------------------------------------------------------
@dataclass
class LoadOptions:
    data_dir: Path
    sessions: int = 8
    processes: int = 1
    process_sessions: int = 2
    seconds: float = 30.0
    upload_p: float = 0.03
    documents: bool = True
    token_ms: float = 0.0
    think_ms: float = 0.0
    export_every: float = 2.0
    busy_timeout_s: float | None = None
    real_generator: bool = False
    #: Leave out Database's per-process writer queue (SQLite's busy handler alone), to
    #: measure what it buys.
    no_write_queue: bool = False
    seed: int = 0
    #: None: the SQLite file in ``data_dir``; else this (fresh, empty) database.
    database_url: str | None = None

    def settings(self) -> Settings:
        extra = {} if self.busy_timeout_s is None else {"db_busy_timeout_s": self.busy_timeout_s}
        # The converted chat model is cached where the app caches it (--real-generator).
        cache = Settings().resolved_model_cache_dir.resolve()
        return Settings(data_dir=Path(self.data_dir), model_cache_dir=cache,
                        database_url=self.database_url, **extra)


@dataclass
class LoadResult:
    options: LoadOptions
    recorder: Recorder
    ledger: Ledger
    audit: Audit
    seconds: float
    load_avg: list[float]
    #: Chat turns of the app process, then of each other process.
    turns_by_process: list[int] = field(default_factory=list)

    @property
    def storage_ops(self) -> int:
        return sum(len(v) for k, v in self.recorder.ms.items() if k.split(".")[0] in STORAGE)

    @property
    def locked_errors(self) -> int:
        return self.recorder.errors.get("DatabaseLocked", 0)


def make_service(settings: Settings, db: Database, recorder: Recorder, library: Library | None,  # noqa: ANN201
                 token_ms: float, real_generator: bool = False):
    """A ChatService wired as ``build_chat_service`` wires it, on the fake generator unless
    ``real_generator``, with every storage call timed."""
    from assistant.chat.service import ChatService

    if real_generator:
        from assistant.engines.transformers import TransformersGenerator
        from assistant.engines.models import load_model

        generator = TransformersGenerator(load_model(settings), workers=settings.generation_workers)
    else:
        from tests.fakes import FakeGenerator

        generator = FakeGenerator(
            answer=" ".join(["Paris is the capital of France, as the first source says [1]."] * 4),
            context_window=8192, delay=token_ms / 1000,
        )
        generator.model_version = "base"  # what the registry has active on a fresh file
    recorder.time_lock_waits(db)
    store = ConversationStore(db)
    recorder.instrument(store, "conv")
    registry = open_registry(settings, db)
    recorder.instrument(registry, "registry")
    if library is not None:
        recorder.instrument(library.store, "docs")
    service = ChatService(store, generator, settings, retriever=library.retriever if library else None,
                          registry=registry)
    service.sync_version()
    return service


def open_bench_library(settings: Settings, db: Database, embedder) -> Library:  # noqa: ANN001
    """``open_library``'s wiring with an embedder already loaded (the baseline and the load
    run each have their own file and index, and one model)."""
    from assistant.documents.index import VectorIndex
    from assistant.documents.index_sync import sync_index
    from assistant.documents.ingest import Ingestor
    from assistant.documents.retrieval import Retriever
    from assistant.storage.documents import DocumentStore

    store = DocumentStore(db)
    r = settings.retrieval
    index = VectorIndex(settings.index_dir, embedder.dim, r.index_type, embedder.name)
    report = sync_index(store, index, embedder)
    return Library(store, embedder, index, Ingestor(store, embedder, index, r),
                   Retriever(store, embedder, index, r), report)


def run_sessions(sessions: list[Session], seconds: float, extra: list[Callable[[float], None]] = ()) -> float:
    """Run every session (and ``extra`` loops) in its own thread for ``seconds``."""
    t0 = time.monotonic()
    deadline = t0 + seconds
    threads = [threading.Thread(target=s.run, args=(deadline,), name=s.name, daemon=True)
               for s in sessions]
    threads += [threading.Thread(target=fn, args=(deadline,), daemon=True) for fn in extra]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.monotonic() - t0


def exporter(db: Database, recorder: Recorder, every: float) -> Callable[[float], None]:
    """Reads everything an export reads, every ``every`` seconds (``assistant data export``)."""
    from alignment.export import load_feedback

    timed = recorder.timed("export.load_feedback", load_feedback)

    def loop(deadline: float) -> None:
        while time.monotonic() + every < deadline:
            time.sleep(every)
            try:
                timed(db)
            except Exception as err:  # noqa: BLE001
                recorder.error(err)

    return loop


# -- the audit ---------------------------------------------------------------------------------
@dataclass
class Audit:
    ratings_believed: int
    ratings_matching: int
    ratings_wrong: list[tuple[int, tuple, tuple | None]]
    feedback_rows_expected: int
    feedback_rows_found: int
    rated_unknown: int
    conversations_missing: int
    messages_missing: int
    choices_expected: int
    choices_found: int
    documents_missing: int

    @property
    def ok(self) -> bool:
        return (
            not self.ratings_wrong and self.ratings_matching == self.ratings_believed
            and self.feedback_rows_found == self.feedback_rows_expected
            and not self.rated_unknown and not self.conversations_missing
            and not self.messages_missing and self.choices_found == self.choices_expected
            and not self.documents_missing
        )

    def lines(self) -> list[str]:
        return [
            f"ratings believed by the sessions: {self.ratings_believed}, current in the database "
            f"and equal: {self.ratings_matching}, different: {len(self.ratings_wrong)}, "
            f"rated messages no session rated: {self.rated_unknown}",
            f"feedback rows: {self.feedback_rows_found} in the database, "
            f"{self.feedback_rows_expected} rate() calls that changed a rating",
            f"choices: {self.choices_found} stored, {self.choices_expected} made; missing: "
            f"{self.conversations_missing} conversations, {self.messages_missing} messages, "
            f"{self.documents_missing} documents",
            f"audit: {'OK' if self.ok else 'FAILED'}",
        ]


def audit(db: Database, ledger: Ledger) -> Audit:
    """Compare what the sessions believe they stored with the database (a fresh file that
    only they wrote)."""
    from sqlalchemy import func, select

    with db.read() as s:
        current: dict[int, tuple] = {}
        rows = 0
        for mid, rating, comment, tags in s.execute(
            select(Feedback.message_id, Feedback.rating, Feedback.comment, Feedback.tags)
            .order_by(Feedback.id)
        ):
            current[mid] = (rating, comment, tuple(tags or ()))
            rows += 1
        conversations = set(s.scalars(select(Conversation.id)))
        messages = set(s.scalars(select(Message.id)))
        choices = s.scalar(select(func.count()).select_from(Choice)) or 0
        documents = set(s.scalars(select(Document.name)))
    wrong = [(mid, want, current.get(mid)) for mid, want in ledger.ratings.items()
             if current.get(mid) != want]
    return Audit(
        ratings_believed=len(ledger.ratings),
        ratings_matching=len(ledger.ratings) - len(wrong),
        ratings_wrong=wrong,
        feedback_rows_expected=ledger.feedback_rows,
        feedback_rows_found=rows,
        rated_unknown=len(set(current) - set(ledger.ratings)),
        conversations_missing=len(ledger.conversations - conversations),
        messages_missing=len(ledger.messages - messages),
        choices_expected=ledger.choices,
        choices_found=choices,
        documents_missing=len(ledger.documents - documents),
    )


# -- the run -----------------------------------------------------------------------------------
def _worker_command(o: LoadOptions, index: int, out: Path) -> list[str]:
    return [
        sys.executable, str(Path(__file__).resolve()), "--worker", "--out", str(out),
        "--data-dir", str(o.data_dir), "--sessions", str(o.process_sessions),
        "--seconds", str(o.seconds), "--token-ms", str(o.token_ms), "--think-ms", str(o.think_ms),
        "--export-every", str(o.export_every), "--seed", str(o.seed * 1000 + index + 1),
        *(["--busy-timeout", str(o.busy_timeout_s)] if o.busy_timeout_s is not None else []),
        *(["--no-write-queue"] if o.no_write_queue else []),
        *(["--database-url", o.database_url] if o.database_url else []),
    ]


def _open(settings: Settings, no_write_queue: bool) -> Database:
    if no_write_queue:  # as before the queue: every writer waits in SQLite's busy handler
        import assistant.storage.db as storage_db

        storage_db._begin_immediate = lambda conn, _: conn.exec_driver_sql("BEGIN IMMEDIATE")
    db = open_database(settings)
    if no_write_queue:
        db._writer = None
    return db


def run_load(o: LoadOptions, embedder=None) -> LoadResult:  # noqa: ANN001
    """The app process's sessions plus ``o.processes`` worker processes, for ``o.seconds``;
    then the audit. ``embedder`` (loaded once by the caller) is needed for documents."""
    settings = o.settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    db = _open(settings, o.no_write_queue)
    workers: list[tuple[subprocess.Popen, Path]] = []
    recorder, ledger = Recorder(), Ledger()
    try:
        # Workers start first: their imports take seconds, the library's model too.
        for i in range(o.processes):
            out = settings.data_dir / f"worker-{i}.json"
            proc = subprocess.Popen(
                _worker_command(o, i, out), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                text=True, cwd=ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1"},
            )
            workers.append((proc, out))
        library = None
        if o.documents:
            if embedder is None:
                from assistant.documents.embedding import Embedder

                embedder = Embedder(settings.retrieval.embedding_model)
            library = open_bench_library(settings, db, embedder)
        service = make_service(settings, db, recorder, library, o.token_ms, o.real_generator)
        corpus, rng = Corpus(), random.Random(o.seed)
        sessions = [
            Session(f"app{i}", service, recorder, random.Random(rng.random()), corpus, library,
                    o.upload_p, o.think_ms / 1000, cover_all=i == 0)
            for i in range(o.sessions)
        ]
        for proc, _ in workers:
            line = proc.stdout.readline().strip()
            if line != "ready":
                raise RuntimeError(f"a worker process failed to start (said {line!r})")
        load_avg: list[float] = []
        sampler = _sampler(load_avg)
        for proc, _ in workers:
            proc.stdin.write("go\n")
            proc.stdin.flush()
        elapsed = run_sessions(sessions, o.seconds, [sampler])
        turns = [sum(s.ledger.turns for s in sessions)]
        for proc, out in workers:
            proc.stdin.close()
            if proc.wait(timeout=o.seconds + 120) != 0:
                raise RuntimeError(f"a worker process exited with {proc.returncode}")
            data = json.loads(out.read_text())
            recorder.merge(data["recorder"])
            ledger.merge(Ledger.from_json(data["ledger"]))
            turns.append(data["ledger"]["turns"])
        for s in sessions:
            ledger.merge(s.ledger)
        return LoadResult(o, recorder, ledger, audit(db, ledger), elapsed, load_avg, turns)
    finally:
        for proc, _ in workers:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        db.dispose()


def _sampler(samples: list[float]) -> Callable[[float], None]:
    def loop(deadline: float) -> None:
        while time.monotonic() < deadline:
            samples.append(os.getloadavg()[0])
            time.sleep(1.0)

    return loop


def worker(args: argparse.Namespace) -> None:
    """A second process on the same file: sessions without documents, plus an exporter."""
    o = LoadOptions(Path(args.data_dir), sessions=args.sessions, seconds=args.seconds,
                    token_ms=args.token_ms, think_ms=args.think_ms, export_every=args.export_every,
                    busy_timeout_s=args.busy_timeout, seed=args.seed, database_url=args.database_url)
    settings = o.settings()
    db = _open(settings, args.no_write_queue)
    recorder = Recorder()
    service = make_service(settings, db, recorder, None, o.token_ms)
    corpus, rng = Corpus(), random.Random(o.seed)
    sessions = [Session(f"p{o.seed}s{i}", service, recorder, random.Random(rng.random()), corpus,
                        think_s=o.think_ms / 1000, cover_all=i == 0) for i in range(o.sessions)]
    print("ready", flush=True)
    if sys.stdin.readline().strip() != "go":
        return
    extra = [exporter(db, recorder, o.export_every)] if o.export_every > 0 else []
    run_sessions(sessions, o.seconds, extra)
    ledger = Ledger()
    for s in sessions:
        ledger.merge(s.ledger)
    Path(args.out).write_text(json.dumps({"recorder": recorder.to_json(), "ledger": ledger.to_json()}))
    db.dispose()


# -- report ----------------------------------------------------------------------------------
def percentiles(values: list[float]) -> tuple[float, float, float]:
    p50, p95, p99 = np.percentile(np.asarray(values), [50, 95, 99])
    return float(p50), float(p95), float(p99)


def report(result: LoadResult, baseline: LoadResult | None = None) -> str:
    o, rec = result.options, result.recorder
    lines = [
        f"sessions: {o.sessions} threads in the app process + {o.processes} other process(es) x "
        f"{o.process_sessions} sessions; {result.seconds:.1f} s; {result.ledger.turns} chat turns "
        f"(per process: {', '.join(map(str, result.turns_by_process))})",
        f"load average (1 min) during the run: mean {np.mean(result.load_avg or [0]):.2f}, "
        f"max {max(result.load_avg or [0]):.2f} ({os.cpu_count()} cores)",
    ]
    total = result.storage_ops / result.seconds
    line = f"storage operations: {result.storage_ops} in all, {total:.1f}/s"
    if baseline:
        line += f" ({total / (baseline.storage_ops / baseline.seconds):.2f}x the 1-session baseline)"
    lines += [line, ""]
    header = f"{'kind':32} {'n':>6} {'ops/s':>8} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8}"
    if baseline:
        header += f" {'ops/s x':>8} {'p95 x':>7}"
    lines.append(header)
    order = {"sqlite": 1, "action": 2}
    for kind in sorted(rec.ms, key=lambda k: (order.get(k.split(".")[0], 0), k)):
        values = rec.ms[kind]
        p50, p95, p99 = percentiles(values)
        row = (f"{kind:32} {len(values):>6} {len(values) / result.seconds:>8.1f} "
               f"{p50:>8.1f} {p95:>8.1f} {p99:>8.1f}")
        base = baseline.recorder.ms.get(kind) if baseline else None
        if base:
            b_rate, b_p95 = len(base) / baseline.seconds, percentiles(base)[1]
            row += f" {len(values) / result.seconds / b_rate:>8.2f}"
            row += f" {p95 / b_p95:>7.2f}" if b_p95 >= 0.05 else f" {'-':>7}"
        elif baseline:
            row += f" {'-':>8} {'-':>7}"
        lines.append(row)
    lines.append("")
    if rec.errors:
        lines.append("errors that reached a session: " + ", ".join(
            f"{name} x{n} ({rec.examples.get(name, '')[:120]})" for name, n in rec.errors.most_common()))
    else:
        lines.append("errors that reached a session: none")
    lines.append(f"DatabaseLocked that reached a session: {result.locked_errors}")
    lines += result.audit.lines()
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sessions", type=int, default=8, help="session threads in the app process")
    ap.add_argument("--processes", type=int, default=1, help="other processes on the same file")
    ap.add_argument("--process-sessions", type=int, default=2, help="sessions in each other process")
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--baseline-seconds", type=float, default=None,
                    help="each 1-session baseline's duration (default: --seconds / 3; 0: none)")
    ap.add_argument("--data-dir", type=Path, default=None,
                    help="a new folder for the files, kept (default: a temporary one)")
    ap.add_argument("--upload-p", type=float, default=0.03, help="chance of an upload per loop")
    ap.add_argument("--token-ms", type=float, default=0.0, help="fake generator: ms per word")
    ap.add_argument("--think-ms", type=float, default=0.0, help="mean pause between loops")
    ap.add_argument("--export-every", type=float, default=2.0)
    ap.add_argument("--busy-timeout", type=float, default=None,
                    help="seconds (default: the settings', ASSISTANT_DB_BUSY_TIMEOUT_S)")
    ap.add_argument("--real-generator", action="store_true")
    ap.add_argument("--no-write-queue", action="store_true",
                    help="writers wait in SQLite's busy handler alone (as before the queue)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    ap.add_argument("--postgres", action="store_true",
                    help="then run the same load on PostgreSQL (a throwaway cluster started as the "
                         "tests start it, tests/pg.py) and print the two side by side")
    ap.add_argument("--database-url", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--out", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.worker:  # its stdout is the protocol with the parent ("ready", ...)
        worker(args)
        return
    print(cpu_report(), flush=True)  # every figure names its CPU

    if args.data_dir and args.data_dir.exists() and any(args.data_dir.iterdir()):
        sys.exit(f"{args.data_dir} is not empty: the audit needs fresh files; name a new folder")
    with tempfile.TemporaryDirectory(prefix="load-") as tmp:
        root = args.data_dir or Path(tmp)
        o = LoadOptions(
            root / "load", sessions=args.sessions, processes=args.processes,
            process_sessions=args.process_sessions, seconds=args.seconds, upload_p=args.upload_p,
            token_ms=args.token_ms, think_ms=args.think_ms, export_every=args.export_every,
            busy_timeout_s=args.busy_timeout, real_generator=args.real_generator, seed=args.seed,
            no_write_queue=args.no_write_queue,
        )
        from assistant.documents.embedding import Embedder

        embedder = Embedder(o.settings().retrieval.embedding_model)
        base_s = args.seconds / 3 if args.baseline_seconds is None else args.baseline_seconds
        base_o = replace(o, sessions=1, processes=0, seconds=base_s)
        before = after = None
        if base_s > 0:
            print(f"baseline: 1 session, no other process, {base_s:.0f} s ...", flush=True)
            before = run_load(replace(base_o, data_dir=root / "baseline-before"), embedder)
            print(report(before), "\n", flush=True)
        print(f"load: {o.sessions} sessions + {o.processes} process(es), {o.seconds:.0f} s ...",
              flush=True)
        result = run_load(o, embedder)
        if base_s > 0:
            print(f"baseline again (drift): {base_s:.0f} s ...", flush=True)
            after = run_load(replace(base_o, data_dir=root / "baseline-after"), embedder)
            rates = [r.storage_ops / r.seconds for r in (before, after)]
            print(f"baseline storage ops/s before {rates[0]:.1f}, after {rates[1]:.1f} "
                  f"(after/before {rates[1] / rates[0]:.2f}); ratios below are to both pooled\n")
        baseline = pooled(before, after) if before else None
        print(report(result, baseline), flush=True)
        figures = _figures(result, baseline)
        runs = [r for r in (before, result, after) if r is not None]
        if args.postgres:
            pg_runs = run_postgres(o, root, embedder, base_s)
            print(side_by_side({"sqlite": result, "postgresql": pg_runs[-1]}), flush=True)
            figures["postgresql"] = _figures(pg_runs[-1], None)["load"]
            runs += pg_runs
        if args.json:
            args.json.write_text(json.dumps(figures, indent=2))
    sys.exit(0 if all(r.audit.ok and not r.recorder.errors for r in runs) else 1)


def run_postgres(o: LoadOptions, root: Path, embedder, base_s: float) -> list[LoadResult]:  # noqa: ANN001
    """The same load on a fresh database of a throwaway PostgreSQL cluster; returns the runs
    (a baseline first when ``base_s``), the load last."""
    from tests import pg

    reason = pg.missing_reason()
    if reason:
        sys.exit(f"--postgres: {reason}")
    cluster = pg.start_cluster()
    runs = []
    try:
        databases = pg.Databases(cluster)
        if base_s > 0:
            url, _ = databases.fresh(migrated=False)
            print(f"PostgreSQL baseline: 1 session, {base_s:.0f} s ...", flush=True)
            runs.append(run_load(replace(o, data_dir=root / "pg-baseline", sessions=1, processes=0,
                                         seconds=base_s, database_url=url), embedder))
        url, _ = databases.fresh(migrated=False)
        print(f"PostgreSQL load: {o.sessions} sessions + {o.processes} process(es), "
              f"{o.seconds:.0f} s ...", flush=True)
        result = run_load(replace(o, data_dir=root / "pg-load", database_url=url), embedder)
        runs.append(result)
        print(report(result, runs[0] if len(runs) > 1 else None), "\n", flush=True)
    finally:
        cluster.remove()
    return runs


def side_by_side(results: dict[str, LoadResult]) -> str:
    """Throughput and p95/p99 per kind of each database's load run, and their audits."""
    names = list(results)
    kinds = sorted({k for r in results.values() for k in r.recorder.ms if not k.startswith("sqlite.")})
    lines = ["", "side by side (the same load, one database each):",
             f"{'':32} " + " ".join(f"{n:>30}" for n in names),
             f"{'kind':32} " + " ".join(f"{'ops/s':>10}{'p95 ms':>10}{'p99 ms':>10}" for _ in names)]
    for name in ("storage ops/s",):
        lines.append(f"{name:32} " + " ".join(
            f"{r.storage_ops / r.seconds:>10.1f}{'':>20}" for r in results.values()))
    for kind in kinds:
        row = f"{kind:32} "
        for r in results.values():
            values = r.recorder.ms.get(kind)
            if values:
                _, p95, p99 = percentiles(values)
                row += f"{len(values) / r.seconds:>10.1f}{p95:>10.1f}{p99:>10.1f}"
            else:
                row += f"{'-':>10}{'-':>10}{'-':>10}"
        lines.append(row)
    for name, r in results.items():
        errors = ", ".join(f"{k} x{n}" for k, n in r.recorder.errors.most_common()) or "none"
        lines.append(f"{name}: errors {errors}; turns per process {r.turns_by_process}; "
                     f"ratings {r.audit.ratings_matching}/{r.audit.ratings_believed} as believed, "
                     f"feedback rows {r.audit.feedback_rows_found}/{r.audit.feedback_rows_expected}, "
                     f"lost {len(r.audit.ratings_wrong)}; audit {'ok' if r.audit.ok else 'FAILED'}")
    return "\n".join(lines)


def pooled(a: LoadResult, b: LoadResult) -> LoadResult:
    """Two baseline runs as one (their latencies together, their durations added)."""
    rec = Recorder()
    for r in (a, b):
        rec.merge(r.recorder.to_json())
    return LoadResult(a.options, rec, a.ledger, a.audit if not a.audit.ok else b.audit,
                      a.seconds + b.seconds, a.load_avg + b.load_avg,
                      [x + y for x, y in zip(a.turns_by_process, b.turns_by_process, strict=True)])


def _figures(result: LoadResult, baseline: LoadResult | None) -> dict[str, Any]:
    def one(r: LoadResult) -> dict[str, Any]:
        return {
            "seconds": r.seconds, "storage_ops_per_s": r.storage_ops / r.seconds,
            "load_avg": r.load_avg, "errors": dict(r.recorder.errors),
            "audit_ok": r.audit.ok,
            "kinds": {k: dict(zip(("n", "p50", "p95", "p99"), (len(v), *percentiles(v)), strict=True))
                      for k, v in r.recorder.ms.items()},
        }

    return {"load": one(result), "baseline": one(baseline) if baseline else None}


if __name__ == "__main__":
    main()
