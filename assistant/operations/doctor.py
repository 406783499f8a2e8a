"""Check that the database, the FAISS index and the model registry agree, and repair what a
crash (a kill, a power cut, a full disk) can leave behind.

    assistant doctor                 # report; exit status 1 while a problem remains
    assistant doctor --repair        # and repair what can be repaired
    assistant doctor --scan exports  # also look for leftovers of interrupted exports there

Every write path of the app is built to survive a kill: the database commits whole
transactions, the index and exports are written beside their target and renamed into place,
a trained version is renamed into ``versions/`` inside the transaction that registers it.
What can still be left is a cache behind the database (the index), a temporary file or
folder beside its target, a staging folder of a training run, or a background run that
died without a result. :func:`diagnose` looks for each of these and, with ``repair``, fixes
what it can without losing anything that was committed: the database is the source of
truth and is never rewritten from the caches.

Each check gives one :class:`Finding` (``ok``, ``problem`` or ``repaired``); the
:class:`DoctorReport` holds them in order.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import stat
import struct
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy.engine import make_url

from assistant import run_records as runs
from assistant.atomic import parse_temp_name
from assistant.config import Settings
from assistant.processes import pid_alive
from assistant.operations.permissions import loose_paths, tighten
from assistant.storage.db import Database
from assistant.storage.health import OK, PROBLEM, REPAIRED, RESTORE_BACKUP_HINT, CheckResult, Status
from assistant.versions import BASE_VERSION

if TYPE_CHECKING:
    from assistant.documents.embedding import Embedder
    from assistant.registry import ActivationRecord, Registry, Version

log = logging.getLogger(__name__)

#: Checks in the order they run (each gives at most one finding).
CHECKS = ("database", "integrity", "schema", "fts", "documents", "index", "versions", "stray",
          "active", "runs", "temp", "permissions")

#: Reason recorded on an activation that the doctor makes.
DOCTOR_REASON = "doctor"
#: Written by :func:`assistant.operations.backup.restore` while it moves files into place.
RESTORE_MARKER = ".restore-in-progress.json"
#: A temporary file or folder whose name carries no process id is left alone this long
#: (another process may be writing it right now).
STALE_AFTER_S = 600.0


@dataclass(frozen=True)
class Finding:
    check: str
    status: Status
    message: str
    #: The things found (paths, version names, ...), one per entry.
    items: tuple[str, ...] = ()

    def line(self) -> str:
        return f"{self.status:<9} {self.check:<10} {self.message}"


@dataclass
class DoctorReport:
    data_dir: Path
    repair: bool
    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """No problem remains (everything was fine, or has been repaired)."""
        return all(f.status != PROBLEM for f in self.findings)

    @property
    def problems(self) -> list[Finding]:
        return [f for f in self.findings if f.status == PROBLEM]

    @property
    def repaired(self) -> list[Finding]:
        return [f for f in self.findings if f.status == REPAIRED]

    def get(self, check: str) -> Finding | None:
        return next((f for f in self.findings if f.check == check), None)

    def status(self, check: str) -> Status | None:
        found = self.get(check)
        return found.status if found else None

    def add(self, check: str, status: Status, message: str, items: Iterable[str] = ()) -> Finding:
        finding = Finding(check, status, message, tuple(items))
        self.findings.append(finding)
        return finding

    def record(self, check: str, result: CheckResult) -> CheckResult:
        """Add what a part's own check returned."""
        self.add(check, result.status, result.message, result.items)
        return result

    def lines(self) -> list[str]:
        out = [f"Data folder {self.data_dir}"]
        for f in self.findings:
            out.append("  " + f.line())
            out.extend(f"{'':13}- {item}" for item in f.items[:20])
            if len(f.items) > 20:
                out.append(f"{'':13}- ... and {len(f.items) - 20} more")
        if self.ok:
            fixed = len(self.repaired)
            out.append(f"All checks pass{f' ({fixed} repaired)' if fixed else ''}.")
        elif self.repair:
            out.append(f"{len(self.problems)} problem(s) could not be repaired here; see above.")
        else:
            out.append(f"{len(self.problems)} problem(s) found: run `assistant doctor --repair` "
                       "to repair what can be repaired.")
        return out


def diagnose(
    settings: Settings,
    *,
    repair: bool = False,
    scan: Sequence[Path] = (),
    embedder: Embedder | None = None,  # only needed to re-embed (loaded when needed)
) -> DoctorReport:
    """Run every check on the data of ``settings``; with ``repair``, repair what can be.

    ``scan``: more folders to look in for leftovers of interrupted exports (they are written
    wherever ``--out`` pointed). The embedding model is loaded only when the stored vectors
    must be made again (another embedding model, or damaged vectors).
    """
    doctor = _Doctor(settings, repair, [Path(p) for p in scan], embedder)
    doctor.run()
    return doctor.report


