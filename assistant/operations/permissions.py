"""Keep the data private to the account that runs the app.

The database holds every conversation and every password hash, and ``backup``, ``restore``
and ``doctor`` work on the files without a login: the operating system's permissions are
what guards them. :func:`private_umask` is called once at the start of the app and of the
CLI, so that everything they create (the data folder, the database with its ``-wal`` and
``-shm`` files, pre-restore copies, backups, exports, trained versions) is readable by its
owner only: folders 0700, files 0600. Files made before that, or copied in with other
modes, are found by :func:`loose_paths` and tightened by :func:`tighten`
(``assistant doctor --repair``).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from pathlib import Path

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
