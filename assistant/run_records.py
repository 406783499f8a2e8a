"""The record a background training run keeps in its folder, ``data_dir/runs/<id>/``:
``run.json`` (what was started, pid), ``progress.json`` (written by the trainer callback as
it goes), ``train.log`` (the child's output) and ``result.json`` (written by the child when
it ends: the version or the error).

Reading and finishing a record needs nothing of the training code: ``assistant doctor``
does both (:func:`check`: runs whose process died without a result are recorded as died),
and asks :func:`live_trainings` which training still writes into the data folder. Starting
and cancelling runs is :mod:`alignment.runs`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from assistant import atomic
from assistant.processes import pid_alive, processes_with_arg, started_at
from assistant.storage.health import OK, PROBLEM, REPAIRED, CheckResult, result

RUN, PROGRESS, RESULT, LOG = "run.json", "progress.json", "result.json", "train.log"


@dataclass
class Run:
    id: str
    path: Path
    kind: str
    args: list[str]
    pid: int
    started: float
    status: str  # queued | running | done | failed | died | cancelled
    version: str | None = None
    error: str | None = None
    ended: float | None = None
    progress: dict[str, Any] = field(default_factory=dict)
    queued: float | None = None  # when it was queued (it waits while status is "queued")

    @property
    def fraction(self) -> float | None:
        p = self.progress
        if p.get("max_steps"):
            return min(1.0, p.get("step", 0) / p["max_steps"])
        return None

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = (self.path / LOG).read_text(errors="replace")
        except OSError:
            return ""
        # tqdm redraws with carriage returns: keep the last state of each line
        return "\n".join(line.split("\r")[-1] for line in text.splitlines()[-lines:])


def write_json(path: Path, value: Any) -> None:
    """Atomically (a reader never sees half a file)."""
    atomic.write_json(path, value, indent=1, default=str)


def finish(run_dir: Path, status: str, version: str | None = None, error: str | None = None) -> None:
    """Called by the child (`--run-dir`) when it ends."""
    write_json(Path(run_dir) / RESULT, {"status": status, "version": version, "error": error,
                                        "ended": time.time()})


def process_alive(run_id: str, pid: int) -> bool:
    """Whether the process that runs ``run_id`` is still there."""
    if not pid_alive(pid):
        return False
    try:  # a reused pid is not our run
        return run_id in Path(f"/proc/{pid}/cmdline").read_text(errors="replace")
    except OSError:
        return True


def read_json(path: Path) -> dict[str, Any]:
    """The object in a JSON file; empty when it is missing, unreadable or not an object."""
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def load(path: Path, alive: Callable[[str, int], bool] = process_alive) -> Run:
    """The run in folder ``path``; one without a result whose process is gone (``alive``
    says) died: killed, or out of memory in the kernel."""
    meta, result = read_json(path / RUN), read_json(path / RESULT)
    run = Run(
        id=meta.get("id", path.name), path=path, kind=meta.get("kind", "?"),
        args=meta.get("args", []), pid=int(meta.get("pid", 0)), started=meta.get("started", 0.0),
        status="running", progress=read_json(path / PROGRESS), queued=meta.get("queued"),
    )
    if result:
        run.status, run.version, run.error = result["status"], result.get("version"), result.get("error")
        run.ended = result.get("ended")
    elif meta.get("queued") and not run.pid:
        run.status = "queued"
    elif not alive(run.id, run.pid):
        run.status = "died"
        run.error = "The training process ended without a result (killed, or out of memory)."
        if isinstance(meta.get("memory_need"), int):
            run.error += (f" It was estimated to need about {meta['memory_need'] / 2**30:.1f} GB of "
                          "memory: a smaller batch size needs less.")
    return run


# -- for `assistant doctor` ------------------------------------------------------------------------
DIED_ERROR = ("The training process ended without a result (killed, or out of memory); nothing "
              "was registered. Found by `assistant doctor`.")


def check(root: Path, repair: bool) -> CheckResult:
    """Runs under ``root`` that are marked running but whose process is gone; with
    ``repair``, finished as died (nothing of them was registered)."""
    root = Path(root)
    pending = [p for p in sorted(root.iterdir())
               if (p / RUN).is_file() and not (p / RESULT).exists()] if root.is_dir() else []
    if not pending:
        return result(OK, "no background run died without a result")
    died = [run for run in (load(p) for p in pending) if run.status == "died"]
    if not died:
        return result(OK, f"{len(pending)} background run(s) still running")
    items = [f"{run.id} (pid {run.pid}, step {run.progress.get('step', 0)} of "
             f"{run.progress.get('max_steps', '?')})" for run in died]
    if not repair:
        return result(PROBLEM, f"{len(died)} background run(s) are marked running but their "
                      "process is gone (killed, or out of memory); nothing of them was registered. "
                      "`assistant doctor --repair` records them as died", items)
    for run in died:
        finish(run.path, "died", error=DIED_ERROR)
    return result(REPAIRED, f"recorded {len(died)} background run(s) whose process was gone "
                  "as died (nothing of them was registered)", items)


def live_trainings(data_dir: Path, runs_dir: Path) -> list[tuple[int, float]]:
    """(pid, start time) of training processes that write into ``data_dir``: runs started
    from the Models page (their records in ``runs_dir``), and `assistant train ...` found
    among the processes."""
    data = Path(data_dir).resolve()
    found: dict[int, float] = {}
    runs_dir = Path(runs_dir)
    if runs_dir.is_dir():
        for run_json in runs_dir.glob(f"*/{RUN}"):
            if (run_json.parent / RESULT).exists():
                continue
            meta = read_json(run_json)
            pid = int(meta.get("pid") or 0)
            if pid_alive(pid):
                found[pid] = float(meta.get("started") or 0)
    for pid, argv, env, cwd in processes_with_arg("train"):
        if not any(a == "assistant.cli" or a.endswith("/assistant") or a == "assistant" for a in argv):
            continue
        where = Path(env.get("ASSISTANT_DATA_DIR", "data"))
        if (cwd / where).resolve() == data and pid_alive(pid):
            found.setdefault(pid, started_at(pid) or 0.0)
    return sorted(found.items())