class _Doctor:
    def __init__(self, settings: Settings, repair: bool, scan: list[Path], embedder: Embedder | None) -> None:
        self.settings = settings
        self.repair = repair
        self.scan = scan
        self._embedder = embedder
        self.report = DoctorReport(Path(settings.data_dir), repair)
        url = make_url(settings.resolved_database_url)
        sqlite = url.get_backend_name() == "sqlite"
        self.db_file = (Path(url.database) if sqlite and url.database
                        and url.database != ":memory:" else None)
        self.db: Database | None = None

    def run(self) -> None:
        try:
            if self._database():
                self._documents_and_index()
                self._registry()
        finally:
            if self.db is not None:
                self.db.dispose()
        self._runs()
        self._temp()
        self._permissions()

    # -- the database ----------------------------------------------------------------------
    def _database(self) -> bool:
        """database, integrity, schema and fts; whether the checks that read the tables can run."""
        from assistant.storage.integrity import check_connection, check_integrity
        from assistant.storage.migrate import check_schema

        r = self.report
        if self.db_file is not None and not self.db_file.exists():
            r.add("database", OK, f"no database yet at {self.db_file} (the app creates it when "
                  "it first starts); nothing to check against")
            return False
        db = self.db = Database(self.settings.resolved_database_url, self.settings.db_busy_timeout_s)
        for check, run in (("database", check_connection),
                           ("integrity", lambda d: check_integrity(d, self.repair)),
                           ("schema", lambda d: check_schema(d, self.repair))):
            if r.record(check, run(db)).blocking:
                return False
        r.record("fts", db.lexical.check(db, self.repair))
        return True


    # -- documents and the index -----------------------------------------------------------
    def _documents_and_index(self) -> None:
        from assistant.documents.index_sync import check_documents, check_index
        from assistant.storage.documents import DocumentStore

        store, r = DocumentStore(self.db), self.settings.retrieval
        stored = check_documents(store, self.repair, self._load_embedder)
        self.report.record("documents", stored.checked)
        self.report.record("index", check_index(store, self.settings.index_dir, r.index_type, r.embedding_model,
                                                stored, self.repair, self._load_embedder))

    def _load_embedder(self) -> Embedder:
        if self._embedder is None:
            from assistant.documents.embedding import Embedder

            self._embedder = Embedder(self.settings.retrieval.embedding_model)
        return self._embedder

    # -- model registry --------------------------------------------------------------------
    def _registry(self) -> None:
        from assistant.registry import Registry

        r = self.report
        registry = Registry(self.db, self.settings.versions_dir)
        versions = registry.list()
        broken = {v.name: why for v in versions if (why := _version_problem(v))}
        if broken:
            r.add("versions", PROBLEM, f"{len(broken)} of {len(versions)} version(s) have "
                  f"missing or damaged files; the chat will not switch to them. This cannot be "
                  f"repaired here: {RESTORE_BACKUP_HINT}, or train them again",
                  [f"{name}: {why}" for name, why in broken.items()])
        else:
            r.add("versions", OK, f"{len(versions)} version(s), all with their adapter files")

        self._stray(registry)

        active = registry.active()
        known = {v.name: v for v in versions}
        why = None
        if active != BASE_VERSION:
            if active not in known:
                why = "is not a registered version"
            elif known[active].kind == "reward":
                why = "is a reward model, which cannot answer chats"
            elif active in broken:
                why = broken[active]
        if why is None:
            r.add("active", OK, f"the chat uses {active}")
            return
        target = _last_good(registry, known, broken)
        if not self.repair:
            r.add("active", PROBLEM, f"the active version {active} {why}. "
                  f"`assistant doctor --repair` switches the chat back to {target}")
            return
        registry.activate(target, reason=DOCTOR_REASON)
        r.add("active", REPAIRED, f"the active version {active} {why}; switched the chat back "
              f"to {target} (the last good version; logged with reason {DOCTOR_REASON!r})")

    def _stray(self, registry: Registry) -> None:
        r = self.report
        strays = registry.stray_folders()
        if not strays:
            r.add("stray", OK, "no folders left by interrupted training runs")
            return
        live = _live_trainings(self.settings)
        oldest_live = min((started for _, started in live), default=None)
        in_use = [p for p in strays
                  if oldest_live is not None and not p.name.startswith(".orphaned-")
                  and _created(p) >= oldest_live - 2]
        stale = [p for p in strays if p not in in_use]
        busy = (f"; {len(in_use)} belong to training still running (pid "
                f"{', '.join(str(pid) for pid, _ in live)}) and are left alone") if in_use else ""
        if not stale:
            r.add("stray", OK, f"no folders left by interrupted training runs{busy}",
                  [p.name for p in in_use])
            return
        if not self.repair:
            r.add("stray", PROBLEM, f"{len(stale)} folder(s) in {registry.root} belong to no "
                  "version (left by a training run that was killed, or set aside by a "
                  f"registration); `assistant doctor --repair` removes them{busy}",
                  [p.name for p in stale])
            return
        for p in stale:
            registry.remove_stray(p)
        left = [p for p in stale if p.exists()]
        if left:
            r.add("stray", PROBLEM, f"could not remove {len(left)} folder(s); remove them by hand",
                  [str(p) for p in left])
            return
        r.add("stray", REPAIRED, f"removed {len(stale)} folder(s) that belonged to no version{busy}",
              [p.name for p in stale])

    # -- background runs and temporary files -----------------------------------------------
    def _runs(self) -> None:
        r = self.report
        root = self.settings.runs_dir
        pending = [p for p in sorted(root.iterdir())
                   if (p / runs.RUN).is_file() and not (p / runs.RESULT).exists()] if root.is_dir() else []
        if not pending:
            r.add("runs", OK, "no background run died without a result")
            return
        died = [run for run in (runs.load(p) for p in pending) if run.status == "died"]
        if not died:
            r.add("runs", OK, f"{len(pending)} background run(s) still running")
            return
        items = [f"{run.id} (pid {run.pid}, step {run.progress.get('step', 0)} of "
                 f"{run.progress.get('max_steps', '?')})" for run in died]
        if not self.repair:
            r.add("runs", PROBLEM, f"{len(died)} background run(s) are marked running but their "
                  "process is gone (killed, or out of memory); nothing of them was registered. "
                  "`assistant doctor --repair` records them as died", items)
            return
        for run in died:
            runs.finish(run.path, "died", error="The training process ended without a result "
                        "(killed, or out of memory); nothing was registered. Found by `assistant doctor`.")
        r.add("runs", REPAIRED, f"recorded {len(died)} background run(s) whose process was gone "
              "as died (nothing of them was registered)", items)

    def _temp(self) -> None:
        r = self.report
        found = list(_leftovers(self._temp_places()))
        stale = [t for t in found if t.stale]
        busy = [t for t in found if not t.stale]
        items = [t.describe() for t in found]
        marker = Path(self.settings.data_dir) / RESTORE_MARKER
        restore = _read_json(marker) if marker.exists() else None
        interrupted = restore is not None and not pid_alive(int(restore.get("pid") or 0))
        if restore is not None:
            items.append(f"{marker.name}: restore from {restore.get('source', '?')} started "
                         f"{restore.get('started', '?')}"
                         + ("" if interrupted else f" (still running, pid {restore.get('pid')})"))
        if not found and not interrupted:
            r.add("temp", OK, "no temporary files left by interrupted writes", items)
            return
        cleaned = failed = put_back = 0
        if self.repair:
            for t in stale:
                back = t.restore and not t.target.exists()
                if t.clean():
                    cleaned += 1
                    put_back += back
                else:
                    failed += 1
        parts = []
        if cleaned:
            parts.append(f"cleaned up {cleaned} temporary file(s) or folder(s) left by "
                         "interrupted writes" + (f" ({put_back} earlier version(s) set aside "
                                                 "were put back in place)" if put_back else ""))
        if failed:
            parts.append(f"could not remove {failed}: remove them by hand")
        if stale and not self.repair:
            parts.append(f"{len(stale)} temporary file(s) or folder(s) left by interrupted "
                         "writes: `assistant doctor --repair` removes them (an earlier export "
                         "set aside is put back)")
        if busy:
            parts.append(f"{len(busy)} may still be being written and are left alone")
        if interrupted:
            parts.append(f"a restore from {restore.get('source', '?')} was interrupted: run "
                         "`assistant restore` with that backup again")
        if failed or interrupted or (stale and not self.repair):
            status = PROBLEM
        else:
            status = REPAIRED if cleaned else OK
        r.add("temp", status, "; ".join(parts), items)

    def _permissions(self) -> None:
        """The data folder and the database (with everything beside it) are private: every
        conversation and password hash is in there, and backup / restore / doctor need no
        login, so the file modes are what keeps other local accounts out."""
        r = self.report
        roots = [Path(self.settings.data_dir)]
        if self.db_file is not None and not self.db_file.resolve().is_relative_to(
            roots[0].resolve()
        ):
            roots += sorted(self.db_file.parent.glob(self.db_file.name + "*"))
        loose = [p for root in roots for p in loose_paths(root)]
        items = [f"{p} ({stat.filemode(p.lstat().st_mode)})" for p in loose]
        if not loose:
            r.add("permissions", OK, "the data folder and the database are private to their owner")
            return
        if not self.repair:
            r.add("permissions", PROBLEM, f"{len(loose)} file(s) or folder(s) other local accounts "
                  "may read: `assistant doctor --repair` makes folders 0700 and files 0600",
                  items)
            return
        done, failed = tighten(loose)
        if failed:
            r.add("permissions", PROBLEM, f"made {len(done)} private; could not change "
                  f"{len(failed)} (run it as their owner, or chmod them by hand)",
                  [f"{p}: {why}" for p, why in failed])
            return
        r.add("permissions", REPAIRED, f"made {len(done)} file(s) or folder(s) private to their "
              "owner (folders 0700, files 0600)", items)

    def _temp_places(self) -> list[tuple[Path, int, bool]]:
        """(folder, depth, mkstemp names too) to look in."""
        s = self.settings
        data = Path(s.data_dir)
        places = [(data, 2, False), (s.index_dir, 1, True), (s.resolved_model_cache_dir, 1, True),
                  (s.runs_dir, 2, False)]
        if self.db_file is not None:
            places.append((self.db_file.parent, 1, False))
        places += [(p, 1, False) for p in self.scan]
        return places


