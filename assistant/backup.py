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
(:mod:`assistant.backup_pg`); the index and the versions are handled as here.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import sqlite3
import tarfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy.engine import make_url

from assistant import atomic
from assistant.permissions import FILE_MODE, loose_paths, tighten
from assistant.config import Settings
from assistant.doctor import RESTORE_MARKER, DoctorReport, diagnose
from assistant.errors import AssistantError
from assistant.processes import pid_alive
from assistant.versions import BASE_VERSION

if TYPE_CHECKING:
    import numpy as np

log = logging.getLogger(__name__)

FORMAT = 1
MANIFEST = "manifest.json"
DB_NAME = "assistant.db"
#: The database of a backup of PostgreSQL (``pg_dump --format=custom``).
PG_DUMP = "database.pgdump"
INDEX = "index"
VERSIONS = "versions"
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz")
#: Tables counted in the manifest (and compared by tests and users after a restore).
COUNTED = {
    "conversations": "conversations", "messages": "messages", "feedback": "feedback",
    "choices": "choices", "edits": "edits", "comparisons": "comparisons",
    "documents": "documents", "chunks": "chunks", "versions": "model_versions",
    "activations": "activations", "evaluations": "evaluations",
}


class BackupError(AssistantError):
    """A backup or restore that cannot go ahead; nothing was changed."""


@dataclass(frozen=True)
class BackupResult:
    path: Path
    manifest: dict[str, Any]
    seconds: float

    def summary(self) -> list[str]:
        m, c = self.manifest, self.manifest["counts"]
        size = sum(f["size"] for f in m["files"])
        lines = [
            f"Backed up to {self.path} in {self.seconds:.1f} s ({size / 1024 / 1024:.1f} MB "
            f"before compression, {len(m['files'])} files).",
            f"  schema {m['schema_revision']}; {c.get('conversations', 0)} conversations, "
            f"{c.get('messages', 0)} messages, {c.get('feedback', 0)} ratings, "
            f"{c.get('documents', 0)} documents ({c.get('chunks', 0)} chunks), "
            f"{c.get('versions', 0)} versions (active: {m['active_version']})",
        ]
        if m["index"].get("rebuilt"):
            lines.append("  the index changed while it was copied: it was rebuilt from the "
                         "backed-up vectors")
        if m["missing_versions"]:
            lines.append(f"  warning: these versions have no folder and were not backed up: "
                         f"{', '.join(m['missing_versions'])} (`assistant doctor` explains)")
        return lines


@dataclass(frozen=True)
class RestoreResult:
    source: Path
    manifest: dict[str, Any]
    data_dir: Path
    #: Where the data that was there before went (empty: there was none).
    set_aside: tuple[Path, ...]
    doctor: DoctorReport


# -- backup ------------------------------------------------------------------------------------
def backup(settings: Settings, dest: str | Path) -> BackupResult:
    """Write a backup of ``settings``' data to ``dest``: a new (or empty) folder, or a
    ``.tar.gz`` file. Safe while the app runs. Written beside ``dest`` and renamed into
    place, so an interrupted backup never looks like a complete one."""
    started = time.perf_counter()
    if _is_postgres(settings):
        from assistant.backup_pg import backup_postgres

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

    missing = []
    for name, rel in versions:
        src = Path(settings.versions_dir) / rel
        if src.is_dir():
            shutil.copytree(src, stage / VERSIONS / rel, symlinks=False)
        else:
            missing.append(name)
    index = _copy_index(settings, snapshot, stage / INDEX)

    source = {"data_dir": str(Path(settings.data_dir).absolute()), "database": str(db_file)}
    return write_manifest(stage, revision, source, counts, active,
                          [name for name, _ in versions], missing, index)


