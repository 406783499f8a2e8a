"""`assistant backup` / `restore` when the database is PostgreSQL: the database part is
PostgreSQL's own ``pg_dump --format=custom`` and ``pg_restore``; the index and the versions
are copied as for SQLite (:mod:`assistant.operations.backup`), and the backup has the same manifest.

Consistent while the app runs: one REPEATABLE READ transaction exports its snapshot, and
``pg_dump --snapshot`` dumps exactly that moment, while the same transaction reads the
counts, the registered versions and the vectors the index is checked against.

A restore runs ``pg_restore --clean --single-transaction``: it fails whole or succeeds whole.
The database as it was is first dumped beside the index and versions set aside in
``data_dir/pre-restore-<time>/`` (nothing is deleted). Without the client tools installed,
both say exactly which command to run instead.
"""

from __future__ import annotations

import glob
import json
import logging
import os
import shlex
import shutil
import subprocess
import time
from pathlib import Path
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from sqlalchemy import text
from sqlalchemy.engine import URL, make_url

from assistant.operations.backup_archive import (
    start_restore,
    ARCHIVE_SUFFIXES, COUNTED, INDEX, MANIFEST, PG_DUMP, VERSIONS, BackupError, BackupResult,
    RestoreResult, check_dest, check_revision, copy_index, copy_versions, extract_archive,
    read_manifest, verify, write_manifest, write_tar,
)
from assistant import atomic
from assistant.config import Settings
from assistant.operations.doctor import diagnose
from assistant.operations.permissions import FILE_MODE
from assistant.storage.db import Database

if TYPE_CHECKING:
    import numpy as np
    from sqlalchemy.engine import Connection

log = logging.getLogger(__name__)


def find_tool(name: str) -> str | None:
    """``pg_dump`` / ``pg_restore``: on PATH, or in Debian's versioned folders (newest)."""
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"),
                        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0)
    return candidates[-1] if candidates else None


def conninfo(url: str) -> tuple[str, dict[str, str]]:
    """A libpq URI for the command-line tools (no password in it: that goes in PGPASSWORD,
    out of the process list) and the environment to run them with."""
    parsed = make_url(url)
    env = dict(os.environ)
    if parsed.password:
        env["PGPASSWORD"] = str(parsed.password)
    plain: URL = parsed.set(drivername="postgresql")._replace(password=None)
    return plain.render_as_string(hide_password=False), env


def _run(argv: list[str], env: dict[str, str], what: str) -> None:
    try:
        subprocess.run(argv, env=env, check=True, capture_output=True, text=True)
    except subprocess.CalledProcessError as err:
        raise BackupError(f"{what} failed: {(err.stderr or err.stdout).strip()[-800:]}") from err


def _missing(tool: str, command: str) -> BackupError:
    return BackupError(
        f"`{tool}` (PostgreSQL's client tools) is not installed here, and the database is "
        f"PostgreSQL. Install them (Debian/Ubuntu: apt-get install postgresql-client), or run "
        f"instead: {command}")


# -- backup --------------------------------------------------------------------------------------
def backup_postgres(settings: Settings, dest: str | Path) -> BackupResult:
    started = time.perf_counter()
    uri, env = conninfo(settings.resolved_database_url)
    dest = Path(dest).expanduser().absolute()
    pg_dump = find_tool("pg_dump")
    if pg_dump is None:
        raise _missing("pg_dump", (
            f"PGPASSWORD=... pg_dump --format=custom --file {shlex.quote(str(dest / PG_DUMP))} "
            f"{shlex.quote(uri)}; then copy {settings.index_dir} and {settings.versions_dir} "
            f"into {dest}."))
    archive = dest.name.endswith(ARCHIVE_SUFFIXES)
    check_dest(dest, archive)
    dest.parent.mkdir(parents=True, exist_ok=True)
    stage = atomic.temp_name(dest)
    stage.mkdir()
    db = Database(settings.resolved_database_url, settings.db_busy_timeout_s)
    try:
        _reach(db, "back up", "pg_dump")
        manifest = _fill(settings, db, pg_dump, uri, env, stage)
        if archive:
            atomic.write_file(dest, lambda tmp: (write_tar(stage, tmp), os.chmod(tmp, FILE_MODE)))
            shutil.rmtree(stage)
        else:
            if dest.exists():
                dest.rmdir()
            os.replace(stage, dest)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        for left in dest.parent.glob(f".{dest.name}.tmp-{os.getpid()}-*"):
            left.unlink(missing_ok=True)
        raise
    finally:
        db.dispose()
    result = BackupResult(dest, manifest, time.perf_counter() - started)
    log.info("Backed up %s (PostgreSQL) to %s in %.1f s", db.where, dest, result.seconds)
    return result


