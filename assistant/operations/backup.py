"""Back up and restore everything the app stores: the database, the FAISS index and the
trained versions (adapters).

    assistant backup backups/2026-05-01          # a folder
    assistant backup backups/2026-05-01.tar.gz   # or one compressed file
    assistant restore backups/2026-05-01 [--force]

A backup is consistent while the app keeps running: the SQLite database is copied with
SQLite's online backup API (a snapshot of one moment, taken without stopping writers), the
versions copied are exactly those registered in that snapshot (a version's folder never
changes once registered), and the index copied is checked against the snapshot and rebuilt
from its vectors when a write slipped in between. ``manifest.json`` lists every file with its
size and SHA-256, the schema revision and the number of conversations, messages, ratings,
documents and versions.

A restore checks every hash first, refuses to replace a database that another process is
writing (or, without ``force``, has open), sets the current data aside in
``data_dir/pre-restore-<time>/`` (nothing is deleted), moves the backup into place by
renames, and runs ``assistant doctor --repair`` on the result (which also migrates a backup
of an older schema).

On PostgreSQL the database part is PostgreSQL's own ``pg_dump`` / ``pg_restore``
(:mod:`assistant.operations.backup_pg`); the index and the versions are handled as here.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy.engine import make_url

from assistant import atomic
from assistant.operations.permissions import FILE_MODE, loose_paths, tighten
from assistant.config import Settings
from assistant.operations.backup_archive import (
    start_restore,
    ARCHIVE_SUFFIXES, COUNTED, DB_NAME, INDEX, MANIFEST, PG_DUMP, VERSIONS, BackupError,
    BackupResult, RestoreResult, check_dest, check_revision, copy_index, copy_versions,
    extract_archive, read_manifest, verify, write_manifest, write_tar,
)
from assistant.operations.doctor import diagnose
from assistant.processes import pid_alive
from assistant.versions import BASE_VERSION

if TYPE_CHECKING:
    pass

log = logging.getLogger(__name__)


# -- backup ------------------------------------------------------------------------------------
def backup(settings: Settings, dest: str | Path) -> BackupResult:
    """Write a backup of ``settings``' data to ``dest``: a new (or empty) folder, or a
    ``.tar.gz`` file. Safe while the app runs. Written beside ``dest`` and renamed into
    place, so an interrupted backup never looks like a complete one."""
    started = time.perf_counter()
    if _is_postgres(settings):
        from assistant.operations.backup_pg import backup_postgres

        return backup_postgres(settings, dest)
    db_file = _sqlite_file(settings, "back up", "pg_dump")
    if not db_file.is_file():
        raise BackupError(f"There is no database at {db_file} to back up "
                          "(check ASSISTANT_DATA_DIR / ASSISTANT_DATABASE_URL).")
    dest = Path(dest).expanduser().absolute()
    archive = dest.name.endswith(ARCHIVE_SUFFIXES)
    check_dest(dest, archive)
    dest.parent.mkdir(parents=True, exist_ok=True)
    stage = atomic.temp_name(dest)
    stage.mkdir()
    try:
        manifest = _fill(settings, db_file, stage)
        # A backup holds every conversation and password hash: private, whatever the modes
        # of the files it copied (shutil copies those along).
        tighten(loose_paths(stage))
        if archive:
            atomic.write_file(dest, lambda tmp: (write_tar(stage, tmp), os.chmod(tmp, FILE_MODE)))
            shutil.rmtree(stage)
        else:
            atomic.fsync_tree(stage)
            if dest.exists():
                dest.rmdir()  # empty (checked): the rename needs it gone
            os.replace(stage, dest)
            atomic.fsync(dest.parent)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    result = BackupResult(dest, manifest, time.perf_counter() - started)
    log.info("Backed up %s to %s in %.1f s", settings.data_dir, dest, result.seconds)
    return result


def _fill(settings: Settings, db_file: Path, stage: Path) -> dict[str, Any]:
    """Copy the database, the versions it registers and the index into ``stage``; return
    the manifest (also written there)."""
    snapshot = stage / DB_NAME
    copy_database(db_file, snapshot, settings.db_busy_timeout_s)
    con = sqlite3.connect(snapshot)
    try:
        revision = _scalar(con, "SELECT version_num FROM alembic_version")
        counts = {name: _scalar(con, f"SELECT count(*) FROM {table}") or 0
                  for name, table in COUNTED.items() if _has_table(con, table)}
        versions = (con.execute("SELECT name, path FROM model_versions ORDER BY id").fetchall()
                    if _has_table(con, "model_versions") else [])
        active = ((_scalar(con, "SELECT version FROM activations ORDER BY id DESC LIMIT 1")
                   if _has_table(con, "activations") else None) or BASE_VERSION)
    finally:
        con.close()

    missing = copy_versions(settings, versions, stage)
    index = _copy_index(settings, snapshot, stage / INDEX)

    source = {"data_dir": str(Path(settings.data_dir).absolute()), "database": str(db_file)}
    return write_manifest(stage, revision, source, counts, active,
                          [name for name, _ in versions], missing, index)


def copy_database(src: Path, dst: Path, busy_timeout_s: float = 10.0) -> None:
    """Copy a live SQLite database with the online backup API: one step, under one read
    transaction, so the copy is the database as of one moment, while writers go on (WAL).
    The copy is a single self-contained file (rollback journal, no -wal to go with it) and
    must pass ``PRAGMA integrity_check``."""
    source = sqlite3.connect(src, timeout=busy_timeout_s)
    target = sqlite3.connect(dst)
    try:
        source.backup(target)
        target.execute("PRAGMA journal_mode = DELETE")
        check = [row[0] for row in target.execute("PRAGMA integrity_check").fetchall()]
    except sqlite3.Error as err:
        raise BackupError(f"Could not copy the database {src}: {err}. Nothing was written.") from err
    finally:
        target.close()
        source.close()
    if check != ["ok"]:
        raise BackupError(f"The copy of {src} fails SQLite's integrity check ({'; '.join(check[:3])}): "
                          "the database itself is probably damaged. Run `assistant doctor`.")


def _copy_index(settings: Settings, snapshot: Path, out: Path) -> dict[str, Any]:
    """Copy the index files (each is replaced whole by the app, so a copy is never torn),
    then make sure they agree with the database snapshot: an ingest between the snapshot and
    the copy would leave them ahead of it, so they are rebuilt from the snapshot's vectors."""
    con = sqlite3.connect(snapshot)
    try:
        if not _has_table(con, "chunks"):
            return {"present": False}
        models = {r[0] for r in con.execute("SELECT DISTINCT embed_model FROM documents")}
        size = _scalar(con, "SELECT length(embedding) FROM chunks LIMIT 1")
        ids = {r[0] for r in con.execute("SELECT id FROM chunks")}
    finally:
        con.close()
    return copy_index(settings, out, models, size, ids, lambda: _vectors(snapshot))


