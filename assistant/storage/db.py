"""Engine and sessions. SQLite by default (WAL, busy timeout, foreign keys); any SQLAlchemy URL works.

Writes on SQLite start with ``BEGIN IMMEDIATE``: a deferred transaction that reads and then
writes can fail at once with "database is locked" when another writer got in between, without
the busy timeout ever being applied. Taking the write lock up front makes every writer wait
its turn instead.

Writers of one process also queue on a lock of their own before asking SQLite. SQLite's busy
handler polls, sleeping up to 100 ms between tries, so a thread waiting behind another
thread of the same process often slept on long after the lock was free. The process lock
hands over at once; only waiting for another process goes through the busy handler. Under
``bench/load.py`` (8 session threads and a second process, 2 cores) a write's wait for its
turn went from 113 ms at p95 and 440 ms at p99 to 87 and 140 (its median from 6 to 14 ms:
the queue is fairer, not faster). The wait in the queue is bounded by the busy timeout too.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from assistant.errors import DatabaseError, DatabaseLocked

log = logging.getLogger(__name__)

_LOCKED_MARKERS = ("database is locked", "database table is locked", "database is busy")


def is_locked_error(err: BaseException) -> bool:
    return isinstance(err, OperationalError) and any(
        m in str(err.orig).lower() for m in _LOCKED_MARKERS
    )


def make_engine(url: str, busy_timeout_s: float = 10.0) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_engine(url, pool_pre_ping=True)

    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(
        url, connect_args={"timeout": busy_timeout_s, "check_same_thread": False}
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):  # noqa: ANN001
        # Let SQLAlchemy's "begin" event below emit BEGIN instead of the driver.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")
        cur.execute("PRAGMA journal_mode = WAL")
        cur.execute("PRAGMA synchronous = NORMAL")
        cur.execute("PRAGMA foreign_keys = ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):  # noqa: ANN001
        mode = "IMMEDIATE" if conn.get_execution_options().get("sqlite_write") else "DEFERRED"
        conn.exec_driver_sql(f"BEGIN {mode}")

    return engine


class Database:
    """One engine plus read and write session factories."""

    def __init__(self, url: str, busy_timeout_s: float = 10.0) -> None:
        self.url = url
        self.busy_timeout_s = busy_timeout_s
        self.engine = make_engine(url, busy_timeout_s)
        # SQLite has one writer at a time anyway; other databases queue writers themselves.
        self._writer = threading.Lock() if self.engine.dialect.name == "sqlite" else None
        self._read = sessionmaker(self.engine, expire_on_commit=False)
        self._write = sessionmaker(
            self.engine.execution_options(sqlite_write=True), expire_on_commit=False
        )

    @property
    def where(self) -> str:
        url = make_url(self.url)
        return url.database if url.get_backend_name() == "sqlite" else url.render_as_string()

    @contextmanager
    def read(self) -> Iterator[Session]:
        with self._translate(), self._read() as session:
            yield session

    @contextmanager
    def write(self) -> Iterator[Session]:
        """A transaction: committed when the block ends, rolled back whole on any error."""
        with self._translate(), self._write_turn(), self._write.begin() as session:
            yield session

    @contextmanager
    def _write_turn(self) -> Iterator[None]:
        """Wait (up to the busy timeout) for this process's other writers to finish."""
        if self._writer is None:
            yield
            return
        if not self._writer.acquire(timeout=self.busy_timeout_s):
            raise DatabaseLocked(self.where)
        try:
            yield
        finally:
            self._writer.release()

    @contextmanager
    def _translate(self) -> Iterator[None]:
        try:
            yield
        except OperationalError as err:
            if is_locked_error(err):
                raise DatabaseLocked(self.where) from err
            raise DatabaseError(f"Database error on {self.where}: {err.orig}") from err

    def dispose(self) -> None:
        self.engine.dispose()
