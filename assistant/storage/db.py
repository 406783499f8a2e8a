"""Engine and sessions. SQLite by default (WAL, busy timeout, foreign keys), or PostgreSQL
(``postgresql+psycopg://...``): the dialects with a lexical search (:mod:`.lexical`).

A PostgreSQL server that goes away (restarted, network down) or refuses the login raises
:class:`DatabaseUnreachable`: the transaction under way was rolled back by the server, and
the pool checks a connection before handing it out, so the next operation after the server
is back works again.

Writes on SQLite start with ``BEGIN IMMEDIATE``: a deferred transaction that reads and then
writes can fail at once with "database is locked" when another writer got in between, without
the busy timeout ever being applied. Taking the write lock up front makes every writer wait
its turn instead.

Waiting for that lock is done here rather than by SQLite's busy handler, which polls with
sleeps that grow to 100 ms: a writer often slept on long after the lock was free. Writers
of one process queue on a lock of their own (handed over at once), and the one at the head
tries ``BEGIN IMMEDIATE`` every few ms while another process writes. Under
``bench/load.py`` that raised storage throughput, shortened a write's wait for its turn and
shared the turns more fairly with a second process (figures: docs/architecture.md). The two
waits together last at most the busy timeout.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from assistant.errors import DatabaseError, DatabaseLocked, DatabaseUnreachable
from assistant.storage.lexical import lexical_for

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection
    from sqlalchemy.engine.interfaces import DBAPIConnection
    from sqlalchemy.pool import ConnectionPoolEntry

log = logging.getLogger(__name__)

_LOCKED_MARKERS = ("database is locked", "database table is locked", "database is busy")


def is_locked_error(err: BaseException) -> bool:
    return isinstance(err, OperationalError) and any(
        m in str(err.orig).lower() for m in _LOCKED_MARKERS
    )


_LOGIN_MARKERS = ("password authentication failed", "authentication failed",
                  "no password supplied", "role \"", "does not exist")
_UNREACHABLE_MARKERS = ("connection", "could not connect", "server closed", "terminating",
                        "timeout expired", "connection refused", "the database system is")


def connection_problem(err: BaseException) -> str | None:
    """"login" when the server refused the credentials (or the database name), "unreachable"
    when it could not be reached or dropped the connection, else None."""
    if not isinstance(err, DBAPIError) or is_locked_error(err):
        return None
    message = str(err.orig).lower()
    if isinstance(err, OperationalError) and any(m in message for m in _LOGIN_MARKERS):
        return "login"
    if err.connection_invalidated or (
        isinstance(err, OperationalError) and any(m in message for m in _UNREACHABLE_MARKERS)
    ):
        return "unreachable"
    return None


def make_engine(url: str, busy_timeout_s: float = 10.0) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        connect_args = {}
        if parsed.get_backend_name() == "postgresql":
            # An unreachable host fails after this many seconds instead of the OS's minutes.
            connect_args["connect_timeout"] = max(2, int(busy_timeout_s))
        return create_engine(url, pool_pre_ping=True, connect_args=connect_args)

    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(
        url, connect_args={"timeout": busy_timeout_s, "check_same_thread": False}
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: DBAPIConnection, _record: ConnectionPoolEntry) -> None:
        # Let SQLAlchemy's "begin" event below emit BEGIN instead of the driver.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")
        cur.execute("PRAGMA journal_mode = WAL")
        cur.execute("PRAGMA synchronous = NORMAL")
        cur.execute("PRAGMA foreign_keys = ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        if conn.get_execution_options().get("sqlite_write"):
            _begin_immediate(conn, busy_timeout_s)
        else:
            conn.exec_driver_sql("BEGIN DEFERRED")

    return engine


#: When the current thread's write gives up waiting (set by ``Database.write``).
_write_deadline = threading.local()


def _begin_immediate(conn: Connection, busy_timeout_s: float) -> None:
    """``BEGIN IMMEDIATE``, tried again every few ms while another process holds the lock,
    for up to the busy timeout. SQLite's own busy handler sleeps up to 100 ms between tries,
    and the thread waiting here holds up its process's other writers (``Database.write``)."""
    conn.exec_driver_sql("PRAGMA busy_timeout = 0")
    try:
        # The wait in Database.write's queue counts against the same timeout.
        deadline = getattr(_write_deadline, "at", None) or time.monotonic() + busy_timeout_s
        for attempt in itertools.count():
            try:
                conn.exec_driver_sql("BEGIN IMMEDIATE")
                return
            except OperationalError as err:
                if not is_locked_error(err) or time.monotonic() >= deadline:
                    raise
            time.sleep(min(0.0005 * 2**attempt, 0.004))
    finally:
        conn.exec_driver_sql(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")


class Database:
    """One engine plus read and write session factories."""

    def __init__(self, url: str, busy_timeout_s: float = 10.0) -> None:
        self.url = url
        self.busy_timeout_s = busy_timeout_s
        #: Full-text search of this dialect; a dialect without one is refused here, at start
        #: (before its driver is even loaded).
        self.lexical = lexical_for(make_url(url).get_backend_name())
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
        _write_deadline.at = time.monotonic() + self.busy_timeout_s
        try:
            if not self._writer.acquire(timeout=self.busy_timeout_s):
                raise DatabaseLocked(self.where)
            try:
                yield
            finally:
                self._writer.release()
        finally:
            _write_deadline.at = None

    @contextmanager
    def _translate(self) -> Iterator[None]:
        try:
            yield
        except DBAPIError as err:
            if is_locked_error(err):
                raise DatabaseLocked(self.where) from err
            problem = connection_problem(err)
            if problem is not None:
                reason = str(err.orig).strip().splitlines()[0] if str(err.orig).strip() else type(err.orig).__name__
                raise DatabaseUnreachable(self.where, reason, login=problem == "login") from err
            if isinstance(err, OperationalError):
                raise DatabaseError(f"Database error on {self.where}: {err.orig}") from err
            raise

    def dispose(self) -> None:
        self.engine.dispose()
