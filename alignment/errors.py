"""Domain errors of the alignment tooling. ``str(err)`` says what went wrong and what to do;
``alignment/cli.py`` (and the main CLI) turn them into one-line messages."""

from __future__ import annotations

from pathlib import Path

from assistant.errors import AssistantError


class AlignmentError(AssistantError):
    """Base class of the errors raised by ``alignment``."""


class NoTrainingData(AlignmentError):
    """The database (after the filters) holds no feedback of the kind asked for."""


class ExportPathError(AlignmentError):
    def __init__(self, path: Path, reason: str) -> None:
        self.path, self.reason = Path(path), reason
        super().__init__(
            f"Cannot write the export to {path}: {reason}. Nothing was written; choose "
            "another --out folder (one you can write to, new or from an earlier export)."
        )


class ImportFileError(AlignmentError):
    def __init__(self, path: Path, reason: str) -> None:
        self.path, self.reason = Path(path), reason
        super().__init__(f"Cannot import {path}: {reason}. Nothing was imported.")
