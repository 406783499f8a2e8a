"""Atomic writes: neither a reader nor a crash ever sees half a file or half a folder.

A writer puts its data under a temporary name beside the target, flushes it to disk and
renames it into place (a rename within one folder is atomic). A folder that is replaced is
first set aside under another temporary name, and put back if the new one cannot move in.

Every temporary name carries the writer's process id, so that ``assistant doctor`` can tell
a leftover of a process that died (removed, or put back in place) from one that is still
being written: :func:`parse_temp_name` is the rule it reads them with, and :func:`leftovers`
finds them (:meth:`Leftover.clean` removes one, or puts it back).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from assistant.processes import pid_alive

log = logging.getLogger(__name__)

#: What a temporary name stands for: ``tmp`` a write in progress, ``old`` an earlier version
#: set aside while the new one moves in, ``restore`` a file of a restore not yet in place.
Role = Literal["tmp", "old", "restore"]

# ".<target>.<role>-<pid>-<nanoseconds>"
_NAME = re.compile(r"^\.(?P<target>.+)\.(?P<role>tmp|old|restore)-(?P<pid>\d+)-\d+$")
# Older names, still found in data folders written before this module: an earlier
# checkpoint set aside, a training run's JSON file.
_LEGACY = (
    (re.compile(r"^\.(?P<target>.+)-old-(?P<pid>\d+)-\d+$"), "old"),
    (re.compile(r"^\.(?P<target>.+)\.(?P<pid>\d+)\.tmp$"), "tmp"),
)
# tempfile.mkstemp / mkdtemp with prefix ".<target>-" (the model conversion and the index
# files before this module): no pid in the name, only an age tells.
_RANDOM = re.compile(r"^\.(?P<target>.+)-[a-z0-9_]{8}$")


@dataclass(frozen=True)
class TempName:
    """What :func:`parse_temp_name` reads from a name."""

    target: Path
    role: Role
    #: The writer's process id; None for a name without one (only its age tells).
    pid: int | None


def temp_name(target: Path, role: Role = "tmp") -> Path:
    """A fresh temporary name beside ``target``."""
    target = Path(target)
    return target.with_name(f".{target.name}.{role}-{os.getpid()}-{time.time_ns()}")


def parse_temp_name(path: Path, random_suffix: bool = False) -> TempName | None:
    """The temporary name ``path`` stands for, or None. ``random_suffix``: also names made by
    ``tempfile`` (no pid), which only folders where such writers ran can hold."""
    path = Path(path)
    m = _NAME.match(path.name)
    if m:
        return TempName(path.with_name(m["target"]), m["role"], int(m["pid"]))
    for pattern, role in _LEGACY:
        m = pattern.match(path.name)
        if m:
            return TempName(path.with_name(m["target"]), role, int(m["pid"]))
    m = _RANDOM.match(path.name) if random_suffix else None
    if m is None:
        return None
    return TempName(path.with_name(m["target"]), "tmp", None)


def fsync(path: Path) -> None:
    """Flush ``path`` (a file, or a folder's entries) to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:  # some file systems cannot fsync a folder; the rename is still atomic
        if not Path(path).is_dir():
            raise
    finally:
        os.close(fd)


def write_file(path: Path, write: Callable[[Path], object]) -> None:
    """Call ``write(temporary path)``, then move the file into place at ``path``."""
    path = Path(path)
    tmp = temp_name(path)
    try:
        write(tmp)
        fsync(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync(path.parent)


def write_text(path: Path, text: str) -> None:
    write_file(path, lambda p: p.write_text(text, encoding="utf-8"))


def write_json(path: Path, value: Any, **dumps: Any) -> None:
    write_text(path, json.dumps(value, **dumps))


@contextmanager
def new_folder(target: Path) -> Iterator[Path]:
    """A temporary folder beside ``target`` to fill; when the block ends without an error
    it is flushed and moves into place (replacing ``target``, see :func:`replace_dir`),
    otherwise it is removed."""
    target = Path(target)
    tmp = temp_name(target)
    # Not mkdtemp: its folder is private (0700), and it becomes the target itself.
    tmp.mkdir()
    try:
        yield tmp
        fsync_tree(tmp)
        replace_dir(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def fsync_tree(folder: Path) -> None:
    """Flush every file and folder under ``folder`` to disk."""
    for root, _dirs, files in os.walk(folder):
        for name in files:
            fsync(Path(root) / name)
        fsync(Path(root))


def replace_dir(new: Path, target: Path) -> None:
    """Move the folder ``new`` into place at ``target``. An existing ``target`` is set aside
    first and removed once ``new`` is in place, or put back if the move fails."""
    new, target = Path(new), Path(target)
    old = None
    if target.exists():
        old = temp_name(target, "old")
        os.replace(target, old)
    try:
        os.replace(new, target)
    except OSError:
        if old is not None:
            os.replace(old, target)
        raise
    fsync(target.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


# -- leftovers of writes that were interrupted (found by `assistant doctor`) ---------------------
#: A temporary file or folder whose name carries no process id is left alone this long
#: (another process may be writing it right now).
STALE_AFTER_S = 600.0

# What each kind of temporary name is, and whether a leftover of it is put back in place of
# its target (when that is missing) rather than removed.
_ROLES = {
    "tmp": ("unfinished write", False),
    "old": ("earlier version set aside", True),
    "restore": ("unfinished restore", False),
}


@dataclass(frozen=True)
class Leftover:
    path: Path
    what: str
    target: Path
    pid: int | None
    #: Put back in place of ``target`` (when that is missing) rather than removed.
    restore: bool
    stale: bool

    def describe(self) -> str:
        owner = f"process {self.pid}" if self.pid is not None else "unknown process"
        state = "ended" if self.stale else "may still be writing it"
        return f"{self.path} ({self.what} of {self.target.name}; {owner} {state})"

    def clean(self) -> bool:
        try:
            if self.restore and not self.target.exists():
                os.replace(self.path, self.target)
                log.info("Put %s back as %s", self.path, self.target)
            elif self.path.is_dir() and not self.path.is_symlink():
                shutil.rmtree(self.path)
            else:
                self.path.unlink()
        except OSError as err:
            log.warning("Could not clean up %s: %s", self.path, err)
            return False
        return True


def leftovers(places: Iterable[tuple[Path, int, bool]]) -> Iterator[Leftover]:
    """The temporary files and folders in ``places``: (folder, depth to look down to, whether
    ``tempfile`` names without a pid may be there too)."""
    seen: set[Path] = set()
    now = time.time()
    for folder, depth, mkstemp in places:
        for path in _walk(Path(folder), depth):
            if path in seen or not path.name.startswith("."):
                continue
            found = _leftover(path, mkstemp, now)
            if found is not None:
                seen.add(path)
                yield found


def _leftover(path: Path, mkstemp: bool, now: float) -> Leftover | None:
    name = parse_temp_name(path, random_suffix=mkstemp)
    if name is None:
        return None
    if name.pid is not None:
        what, restore = _ROLES[name.role]
        return Leftover(path, what, name.target, name.pid, restore, stale=not pid_alive(name.pid))
    if path.name.startswith(".staging-"):
        return None
    try:
        age = now - path.stat().st_mtime
    except OSError:
        return None
    return Leftover(path, "temporary copy", name.target, None, False, stale=age > STALE_AFTER_S)


def _walk(folder: Path, depth: int) -> Iterator[Path]:
    """Entries of ``folder`` down to ``depth`` levels, without entering the versions folder
    (the registry's stray check owns it) or dot-folders (a leftover's insides are not
    leftovers)."""
    if depth <= 0 or not folder.is_dir():
        return
    try:
        entries = sorted(folder.iterdir())
    except OSError:
        return
    for entry in entries:
        yield entry
        if (entry.is_dir() and not entry.is_symlink() and not entry.name.startswith(".")
                and entry.name != "versions"):
            yield from _walk(entry, depth - 1)
