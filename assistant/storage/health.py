"""What a subsystem's check of its own data finds, as a plain value: ``assistant doctor``
asks each part (the database, the full-text index, the documents and the FAISS index, the
registry, background runs, file permissions) to check itself, and reports what they return.

It lives here, at the bottom of the library, so that every part can return it (storage
imports nothing above it); it imports nothing of the library itself.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

Status = Literal["ok", "problem", "repaired"]
OK: Status = "ok"
PROBLEM: Status = "problem"
REPAIRED: Status = "repaired"

#: What to do about data that only a backup can bring back.
RESTORE_BACKUP_HINT = "restore a backup with `assistant restore BACKUP` (made by `assistant backup`)"


@dataclass(frozen=True)
class CheckResult:
    """One check's outcome: ``ok``, ``problem`` (still there) or ``repaired``."""

    status: Status
    message: str
    #: The things found (paths, version names, ...), one per entry.
    items: tuple[str, ...] = ()
    #: The checks that build on this one cannot run (the database cannot be read, ...).
    blocking: bool = False


def result(status: Status, message: str, items: Iterable[str] = (), *, blocking: bool = False) -> CheckResult:
    return CheckResult(status, message, tuple(items), blocking)


def reason(err: BaseException) -> str:
    """The first line of what went wrong (the driver's own message for a database error)."""
    orig = getattr(err, "orig", None)
    return str(orig or err).splitlines()[0][:300]