def _vectors(db_file: Path, batch: int = 10_000) -> Iterator[tuple[Any, Any]]:
    import numpy as np

    con = sqlite3.connect(db_file)
    try:
        last = 0
        while True:
            rows = con.execute("SELECT id, embedding FROM chunks WHERE id > ? ORDER BY id LIMIT ?",
                               (last, batch)).fetchall()
            if not rows:
                return
            last = rows[-1][0]
            yield (np.array([r[0] for r in rows], dtype=np.int64),
                   np.stack([np.frombuffer(r[1], dtype=np.float32) for r in rows]))
    finally:
        con.close()


# -- verify ------------------------------------------------------------------------------------


# -- restore -----------------------------------------------------------------------------------
def restore(settings: Settings, src: str | Path, *, force: bool = False) -> RestoreResult:
    """Replace ``settings``' database, index and versions with the backup at ``src`` (a
    folder or ``.tar.gz``), then run the doctor with repair. The data there before is set
    aside, not deleted. Refuses (changing nothing) when the backup is damaged, when another
    process is writing the database, or, without ``force``, has it open."""
    src = Path(src).expanduser().absolute()
    if _is_postgres(settings):
        from assistant.operations.backup_pg import restore_postgres

        return restore_postgres(settings, src, force=force)
    db_file = _sqlite_file(settings, "restore", "pg_restore")
    if not src.exists():
        raise BackupError(f"{src}: no such backup file or folder.")
    data_dir = Path(settings.data_dir).absolute()
    data_dir.mkdir(parents=True, exist_ok=True)
    _check_not_in_use(db_file, force)

    stage = atomic.temp_name(data_dir / "backup", "restore")
    stage.mkdir()
    try:
        if src.is_dir():
            manifest = read_manifest(src)
            for entry in manifest["files"]:
                if not (src / entry["path"]).is_file():
                    continue  # verify() below names it
                (stage / entry["path"]).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src / entry["path"], stage / entry["path"])
            (stage / MANIFEST).write_text(json.dumps(manifest))
        else:
            extract_archive(src, stage)
        manifest = verify(stage)  # what is moved into place is what was checked
        check_revision(manifest)
        if not (stage / DB_NAME).is_file():
            raise BackupError(f"{src} is a backup of a PostgreSQL database ({PG_DUMP}); this data "
                              "folder uses SQLite. Set ASSISTANT_DATABASE_URL to a PostgreSQL database "
                              "to restore it there. Nothing was changed.")
        set_aside = _swap_in(settings, stage, db_file, src)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    report = diagnose(settings, repair=True)
    log.info("Restored %s into %s", src, data_dir)
    return RestoreResult(src, manifest, data_dir, set_aside, report)


