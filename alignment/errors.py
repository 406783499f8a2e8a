"""Domain errors of the alignment tooling. ``str(err)`` says what went wrong and what to do;
``alignment/cli.py`` (and the main CLI) turn them into one-line messages."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from assistant.errors import AssistantError

if TYPE_CHECKING:
    from alignment.memory import Estimate


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


class NotEnoughTrainingData(AlignmentError):
    def __init__(self, kind: str, what: str, have: int, need: int, hint: str) -> None:
        self.kind, self.have, self.need = kind, have, need
        super().__init__(
            f"`train {kind}` needs at least {need} {what} in the training split; the feedback "
            f"export has {have}. {hint} Nothing was trained; the active version is unchanged."
        )


class RewardModelMissing(AlignmentError):
    def __init__(self, what: str) -> None:
        super().__init__(
            f"{what} Train one first with `assistant train reward` (or name one with "
            "--reward VERSION). Nothing was trained; the active version is unchanged."
        )


class TrainingOutOfMemory(AlignmentError):
    def __init__(self, device: str, batch: int, max_length: int | None, detail: str) -> None:
        super().__init__(
            f"Training ran out of memory on {device} (batch size {batch}, max length "
            f"{max_length or 'default'}): {detail[:200]}. Nothing was registered; the active "
            "version is unchanged. Lower --batch-size (add --grad-accum to keep the effective "
            "batch), --max-length or --lora-r, or turn on --gradient-checkpointing."
        )


class IncompatibleVersion(AlignmentError):
    """A version that cannot be used for what was asked (wrong kind, other base model)."""


class RowsTooLong(AlignmentError):
    """Fitting rows to ``max_length`` left a split with too few rows."""

    def __init__(self, kind: str, split: str, given: int, left: int, max_length: int, drop: bool,
                 need: int = 1) -> None:
        self.split, self.given, self.left, self.max_length = split, given, left, max_length
        how = ("--drop-long drops every row longer than that" if drop else
               "a row whose answers alone are longer is dropped (its prompt can be shortened, "
               "its answers cannot)")
        fix = "Raise --max-length" + ("" if not drop else ", or leave out --drop-long to shorten prompts instead")
        super().__init__(
            f"`train {kind}`: the length limit --max-length {max_length} tokens leaves {left} of "
            f"the {given} {split} rows (at least {need} needed): {how}. {fix}. Nothing was "
            "trained; the active version is unchanged."
        )


class RunWontFit(AlignmentError):
    def __init__(self, estimate: Estimate, free: int, when: str = "now") -> None:
        self.need, self.free = estimate.need, free
        super().__init__(
            f"This run needs about {self.need / 2**30:.1f} GB of memory ({estimate.parts()}) "
            f"and {free / 2**30:.1f} GB is free {when}: it was not started. "
            f"{estimate.advice(free)}Close other programs or wait for the running runs "
            "to end, then start it again; or train a smaller model (ASSISTANT_MODEL)."
        )


class CannotCalibrate(AlignmentError):
    """``assistant models calibrate`` has no version or too few questions to choose from."""
