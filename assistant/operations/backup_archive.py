"""The backup's format, shared by the SQLite and the PostgreSQL backups: the parts of a
backup (names, manifest), its errors and results, the index part, the checks of a backup
before a restore (hashes, schema revision, destination) and the archive (.tar.gz).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import logging
import shutil
import tarfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from assistant.config import Settings
from assistant.operations.doctor import RESTORE_MARKER, DoctorReport
from assistant.errors import AssistantError

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


def copy_index(settings: Settings, out: Path, models: set[str], size: int | None, ids: set[int],
               vectors: Callable[[], Iterable[tuple[np.ndarray, np.ndarray]]]) -> dict[str, Any]:
    """The index part of :func:`_copy_index`, given what the database snapshot holds (its
    embedding models, the size of a vector, the chunk ids, and ``vectors()`` to rebuild from)."""
    from assistant.documents.index import INDEX_FILE, META_FILE, VectorIndex

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


def copy_versions(settings: Settings, versions: Iterable[tuple[str, str]], stage: Path) -> list[str]:
    """Copy each registered version's folder (``(name, folder)`` as the database snapshot
    lists them) into the backup's ``versions/``; the names whose folder is missing."""
    missing = []
    for name, rel in versions:
        src = Path(settings.versions_dir) / rel
        if src.is_dir():
            shutil.copytree(src, stage / VERSIONS / rel, symlinks=False)
        else:
            missing.append(name)
    return missing


def start_restore(settings: Settings, src: Path) -> tuple[Path, Path, str]:
    """The marker that says a restore of ``src`` is under way (written now; ``assistant
    doctor`` reports one left by an interrupted restore), the free ``pre-restore-<time>``
    folder the current data goes to, and that time stamp."""
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
    return marker, aside, stamp
