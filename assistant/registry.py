"""The model registry: trained versions, which one the chat uses, and their evaluations.

A version is a folder under ``data_dir/versions/<name>/`` (``adapter/`` written by peft,
``data/`` the exact export it was trained on, ``curve.png``, ``log_history.json``,
``version.json`` a copy of its row, for ``assistant models import`` elsewhere) and a row
in ``model_versions`` (lineage, data hash, config, metrics). Training writes into a staging
folder; :meth:`Registry.register` renames it into place inside the transaction that inserts
the row, so a crash leaves either no version or a complete one, never a half-written one
that the chat could switch to.

Activation is one INSERT into the append-only ``activations`` log: the newest row names the
active version (none: ``base``, the bare base model). A running chat reads it before each
answer, so ``assistant models activate`` in a terminal switches a running app too.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from assistant.errors import AssistantError
from assistant.storage import Database
from assistant.storage.health import OK, PROBLEM, REPAIRED, RESTORE_BACKUP_HINT, CheckResult, result
from assistant.storage.versions import ActivationRecord, EvalRecord, NewVersion, StoredVersion, VersionStore
from assistant.versions import BASE_VERSION, called, chats

#: A version's kind: a short name. Which kinds exist is training's business (its table of
#: kinds, alignment.training_kinds); the registry knows which never chat (reward models and
#: answerability heads: assistant.versions.JUDGE_KINDS).
KIND_PATTERN = re.compile(r"[a-z][a-z0-9_]{0,15}")
STAGING_PREFIX = ".staging-"
#: The time in a staging folder's name (local time, as :meth:`Registry.staging_dir` writes it).
_STAGING_TIME = re.compile(r"^\.staging-(\d{8}-\d{6})-")
#: Reason recorded on an activation that ``assistant doctor`` makes (it replaces a broken
#: active version).
DOCTOR_REASON = "doctor"
#: What a version folder says about itself (kind, base, lineage, data, config, metrics), so
#: that another installation can import it (``assistant models import``).
VERSION_FILE = "version.json"
#: The key of a version's metrics that keeps its abstention calibration (``Registry.calibrate``).
CALIBRATION = "abstention_calibration"


class VersionNotFound(AssistantError):
    def __init__(self, name: str, known: list[str]) -> None:
        self.name = name
        names = ", ".join(known[-10:]) if known else "none yet; train one with `assistant train ...`"
        super().__init__(
            f"There is no model version {name!r}. Known versions: {BASE_VERSION}, {names}. "
            "`assistant models list` shows them all."
        )


class ActivationRefused(AssistantError):
    """The version cannot or should not serve the chat; the active version is unchanged."""


class NothingToRollBack(AssistantError):
    def __init__(self) -> None:
        super().__init__(
            "Nothing to roll back: no version was ever activated (the chat uses the base model)."
        )


@dataclass(frozen=True)
class Version:
    name: str
    kind: str  # sft | dpo | kto | rl | reward, or "base"
    base_model: str
    base_fingerprint: str
    parent: str | None
    path: Path | None
    data: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    created_at: datetime | None = None

    @property
    def adapter_dir(self) -> Path | None:
        return self.path / "adapter" if self.path else None

    @property
    def curve(self) -> Path | None:
        return self.path / "curve.png" if self.path else None

    @property
    def is_base(self) -> bool:
        return self.name == BASE_VERSION


class Registry:
    def __init__(self, db: Database, root: Path) -> None:
        self.db = db
        self.root = Path(root)
        self.store = VersionStore(db)

    # -- versions ------------------------------------------------------------------------------
    def staging_dir(self) -> Path:
        """A fresh folder to write a version into before :meth:`register`."""
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.root / f"{STAGING_PREFIX}{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}"
        path.mkdir()
        return path

    def register(
        self,
        staging: Path,
        *,
        kind: str,
        base_model: str,
        base_fingerprint: str,
        parent: str,
        data: dict[str, Any],
        config: dict[str, Any],
        metrics: dict[str, Any],
    ) -> Version:
        """Insert the row, name it ``v<id>`` and move ``staging`` to that name, in one
        transaction: if the move fails, no row is left; if the process dies before the
        commit, the folder has no row and is set aside next time (or by ``doctor``)."""
        if not KIND_PATTERN.fullmatch(kind):
            raise ValueError(f"a version's kind is a short lowercase name (16 characters at most), not {kind!r}")
        if not (staging / "adapter").is_dir():
            raise ValueError(f"{staging} holds no adapter/ folder")

        def place(name: str) -> None:
            (staging / VERSION_FILE).write_text(json.dumps({
                "name": name, "kind": kind, "base_model": base_model,
                "base_fingerprint": base_fingerprint, "parent": parent, "data": data,
                "config": config, "metrics": metrics,
            }, indent=1, default=str))
            target = self.root / name
            if target.exists():  # left by a crash between rename and commit: never registered
                os.replace(target, self.root / f".orphaned-{name}-{time.time_ns()}")
            os.replace(staging, target)

        def undo(name: str) -> None:
            os.replace(self.root / name, staging)

        new = NewVersion(kind, base_model, base_fingerprint, parent, data, config, metrics)
        return self._version(self.store.add(new, place, undo))

    def get(self, name: str, base: Version | None = None) -> Version:
        if name == BASE_VERSION:
            return base or Version(BASE_VERSION, BASE_VERSION, "", "", None, None)
        stored = self.store.find(name)
        if stored is None:
            raise VersionNotFound(name, [v.name for v in self.store.all()])
        return self._version(stored)

    def list(self) -> list[Version]:
        return [self._version(v) for v in self.store.all()]

    # -- the abstention threshold a version was calibrated with --------------------------------
    def calibrate(self, name: str, calibration: dict[str, Any]) -> Version:
        """Keep ``calibration`` (``alignment.calibration``: the version's own
        ``answers.min_abstain_probability`` and the questions it was chosen on) with ``name``."""
        stored = self.store.update_metrics(name, {CALIBRATION: calibration})
        if stored is None:
            raise VersionNotFound(name, [v.name for v in self.store.all()])
        version = self._version(stored)
        described = version.path / VERSION_FILE if version.path else None
        if described is not None and described.is_file():  # it travels with the folder
            from assistant.atomic import write_json

            meta = json.loads(described.read_text())
            write_json(described, {**meta, "metrics": version.metrics}, indent=1, default=str)
        return version

    def abstain_threshold(self, name: str) -> float | None:
        """The ``answers.min_abstain_probability`` chosen for ``name`` (None: not calibrated,
        or no such version)."""
        if name == BASE_VERSION:
            return None
        stored = self.store.find(name)
        value = (stored.metrics.get(CALIBRATION) or {}).get("min_abstain_probability") if stored else None
        return float(value) if isinstance(value, (int, float)) else None

    def newest(self, kind: str) -> Version | None:
        stored = self.store.newest(kind)
        return self._version(stored) if stored else None

    def _version(self, v: StoredVersion) -> Version:
        return Version(v.name, v.kind, v.base_model, v.base_fingerprint, v.parent, self.root / v.path,
                       v.data, v.config, v.metrics, v.created_at)

    def lineage(self, name: str) -> list[str]:
        """``name``, its parent, its parent's parent, ... down to ``base``."""
        chain = [name]
        while chain[-1] != BASE_VERSION and len(chain) < 1000:
            chain.append(self.get(chain[-1]).parent or BASE_VERSION)
        return chain

    # -- activation ----------------------------------------------------------------------------
    def history(self) -> list[ActivationRecord]:
        return self.store.activations()

    def _stack(self, undo_doctor: bool = True) -> list[str]:
        """Replay the log: an activation pushes, a rollback pops; the doctor's activation
        replaces the broken version it moved away from (``undo_doctor``), or just pushes."""
        stack: list[str] = []
        for record in self.history():
            if record.reason == "rollback":
                if stack:
                    stack.pop()
            elif undo_doctor and record.reason == DOCTOR_REASON:  # replaces a broken active version
                if stack:
                    stack.pop()
                if not stack or stack[-1] != record.version:
                    stack.append(record.version)
            else:
                stack.append(record.version)
        return stack

    def active(self) -> str:
        return self.store.newest_activation() or BASE_VERSION

    def check_servable(self, name: str, base_fingerprint: str) -> Version:
        """The version, if the chat can use it on the base model with ``base_fingerprint``."""
        version = self.get(name)
        if version.is_base:
            return version
        if not chats(version.kind):
            raise ActivationRefused(
                f"{name} is {called(version.kind)} (it judges answers, it does not write them): "
                "activate a version trained with sft, dpo, kto or rl."
            )
        if version.base_fingerprint != base_fingerprint:
            raise ActivationRefused(
                f"{name} was trained on another base model ({version.base_model}); the chat runs "
                "a different one. Set ASSISTANT_MODEL to that base model, or train a new version "
                "on this one."
            )
        adapter = version.adapter_dir
        weights = adapter / "adapter_model.safetensors" if adapter else None
        if adapter is None or not (adapter / "adapter_config.json").is_file() or not (
            weights.is_file() and weights.stat().st_size > 0
        ):
            raise ActivationRefused(
                f"{name}'s adapter files are missing ({adapter}). Run `assistant doctor` or "
                "restore a backup; the active version is unchanged."
            )
        return version

    def activate(self, name: str, *, forced: bool = False, reason: str = "activate") -> str:
        """Record ``name`` as the active version (callers check it first: see
        :func:`assistant.registry.gate` and :meth:`check_servable`)."""
        self.get(name)
        self.store.add_activation(name, forced, reason[:200])
        return name

    def default_opponent(self, active: str) -> str | None:
        """The version compare mode pits against ``active`` by default: its parent (what it
        was trained from); for the base model, the chat version active before it, else the
        newest one trained. None when there is nothing to compare with (no training yet)."""
        if active != BASE_VERSION:
            return self.get(active).parent or BASE_VERSION
        chat = {v.name for v in self.list() if chats(v.kind)}
        earlier = [r.version for r in reversed(self.history()) if r.version in chat]
        if earlier:
            return earlier[0]
        newest = [v.name for v in reversed(self.list()) if v.name in chat]
        return newest[0] if newest else None

    def can_rollback(self) -> bool:
        return bool(self._stack())

    def rollback(self) -> str:
        """Go back to the version active before the newest activation."""
        stack = self._stack()
        if not stack:
            raise NothingToRollBack()
        target = stack[-2] if len(stack) >= 2 else BASE_VERSION
        self.store.add_activation(target, False, "rollback")
        return target

    # -- evaluations ---------------------------------------------------------------------------
    def record_evaluation(
        self, candidate: str, baseline: str, reward_model: str | None, metrics: dict[str, Any]
    ) -> EvalRecord:
        return self.store.add_evaluation(candidate, baseline, reward_model, metrics)

    def evaluations(self, candidate: str | None = None) -> list[EvalRecord]:
        return self.store.evaluations(candidate)

    def latest_evaluation(self, candidate: str, baseline: str) -> EvalRecord | None:
        evals = [e for e in self.evaluations(candidate) if e.baseline == baseline]
        return evals[-1] if evals else None

    # -- housekeeping --------------------------------------------------------------------------
    def stray_folders(self) -> list[Path]:
        """Folders under the root that no row refers to (staging left by a crash, orphans)."""
        if not self.root.is_dir():
            return []
        known = {v.path for v in self.list()}
        return sorted(p for p in self.root.iterdir() if p.is_dir() and p not in known)

    def remove_stray(self, path: Path) -> None:
        shutil.rmtree(path, ignore_errors=True)

    # -- checks for `assistant doctor` -----------------------------------------------------------
    def check_versions(self) -> tuple[CheckResult, dict[str, str]]:
        """Whether every version has its adapter files; and why each broken one cannot serve
        (name -> reason). Only a backup or training again mends them."""
        versions = self.list()
        broken = {v.name: why for v in versions if (why := version_problem(v))}
        if broken:
            return result(PROBLEM, f"{len(broken)} of {len(versions)} version(s) have "
                          f"missing or damaged files; the chat will not switch to them. This cannot be "
                          f"repaired here: {RESTORE_BACKUP_HINT}, or train them again",
                          [f"{name}: {why}" for name, why in broken.items()]), broken
        return result(OK, f"{len(versions)} version(s), all with their adapter files"), broken

    def check_strays(self, live: Callable[[], list[tuple[int, float]]], repair: bool) -> CheckResult:
        """Folders that belong to no version (:meth:`stray_folders`); with ``repair``, removed,
        but for the staging folders of training still running (``live``: (pid, start time) of
        the training processes, asked only when there are strays)."""
        strays = self.stray_folders()
        if not strays:
            return result(OK, "no folders left by interrupted training runs")
        running = live()
        oldest_live = min((started for _, started in running), default=None)
        in_use = [p for p in strays
                  if oldest_live is not None and not p.name.startswith(".orphaned-")
                  and staging_created(p) >= oldest_live - 2]
        stale = [p for p in strays if p not in in_use]
        busy = (f"; {len(in_use)} belong to training still running (pid "
                f"{', '.join(str(pid) for pid, _ in running)}) and are left alone") if in_use else ""
        if not stale:
            return result(OK, f"no folders left by interrupted training runs{busy}", [p.name for p in in_use])
        if not repair:
            return result(PROBLEM, f"{len(stale)} folder(s) in {self.root} belong to no "
                          "version (left by a training run that was killed, or set aside by a "
                          f"registration); `assistant doctor --repair` removes them{busy}",
                          [p.name for p in stale])
        for p in stale:
            self.remove_stray(p)
        left = [p for p in stale if p.exists()]
        if left:
            return result(PROBLEM, f"could not remove {len(left)} folder(s); remove them by hand",
                          [str(p) for p in left])
        return result(REPAIRED, f"removed {len(stale)} folder(s) that belonged to no version{busy}",
                      [p.name for p in stale])

    def check_active(self, broken: dict[str, str], repair: bool) -> CheckResult:
        """Whether the active version can serve the chat (``broken``: from
        :meth:`check_versions`); with ``repair``, switch back to the last good one."""
        active = self.active()
        known = {v.name: v for v in self.list()}
        why = None
        if active != BASE_VERSION:
            if active not in known:
                why = "is not a registered version"
            elif not chats(known[active].kind):
                why = f"is {called(known[active].kind)}, which cannot answer chats"
            elif active in broken:
                why = broken[active]
        if why is None:
            return result(OK, f"the chat uses {active}")
        target = self._last_good(known, broken)
        if not repair:
            return result(PROBLEM, f"the active version {active} {why}. "
                          f"`assistant doctor --repair` switches the chat back to {target}")
        self.activate(target, reason=DOCTOR_REASON)
        return result(REPAIRED, f"the active version {active} {why}; switched the chat back "
                      f"to {target} (the last good version; logged with reason {DOCTOR_REASON!r})")

    def _last_good(self, known: dict[str, Version], broken: dict[str, str]) -> str:
        """The newest version on the activation stack that can serve, else the base model.
        The stack is replayed plainly here (every activation pushes, a doctor's too)."""
        for name in reversed(self._stack(undo_doctor=False)):
            if name == BASE_VERSION or (name in known and name not in broken
                                        and chats(known[name].kind)):
                return name
        return BASE_VERSION


