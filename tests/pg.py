"""A throwaway PostgreSQL cluster for the tests: Debian's binaries, a temporary folder, a free
port on 127.0.0.1, removed at the end.

PostgreSQL refuses to run as root (CI runs as root), so the server runs as the ``postgres``
user there. ``initdb`` makes a cluster in well under a second with ``--no-sync``; durability
is switched off (``fsync``, ``synchronous_commit``, ``full_page_writes``) because nothing
here outlives the run. Local (socket) connections are trusted; TCP connections need the
password, so that a wrong one can be tested.

Each test gets a database of its own, made with ``CREATE DATABASE ... TEMPLATE`` from one
that was migrated to the newest schema once (a file copy: a few ms).
"""

from __future__ import annotations

import contextlib
import glob
import logging
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

PASSWORD = "assistant-test"
TEMPLATE = "assistant_template"


def bindir() -> Path | None:
    """The folder with ``initdb`` and ``pg_ctl``: Debian's newest, or the first on PATH."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(Path(p).parent.parent.name) if Path(p).parent.parent.name.isdigit() else 0)
    if found:
        return Path(found[-1]).parent
    on_path = shutil.which("initdb")
    return Path(on_path).parent if on_path else None


def missing_reason() -> str | None:
    """Why the PostgreSQL tests cannot run here, or None when they can."""
    if bindir() is None:
        return ("PostgreSQL's server binaries (initdb, pg_ctl) are not installed: `make test` "
                "installs them (apt-get install postgresql) when it runs as root or with sudo")
    if os.geteuid() == 0:
        try:
            import pwd

            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and there is no `postgres` user to run the server as"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Cluster:
    folder: Path
    port: int
    bindir: Path
    user: str | None  # whom the server runs as (None: this process's user)

    def url(self, database: str, *, password: str = PASSWORD, host: str = "127.0.0.1",
            port: int | None = None) -> str:
        return (f"postgresql+psycopg://postgres:{password}@{host}:{port or self.port}/{database}")

    def _run(self, *args: str, **kw) -> subprocess.CompletedProcess:
        return subprocess.run([str(self.bindir / args[0]), *args[1:]], user=self.user,
                              check=True, capture_output=True, text=True, timeout=60, **kw)

    def start(self) -> None:
        data = self.folder / "data"
        opts = " ".join([
            f"-p {self.port}", "-c listen_addresses=127.0.0.1",
            f"-c unix_socket_directories={self.folder}",
            "-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off",
            "-c max_connections=200", "-c shared_buffers=32MB",
        ])
        self._run("pg_ctl", "start", "-w", "-t", "30", "-D", str(data),
                  "-l", str(self.folder / "server.log"), "-o", opts)

    def stop(self, mode: str = "immediate") -> None:
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            self._run("pg_ctl", "stop", "-w", "-m", mode, "-D", str(self.folder / "data"))

    def admin(self):
        """A psycopg connection to the ``postgres`` database, autocommit (for CREATE DATABASE)."""
        import psycopg

        return psycopg.connect(host="127.0.0.1", port=self.port, user="postgres",
                               password=PASSWORD, dbname="postgres", autocommit=True)

    def create_database(self, name: str, template: str | None = TEMPLATE) -> str:
        with self.admin() as con:
            con.execute(f'CREATE DATABASE "{name}"'
                        + (f' TEMPLATE "{template}" STRATEGY FILE_COPY' if template else ""))
        return self.url(name)

    def drop_database(self, name: str) -> None:
        with self.admin() as con:
            con.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def remove(self) -> None:
        self.stop()
        # pg_ctl can give up on a loaded machine: end the server by its pid (SIGQUIT is
        # PostgreSQL's immediate shutdown) rather than leave it running.
        pidfile = self.folder / "data" / "postmaster.pid"
        with contextlib.suppress(OSError, ValueError):
            os.kill(int(pidfile.read_text().split()[0]), signal.SIGQUIT)
        shutil.rmtree(self.folder, ignore_errors=True)


def start_cluster() -> Cluster:
    """initdb + start, as ``postgres`` when this process is root. Raises on failure (with
    the server's log in the message)."""
    bin_ = bindir()
    assert bin_ is not None, missing_reason()
    folder = Path(tempfile.mkdtemp(prefix="assistant-pg-"))
    user = "postgres" if os.geteuid() == 0 else None
    if user:
        shutil.chown(folder, user, user)
    pwfile = folder / "pw"
    pwfile.write_text(PASSWORD + "\n")
    if user:
        shutil.chown(pwfile, user, user)
    cluster = Cluster(folder, free_port(), bin_, user)
    try:
        cluster._run("initdb", "-D", str(folder / "data"), "-U", "postgres", "--pwfile", str(pwfile),
                     "-E", "UTF8", "--locale=C", "--no-sync", "--auth-local=trust",
                     "--auth-host=scram-sha-256")
        for attempt in range(3):  # the free port may be taken between the check and the start
            try:
                cluster.start()
                break
            except subprocess.CalledProcessError:
                if attempt == 2:
                    raise
                cluster.port = free_port()
    except subprocess.CalledProcessError as err:
        logtext = (folder / "server.log").read_text(errors="replace") if (folder / "server.log").exists() else ""
        shutil.rmtree(folder, ignore_errors=True)
        raise RuntimeError(f"Could not start a PostgreSQL cluster: {err.stderr}\n{logtext[-2000:]}") from err
    return cluster


class Databases:
    """Fresh databases on one cluster: the migrated template is made on first use."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self._lock = threading.Lock()
        self._ready = False
        self._n = 0

    def _template(self) -> None:
        from assistant.storage import Database, upgrade

        url = self.cluster.create_database(TEMPLATE, template=None)
        db = Database(url)
        upgrade(db)
        db.dispose()  # CREATE DATABASE ... TEMPLATE needs it without connections

    def fresh(self, *, migrated: bool = True) -> tuple[str, str]:
        """(url, name) of a new database: at the newest schema, or empty."""
        with self._lock:
            if migrated and not self._ready:
                self._template()
                self._ready = True
            self._n += 1
            name = f"t{os.getpid()}_{self._n}_{time.monotonic_ns() % 10**6}"
        return self.cluster.create_database(name, TEMPLATE if migrated else "template0"), name
