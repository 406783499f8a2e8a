"""Training runs in a background process (started from the Models page): the chat keeps
answering while `assistant train ...` runs as a child process with its own log.

Each run is a folder under ``data_dir/runs/<id>/``: ``run.json`` (what was started, pid),
``progress.json`` (written by the trainer callback as it goes), ``train.log`` (the child's
output) and ``result.json`` (written by the child when it ends: the version or the error).
A run whose process is gone without a result died (killed, out of memory in the kernel);
nothing of it was registered, since registration is the last step of a run.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from assistant.auth import TOKEN_ENV, User, issue_token
from assistant.config import Settings
from assistant.doctor import pid_alive

RUN, PROGRESS, RESULT, LOG = "run.json", "progress.json", "result.json", "train.log"
#: Popen handles of the runs this process started (polled so that they are reaped).
_children: dict[str, subprocess.Popen] = {}


@dataclass
class Run:
    id: str
    path: Path
    kind: str
    args: list[str]
    pid: int
    started: float
    status: str  # running | done | failed | died | cancelled
    version: str | None = None
    error: str | None = None
    ended: float | None = None
    progress: dict[str, Any] = field(default_factory=dict)

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
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(value, indent=1, default=str))
    os.replace(tmp, path)


def _child_env(settings: Settings, user: User | None = None) -> dict[str, str]:
    env = dict(os.environ)
    # Login on: the child logs in as the app's admin with a short-lived token, never with
    # a password (the app does not keep one).
    env.pop("ASSISTANT_PASSWORD", None)
    env.pop(TOKEN_ENV, None)
    if user is not None:
        env[TOKEN_ENV] = issue_token(Path(settings.data_dir), user)
    env["ASSISTANT_DATA_DIR"] = str(Path(settings.data_dir).resolve())
    env["ASSISTANT_MODEL"] = settings.model
    env["ASSISTANT_MODEL_CACHE_DIR"] = str(settings.resolved_model_cache_dir.resolve())
    if settings.database_url:
        env["ASSISTANT_DATABASE_URL"] = settings.database_url
    env.setdefault("HF_HUB_OFFLINE", "1")
    env["PYTHONUNBUFFERED"] = "1"
    return env


def start(settings: Settings, command: list[str], kind: str, user: User | None = None) -> Run:
    """Start ``assistant <command...> --run-dir <folder>`` as a child process (in its own
    session, so that stopping the app does not kill it and it can be cancelled whole),
    logged in as ``user`` when login is on."""
    run_id = f"{time.strftime('%Y%m%d-%H%M%S')}-{kind}-{uuid.uuid4().hex[:4]}"
    path = settings.runs_dir / run_id
    path.mkdir(parents=True)
    argv = [sys.executable, "-m", "assistant.cli", *command, "--run-dir", str(path.resolve())]
    with open(path / LOG, "wb") as log:
        proc = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=_child_env(settings, user), start_new_session=True,
        )
    _children[run_id] = proc
    # Reap the child as soon as it exits: a run that fails (or ends) while nobody looks at
    # the Runs panel would otherwise stay a zombie of the app until the app restarts.
    threading.Thread(target=proc.wait, name=f"reap-{run_id}", daemon=True).start()
    write_json(path / RUN, {"id": run_id, "kind": kind, "args": command, "pid": proc.pid,
                            "started": time.time()})
    return load(path)


def finish(run_dir: Path, status: str, version: str | None = None, error: str | None = None) -> None:
    """Called by the child (`--run-dir`) when it ends."""
    write_json(Path(run_dir) / RESULT, {"status": status, "version": version, "error": error,
                                        "ended": time.time()})


def _alive(run_id: str, pid: int) -> bool:
    proc = _children.get(run_id)
    if proc is not None:
        return proc.poll() is None  # also reaps it
    if not pid_alive(pid):
        return False
    try:  # a reused pid is not our run
        return run_id in Path(f"/proc/{pid}/cmdline").read_text(errors="replace")
    except OSError:
        return True


def _read(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def load(path: Path) -> Run:
    meta, result = _read(path / RUN), _read(path / RESULT)
    run = Run(
        id=meta.get("id", path.name), path=path, kind=meta.get("kind", "?"),
        args=meta.get("args", []), pid=int(meta.get("pid", 0)), started=meta.get("started", 0.0),
        status="running", progress=_read(path / PROGRESS),
    )
    if result:
        run.status, run.version, run.error = result["status"], result.get("version"), result.get("error")
        run.ended = result.get("ended")
    elif not _alive(run.id, run.pid):
        run.status = "died"
        run.error = "The training process ended without a result (killed, or out of memory)."
    return run


def list_runs(settings: Settings) -> list[Run]:
    root = settings.runs_dir
    if not root.is_dir():
        return []
    return [load(p) for p in sorted(root.iterdir(), reverse=True) if (p / RUN).is_file()]


def cancel(run: Run) -> None:
    if run.status != "running":
        return
    try:
        os.killpg(run.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    proc = _children.get(run.id)
    if proc is not None:
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(run.pid, signal.SIGKILL)
            proc.wait()
    if not (run.path / RESULT).exists():
        finish(run.path, "cancelled", error="Cancelled by the user.")