def version_problem(version: Version) -> str | None:
    """Why ``version``'s files cannot serve, or None."""
    if version.path is None or not version.path.is_dir():
        return f"its folder {version.path} is missing"
    adapter = version.adapter_dir
    config = adapter / "adapter_config.json"
    if not config.is_file():
        return f"{config} is missing"
    try:
        json.loads(config.read_text())
    except (OSError, ValueError):
        return f"{config} is unreadable"
    weights = [adapter / n for n in ("adapter_model.safetensors", "adapter_model.bin")]
    present = [w for w in weights if w.is_file()]
    if not present:
        return f"its adapter weights (adapter_model.safetensors) are missing in {adapter}"
    if present[0].suffix == ".safetensors" and not safetensors_complete(present[0]):
        return f"{present[0]} is truncated or damaged"
    return None


def safetensors_complete(path: Path) -> bool:
    """The file holds a readable header and every byte the header promises (a cheap check
    that catches truncation, without reading the tensors)."""
    try:
        with open(path, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            if n > 100_000_000:
                return False
            header = json.loads(f.read(n))
        end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
        return path.stat().st_size >= 8 + n + end
    except (OSError, ValueError, KeyError, TypeError, struct.error):
        return False


def staging_created(path: Path) -> float:
    """When a staging folder was made (its name says, in local time), else its mtime."""
    m = _STAGING_TIME.match(path.name)
    if m:
        try:
            return time.mktime(time.strptime(m.group(1), "%Y%m%d-%H%M%S"))
        except (ValueError, OverflowError):
            pass
    try:
        return path.stat().st_mtime
    except OSError:
        return time.time()
