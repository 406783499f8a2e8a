"""Keep the data private to the account that runs the app.

The database holds every conversation and every password hash, and ``backup``, ``restore``
and ``doctor`` work on the files without a login: the operating system's permissions are
what guards them. :func:`private_umask` is called once at the start of the app and of the
CLI, so that everything they create (the data folder, the database with its ``-wal`` and
``-shm`` files, pre-restore copies, backups, exports, trained versions) is readable by its
owner only: folders 0700, files 0600. Files made before that, or copied in with other
modes, are found by :func:`loose_paths` and tightened by :func:`tighten`
(:func:`check`, for ``assistant doctor [--repair]``).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from pathlib import Path

from assistant.storage.health import OK, PROBLEM, REPAIRED, CheckResult, result

#: No access at all for the group and others.
PRIVATE_UMASK = 0o077
DIR_MODE = 0o700
FILE_MODE = 0o600


def private_umask() -> int:
    """Make everything this process creates from now on private; returns the old umask."""
    return os.umask(PRIVATE_UMASK)


def _loose(mode: int) -> bool:
    return bool(mode & 0o077)


def loose_paths(root: Path) -> list[Path]:
    """``root`` and everything under it that the group or others may read, write or enter.

    Symbolic links are not followed (their own mode means nothing): a link pointing out of
    the data folder is its owner's business."""
    root = Path(root)
    if not root.exists():
        return []
    found = [root] if _loose(root.stat().st_mode) else []
    for folder, dirs, files in os.walk(root):
        for entry in (*dirs, *files):
            path = Path(folder) / entry
            try:
                st = path.lstat()
            except OSError:
                continue  # removed meanwhile
            if not stat.S_ISLNK(st.st_mode) and _loose(st.st_mode):
                found.append(path)
    return found


def tighten(paths: Iterable[Path]) -> tuple[list[Path], list[tuple[Path, str]]]:
    """Folders to 0700 and files to 0600 (an owner's execute bit is kept on files).

    Returns what was changed and what could not be (path, reason): a file of another
    account can only be changed by that account or root."""
    done: list[Path] = []
    failed: list[tuple[Path, str]] = []
    for path in paths:
        try:
            mode = path.lstat().st_mode
            if stat.S_ISLNK(mode):
                continue
            new = DIR_MODE if stat.S_ISDIR(mode) else FILE_MODE | (mode & stat.S_IXUSR)
            os.chmod(path, new)
            done.append(path)
        except OSError as err:
            failed.append((path, err.strerror or str(err)))
    return done, failed


def check(roots: Iterable[Path], repair: bool) -> CheckResult:
    """Whether ``roots`` (the data folder, the database files) are private to their owner;
    with ``repair``, tighten what is not."""
    loose = [p for root in roots for p in loose_paths(root)]
    items = [f"{p} ({stat.filemode(p.lstat().st_mode)})" for p in loose]
    if not loose:
        return result(OK, "the data folder and the database are private to their owner")
    if not repair:
        return result(PROBLEM, f"{len(loose)} file(s) or folder(s) other local accounts "
                      "may read: `assistant doctor --repair` makes folders 0700 and files 0600", items)
    done, failed = tighten(loose)
    if failed:
        return result(PROBLEM, f"made {len(done)} private; could not change "
                      f"{len(failed)} (run it as their owner, or chmod them by hand)",
                      [f"{p}: {why}" for p, why in failed])
    return result(REPAIRED, f"made {len(done)} file(s) or folder(s) private to their "
                  "owner (folders 0700, files 0600)", items)