def write_manifest(stage: Path, revision: str | None, source: dict, counts: dict,
                   active: str, versions: list[str], missing: list[str], index: dict) -> dict:
    """The backup's manifest.json (both databases' backups): what it holds, and the size and
    sha256 of every file staged so far, which restore checks."""
    manifest = {
        "format": FORMAT,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "schema_revision": revision,
        "source": source,
        "counts": counts,
        "active_version": active,
        "versions": [name for name in versions if name not in missing],
        "missing_versions": missing,
        "index": index,
        "files": [{"path": rel, "size": (stage / rel).stat().st_size, "sha256": sha256(stage / rel)}
                  for rel in _files(stage)],
    }
    (stage / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


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


def copy_index(settings: Settings, out: Path, models: set[str], size: int | None, ids: set[int],
               vectors: Callable[[], Iterable[tuple[np.ndarray, np.ndarray]]]) -> dict[str, Any]:
    """The index part of :func:`_copy_index`, given what the database snapshot holds (its
    embedding models, the size of a vector, the chunk ids, and ``vectors()`` to rebuild from)."""
    from assistant.index import INDEX_FILE, META_FILE, VectorIndex

    src = Path(settings.index_dir)
    out.mkdir()
    for name in (INDEX_FILE, META_FILE):
        if (src / name).is_file():
            shutil.copy2(src / name, out / name)
    meta = {}
    try:
        meta = json.loads((out / META_FILE).read_text())
    except (OSError, ValueError):
        pass
    model = meta.get("model") or (next(iter(models)) if len(models) == 1 else None)
    dim = int(meta.get("dim") or (size // 4 if size else 0))
    kind = meta.get("kind") or settings.retrieval.index_type
    if not ids and not (out / INDEX_FILE).exists():
        out.rmdir()
        return {"present": False}
    if model is None or not dim or (size and size != dim * 4):
        # Vectors of several models, or of another size: `assistant doctor` re-embeds them
        # after a restore; an index from them would be wrong anyway.
        shutil.rmtree(out)
        return {"present": False, "reason": "vectors of another embedding model"}
    index = VectorIndex(out, dim, kind, model)
    report = index.check(ids, models)
    rebuilt = not report.ok
    if rebuilt:
        index.rebuild(vectors())
        index.save()
    return {"present": True, "kind": kind, "model": model, "dim": dim, "count": len(ids),
            "rebuilt": rebuilt}


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
def verify(folder: Path) -> dict[str, Any]:
    """The manifest of the backup in ``folder``, after checking every file's size and
    SHA-256. Raises :class:`BackupError` naming what is missing or changed."""
    manifest = read_manifest(folder)
    bad = []
    for entry in manifest["files"]:
        path = folder / entry["path"]
        if not path.is_file():
            bad.append(f"{entry['path']} is missing")
        elif path.stat().st_size != entry["size"]:
            bad.append(f"{entry['path']} has {path.stat().st_size} bytes, not {entry['size']}")
        elif sha256(path) != entry["sha256"]:
            bad.append(f"{entry['path']} has changed (SHA-256 differs)")
    if not any(e["path"] in (DB_NAME, PG_DUMP) for e in manifest["files"]):
        bad.append(f"{DB_NAME} is not listed")
    if bad:
        shown = "; ".join(bad[:5]) + (f"; and {len(bad) - 5} more" if len(bad) > 5 else "")
        raise BackupError(f"The backup {folder} is damaged: {shown}. Nothing was restored; use "
                          "another backup.")
    return manifest


def read_manifest(folder: Path) -> dict[str, Any]:
    """The manifest of the backup in ``folder``, checked to be one this version reads."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except FileNotFoundError:
        raise BackupError(f"{folder} holds no {MANIFEST}: it is not a backup made by "
                          "`assistant backup` (or it is incomplete).") from None
    except (OSError, ValueError) as err:
        raise BackupError(f"{folder / MANIFEST} is unreadable ({err}).") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), list):
        raise BackupError(f"{folder / MANIFEST} is not the manifest of an `assistant backup`.")
    if manifest.get("format") != FORMAT:
        raise BackupError(f"{folder} is a backup of format {manifest.get('format')!r}; this "
                          f"version of the assistant reads format {FORMAT}.")
    for entry in manifest["files"]:
        rel = Path(str(entry.get("path", "")))
        if (rel.is_absolute() or ".." in rel.parts or not rel.parts
                or rel.parts[0] not in (DB_NAME, PG_DUMP, INDEX, VERSIONS)):
            raise BackupError(f"{folder / MANIFEST} lists {str(rel)!r}, which is no part of a "
                              "backup: refusing to restore it.")
    return manifest


# -- restore -----------------------------------------------------------------------------------
def restore(settings: Settings, src: str | Path, *, force: bool = False) -> RestoreResult:
    """Replace ``settings``' database, index and versions with the backup at ``src`` (a
    folder or ``.tar.gz``), then run the doctor with repair. The data there before is set
    aside, not deleted. Refuses (changing nothing) when the backup is damaged, when another
    process is writing the database, or, without ``force``, has it open."""
    src = Path(src).expanduser().absolute()
    if _is_postgres(settings):
        from assistant.backup_pg import restore_postgres

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
    marker = data_dir / RESTORE_MARKER
    marker.write_text(json.dumps({"source": str(src), "started": datetime.now(UTC).isoformat(),
                                  "pid": os.getpid()}))
    stamp = time.strftime("%Y%m%d-%H%M%S")
    aside = data_dir / f"pre-restore-{stamp}"
    n = 1
    while aside.exists():  # two restores in one second
        n += 1
        aside = data_dir / f"pre-restore-{stamp}-{n}"
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


def extract_archive(archive: Path, into: Path) -> None:
    try:
        with tarfile.open(archive, "r:*") as tar:
            tar.extractall(into, filter="data")  # no absolute paths, no escaping links
    except (tarfile.TarError, OSError, EOFError) as err:
        raise BackupError(f"{archive} could not be unpacked ({err}): it is not a backup made by "
                          "`assistant backup`, or it is damaged.") from err


def check_revision(manifest: dict[str, Any]) -> None:
    """Refuse a backup whose schema revision this version does not know (a newer one's)."""
    from alembic.config import Config
    from alembic.script import ScriptDirectory
    from alembic.util import CommandError

    from assistant.storage.migrate import MIGRATIONS_DIR

    revision = manifest.get("schema_revision")
    if revision is None:
        return
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    try:
        ScriptDirectory.from_config(cfg).get_revision(revision)
    except CommandError:
        raise BackupError(f"The backup's database is at schema revision {revision}, which this "
                          "version of the assistant does not know: it was made by a newer "
                          "version. Restore it with that version.") from None


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


def check_dest(dest: Path, archive: bool) -> None:
    """Refuse a destination that exists (an archive) or is a non-empty folder."""
    if archive:
        if dest.exists():
            raise BackupError(f"{dest} already exists: choose a new name (backups are never "
                              "overwritten).")
        return
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise BackupError(f"{dest} already exists and is not an empty folder: choose a new name "
                          "(backups are never overwritten).")


def write_tar(folder: Path, archive: Path) -> None:
    """``folder``'s entries into the ``.tar.gz`` file ``archive``, in name order."""
    with tarfile.open(archive, "w:gz") as tar:
        for entry in sorted(folder.iterdir()):
            tar.add(entry, arcname=entry.name)


def _files(root: Path) -> list[str]:
    """Every file under ``root`` but the manifest itself, as relative POSIX paths."""
    return sorted(rel for p in root.rglob("*")
                  if p.is_file() and (rel := p.relative_to(root).as_posix()) != MANIFEST)


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _scalar(con: sqlite3.Connection, sql: str) -> Any:
    row = con.execute(sql).fetchone()
    return row[0] if row else None


def _has_table(con: sqlite3.Connection, name: str) -> bool:
    return con.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name=?",
                       (name,)).fetchone() is not None