# -- helpers -----------------------------------------------------------------------------------
def _read_json(path: Path) -> dict:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _version_problem(version: Version) -> str | None:
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


def _replay(history: Iterable[ActivationRecord]) -> list[str]:
    """The activation stack, replayed as Registry does: an activation pushes, a rollback pops."""
    stack: list[str] = []
    for record in history:
        if record.reason == "rollback":
            if stack:
                stack.pop()
        else:
            stack.append(record.version)
    return stack


def _last_good(registry: Registry, known: dict, broken: dict) -> str:
    for name in reversed(_replay(registry.history())):
        if name == BASE_VERSION or (name in known and name not in broken and known[name].kind != "reward"):
            return name
    return BASE_VERSION


def _proc_start(pid: int) -> float | None:
    """When process ``pid`` started (epoch seconds; Linux)."""
    try:
        ticks = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
        boot = next(int(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                    if line.startswith("btime "))
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return None


def _processes() -> Iterator[tuple[int, list[str], dict[str, str], Path]]:
    """(pid, argv, environment, cwd) of the processes this user may look at (Linux)."""
    proc = Path("/proc")
    if not proc.is_dir():
        return
    for entry in proc.iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            argv = entry.joinpath("cmdline").read_bytes().decode(errors="replace").split("\0")
            if "train" not in argv:
                continue
            env = dict(
                item.split("=", 1) for item in
                entry.joinpath("environ").read_bytes().decode(errors="replace").split("\0")
                if "=" in item
            )
            cwd = Path(os.readlink(entry / "cwd"))
        except OSError:
            continue
        yield int(entry.name), argv, env, cwd


def _live_trainings(settings: Settings) -> list[tuple[int, float]]:
    """(pid, start time) of training processes that write into this data folder: runs
    started from the Models page, and `assistant train ...` found among the processes."""
    data = Path(settings.data_dir).resolve()
    found: dict[int, float] = {}
    runs_dir = settings.runs_dir
    if runs_dir.is_dir():
        for run_json in runs_dir.glob("*/run.json"):
            if (run_json.parent / "result.json").exists():
                continue
            meta = _read_json(run_json)
            pid = int(meta.get("pid") or 0)
            if pid_alive(pid):
                found[pid] = float(meta.get("started") or 0)
    for pid, argv, env, cwd in _processes():
        if not any(a == "assistant.cli" or a.endswith("/assistant") or a == "assistant" for a in argv):
            continue
        where = Path(env.get("ASSISTANT_DATA_DIR", "data"))
        if (cwd / where).resolve() == data and pid_alive(pid):
            found.setdefault(pid, _proc_start(pid) or 0.0)
    return sorted(found.items())


_STAGING_TIME = re.compile(r"^\.staging-(\d{8}-\d{6})-")


def _created(path: Path) -> float:
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


# What each kind of temporary name (see assistant.atomic) is, and whether a leftover of it
# is put back in place of its target (when that is missing) rather than removed.
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


def _leftovers(places: Iterable[tuple[Path, int, bool]]) -> Iterator[Leftover]:
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
    (the stray check owns it) or dot-folders (a leftover's insides are not leftovers)."""
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