def _swap_in(settings: Settings, stage: Path, db_file: Path, src: Path) -> tuple[Path, ...]:
    """Move the current data aside and the staged backup into place, by renames; returns
    where the earlier data went. A marker file says a restore is under way until it is done
    (``assistant doctor`` reports one that was interrupted)."""
    data_dir = Path(settings.data_dir).absolute()
    marker, aside, stamp = start_restore(settings, src)
    # The database may live outside the data folder: it is staged and set aside beside
    # itself (renames do not cross file systems).
    db_aside = aside if db_file.parent == data_dir else db_file.with_name(
        f"{db_file.name}.pre-restore-{stamp}")
    db_stage = atomic.temp_name(db_file, "restore")
    targets = [(stage / INDEX, Path(settings.index_dir).absolute()),
               (stage / VERSIONS, Path(settings.versions_dir).absolute())]
    moved: list[tuple[Path, Path]] = []

    def move(a: Path, b: Path) -> None:
        b.parent.mkdir(parents=True, exist_ok=True)
        os.replace(a, b)
        moved.append((a, b))

    shutil.move(stage / DB_NAME, db_stage)
    try:
        for _, target in targets:
            if target.exists():
                move(target, aside / target.name)
        for suffix in ("", "-wal", "-shm", "-journal"):
            old = db_file.with_name(db_file.name + suffix)
            if old.exists():
                move(old, db_aside / old.name)
        for staged, target in targets:
            if staged.exists():
                move(staged, target)
        move(db_stage, db_file)
    except BaseException:
        for a, b in reversed(moved):  # put everything back as it was
            try:
                os.replace(b, a)
            except OSError:
                log.exception("Could not move %s back to %s", b, a)
        db_stage.unlink(missing_ok=True)
        marker.unlink(missing_ok=True)
        raise
    marker.unlink(missing_ok=True)
    return tuple(dict.fromkeys(p for p in (aside, db_aside) if p.exists()))


def _check_not_in_use(db_file: Path, force: bool) -> None:
    if not db_file.exists():
        return
    try:
        con = sqlite3.connect(db_file, timeout=0, isolation_level=None)
        try:
            con.execute("BEGIN IMMEDIATE")
            con.execute("ROLLBACK")
        finally:
            con.close()
    except sqlite3.OperationalError as err:
        raise BackupError(f"The database {db_file} is being written by another process ({err}): "
                          "stop the app and any `assistant` command using it, then restore "
                          "again. Nothing was changed.") from err
    users = processes_using(db_file)
    if users and not force:
        raise BackupError(f"The database {db_file} is open in another process (pid "
                          f"{', '.join(map(str, users))}: the app, or an `assistant` command). "
                          "Stop it first; or pass --force to restore anyway (that process keeps "
                          "its old data until it restarts). Nothing was changed.")


def processes_using(path: Path) -> list[int]:
    """Other processes with ``path`` (or its -wal file) open (Linux; elsewhere: none known)."""
    target = str(path.resolve())
    names = {target, target + "-wal"}
    found = []
    proc = Path("/proc")
    if not proc.is_dir():
        return []
    for entry in proc.iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            fds = list((entry / "fd").iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(fd) in names:
                    if pid_alive(int(entry.name)):
                        found.append(int(entry.name))
                    break
            except OSError:
                continue
    return sorted(found)


# -- helpers -----------------------------------------------------------------------------------
def _is_postgres(settings: Settings) -> bool:
    return make_url(settings.resolved_database_url).get_backend_name() == "postgresql"


def _sqlite_file(settings: Settings, verb: str, tool: str) -> Path:
    url = make_url(settings.resolved_database_url)
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        raise BackupError(
            f"`assistant {'backup' if verb == 'back up' else verb}` handles SQLite databases; "
            f"ASSISTANT_DATABASE_URL points at a {url.get_backend_name()} database. {verb.capitalize()} "
            f"it with its own tools ({tool}), and copy {settings.index_dir} and "
            f"{settings.versions_dir} beside it."
        )
    return Path(url.database).absolute()


def _scalar(con: sqlite3.Connection, sql: str) -> Any:
    row = con.execute(sql).fetchone()
    return row[0] if row else None


def _has_table(con: sqlite3.Connection, name: str) -> bool:
    return con.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name=?",
                       (name,)).fetchone() is not None