def _fill(settings: Settings, db: Database, pg_dump: str, uri: str, env: dict[str, str],
          stage: Path) -> dict[str, Any]:
    with db.engine.connect() as conn:
        conn = conn.execution_options(isolation_level="REPEATABLE READ")
        with conn.begin():
            snapshot = conn.scalar(text("SELECT pg_export_snapshot()"))
            _run([pg_dump, "--format=custom", f"--snapshot={snapshot}", "--no-owner",
                  "--file", str(stage / PG_DUMP), uri], env, "pg_dump")
            tables = set(conn.scalars(text(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()")))
            revision = (conn.scalar(text("SELECT version_num FROM alembic_version"))
                        if "alembic_version" in tables else None)
            counts = {name: conn.scalar(text(f'SELECT count(*) FROM "{table}"')) or 0
                      for name, table in COUNTED.items() if table in tables}
            versions = (conn.execute(text("SELECT name, path FROM model_versions ORDER BY id")).all()
                        if "model_versions" in tables else [])
            active = ((conn.scalar(text("SELECT version FROM activations ORDER BY id DESC LIMIT 1"))
                       if "activations" in tables else None) or "base")
            missing = copy_versions(settings, versions, stage)
            if "chunks" in tables:
                index = copy_index(
                    settings, stage / INDEX,
                    set(conn.scalars(text("SELECT DISTINCT embed_model FROM documents"))),
                    conn.scalar(text("SELECT length(embedding) FROM chunks LIMIT 1")),
                    set(conn.scalars(text("SELECT id FROM chunks"))),
                    lambda: _vectors(conn),
                )
            else:
                index = {"present": False}
    source = {"data_dir": str(Path(settings.data_dir).absolute()), "database": db.where,
              "kind": "postgresql"}
    return write_manifest(stage, revision, source, counts, active,
                          [name for name, _ in versions], missing, index)


def _vectors(conn: Connection, batch: int = 10_000) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    import numpy as np

    last = 0
    while True:
        rows = conn.execute(text("SELECT id, embedding FROM chunks WHERE id > :last ORDER BY id "
                                 "LIMIT :n"), {"last": last, "n": batch}).all()
        if not rows:
            return
        last = rows[-1][0]
        yield (np.array([r[0] for r in rows], dtype=np.int64),
               np.stack([np.frombuffer(bytes(r[1]), dtype=np.float32) for r in rows]))


# -- restore -------------------------------------------------------------------------------------
def restore_postgres(settings: Settings, src: Path, *, force: bool = False) -> RestoreResult:
    uri, env = conninfo(settings.resolved_database_url)
    if not src.exists():
        raise BackupError(f"{src}: no such backup file or folder.")
    pg_restore, pg_dump = find_tool("pg_restore"), find_tool("pg_dump")
    if pg_restore is None or pg_dump is None:
        raise _missing("pg_restore" if pg_restore is None else "pg_dump", (
            f"PGPASSWORD=... pg_restore --clean --if-exists --no-owner --single-transaction "
            f"--dbname {shlex.quote(uri)} {shlex.quote(str(src / PG_DUMP))} (after unpacking it, "
            f"for a .tar.gz); then put its index and versions folders in place of "
            f"{settings.index_dir} and {settings.versions_dir}, and run `assistant doctor --repair`."))
    data_dir = Path(settings.data_dir).absolute()
    data_dir.mkdir(parents=True, exist_ok=True)
    db = Database(settings.resolved_database_url, settings.db_busy_timeout_s)
    try:
        _reach(db, "restore", "pg_restore")
        _check_not_in_use(db, force)
    finally:
        db.dispose()
    stage = data_dir / f".backup.restore-{os.getpid()}-{time.time_ns()}"
    stage.mkdir()
    try:
        if src.is_dir():
            manifest = read_manifest(src)
            for entry in manifest["files"]:
                if (src / entry["path"]).is_file():
                    (stage / entry["path"]).parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(src / entry["path"], stage / entry["path"])
            (stage / MANIFEST).write_text(json.dumps(manifest))
        else:
            extract_archive(src, stage)
        manifest = verify(stage)
        check_revision(manifest)
        if not (stage / PG_DUMP).is_file():
            raise BackupError(
                f"{src} is a backup of a SQLite database; ASSISTANT_DATABASE_URL points at "
                "PostgreSQL. Restore it into a data folder that uses SQLite, then move it over with "
                "`assistant db copy --to <this database's URL>`. Nothing was changed.")
        set_aside = _swap_in(settings, stage, pg_restore, pg_dump, uri, env, src)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    report = diagnose(settings, repair=True)
    log.info("Restored %s into %s", src, data_dir)
    return RestoreResult(src, manifest, data_dir, set_aside, report)


def _reach(db: Database, verb: str, tool: str) -> None:
    from assistant.errors import AssistantError

    try:
        with db.read() as s:
            s.execute(text("SELECT 1"))
    except AssistantError as err:
        raise BackupError(f"Cannot {verb} the PostgreSQL database with {tool}: {err}") from err


def _check_not_in_use(db: Database, force: bool) -> None:
    with db.read() as s:
        others = list(s.scalars(text(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid() AND backend_type = 'client backend'")))
    if others and not force:
        raise BackupError(
            f"The database {db.where} has {len(others)} other connection(s) (the app, or an "
            "`assistant` command). Stop them first; or pass --force to restore anyway (the restore "
            "then waits for their locks, up to a minute). Nothing was changed.")


def _swap_in(settings: Settings, stage: Path, pg_restore: str, pg_dump: str, uri: str,
             env: dict[str, str], src: Path) -> tuple[Path, ...]:
    marker, aside, _ = start_restore(settings, src)
    aside.mkdir(parents=True)
    targets = [(stage / INDEX, Path(settings.index_dir).absolute()),
               (stage / VERSIONS, Path(settings.versions_dir).absolute())]
    moved: list[tuple[Path, Path]] = []
    # lock_timeout: with --force, a connection holding a lock fails the restore (whole)
    # instead of leaving it waiting for ever.
    env = {**env, "PGOPTIONS": "-c lock_timeout=60000"}
    try:
        _run([pg_dump, "--format=custom", "--no-owner", "--file", str(aside / PG_DUMP), uri], env,
             "pg_dump of the database as it was (before restoring)")
        for _, target in targets:
            if target.exists():
                os.replace(target, aside / target.name)
                moved.append((target, aside / target.name))
        _run([pg_restore, "--clean", "--if-exists", "--no-owner", "--no-privileges",
              "--single-transaction", "--exit-on-error", "--dbname", uri, str(stage / PG_DUMP)],
             env, "pg_restore (the database was left as it was)")
        for staged, target in targets:
            if staged.exists():
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(staged, target)
    except BaseException:
        for before, now in reversed(moved):
            try:
                if before.exists():
                    shutil.rmtree(before)
                os.replace(now, before)
            except OSError:
                log.exception("Could not move %s back to %s", now, before)
        marker.unlink(missing_ok=True)
        raise
    marker.unlink(missing_ok=True)
    return (aside,)
