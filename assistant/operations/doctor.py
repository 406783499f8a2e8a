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

Each part checks (and repairs) its own data and returns a plain
:class:`~assistant.storage.health.CheckResult`; the doctor runs them in order, gives each
what it needs from the settings, and reports one :class:`Finding` per check (``ok``,
``problem`` or ``repaired``) in a :class:`DoctorReport`:

==============  ==========================================================================
database        :func:`assistant.storage.integrity.check_connection`
integrity       :func:`assistant.storage.integrity.check_integrity`
schema          :func:`assistant.storage.migrate.check_schema`
fts             ``check`` of the dialect's lexical search (:mod:`assistant.storage.lexical`)
documents       :func:`assistant.documents.index_sync.check_documents`
index           :func:`assistant.documents.index_sync.check_index`
versions        :meth:`assistant.registry.Registry.check_versions`
stray           :meth:`assistant.registry.Registry.check_strays` (training still running:
                :func:`assistant.run_records.live_trainings`)
active          :meth:`assistant.registry.Registry.check_active`
runs            :func:`assistant.run_records.check`
temp            :func:`assistant.atomic.leftovers`, plus an interrupted restore (here: the
                marker is the backup's and the doctor's business)
permissions     :func:`assistant.operations.permissions.check`
==============  ==========================================================================
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy.engine import make_url

from assistant import run_records as runs
from assistant.atomic import STALE_AFTER_S, leftovers
from assistant.config import Settings
from assistant.operations import permissions
from assistant.processes import pid_alive
from assistant.registry import DOCTOR_REASON, Registry
from assistant.storage.db import Database
from assistant.storage.health import OK, PROBLEM, REPAIRED, RESTORE_BACKUP_HINT, CheckResult, Status

if TYPE_CHECKING:
    from assistant.documents.embedding import Embedder

__all__ = [
    "CHECKS", "DOCTOR_REASON", "OK", "PROBLEM", "REPAIRED", "RESTORE_BACKUP_HINT", "RESTORE_MARKER",
    "STALE_AFTER_S", "DoctorReport", "Finding", "Status", "diagnose",
]

#: Checks in the order they run (each gives at most one finding).
CHECKS = ("database", "integrity", "schema", "fts", "documents", "index", "versions", "stray",
          "active", "runs", "temp", "permissions")

#: Written by :func:`assistant.operations.backup.restore` while it moves files into place.
RESTORE_MARKER = ".restore-in-progress.json"


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
        self.report.record("runs", runs.check(self.settings.runs_dir, self.repair))
        self._temp()
        self.report.record("permissions", permissions.check(self._private_roots(), self.repair))

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

    # -- documents, the index and the model registry ---------------------------------------
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

    def _registry(self) -> None:
        r, s = self.report, self.settings
        registry = Registry(self.db, s.versions_dir)
        versions, broken = registry.check_versions()
        r.record("versions", versions)
        r.record("stray", registry.check_strays(lambda: runs.live_trainings(s.data_dir, s.runs_dir),
                                                self.repair))
        r.record("active", registry.check_active(broken, self.repair))

    # -- temporary files and permissions ---------------------------------------------------
    def _temp(self) -> None:
        r = self.report
        found = list(leftovers(self._temp_places()))
        stale = [t for t in found if t.stale]
        busy = [t for t in found if not t.stale]
        items = [t.describe() for t in found]
        marker = Path(self.settings.data_dir) / RESTORE_MARKER
        restore = runs.read_json(marker) if marker.exists() else None
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

    def _private_roots(self) -> list[Path]:
        """The data folder and the database (with everything beside it) are private: every
        conversation and password hash is in there, and backup / restore / doctor need no
        login, so the file modes are what keeps other local accounts out."""
        roots = [Path(self.settings.data_dir)]
        if self.db_file is not None and not self.db_file.resolve().is_relative_to(
            roots[0].resolve()
        ):
            roots += sorted(self.db_file.parent.glob(self.db_file.name + "*"))
        return roots
