"""Training runs in a background process (started from the Models page): the chat keeps
answering while `assistant train ...` runs as a child process with its own log.

Each run is a folder under ``data_dir/runs/<id>/`` (its files: :mod:`assistant.run_records`).
A run whose process is gone without a result died (killed, out of memory in the kernel);
nothing of it was registered, since registration is the last step of a run.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

from assistant import run_records
from assistant.auth import TOKEN_ENV, User, issue_token
from assistant.config import Settings
from assistant.run_records import LOG, PROGRESS, RESULT, RUN, Run, finish, process_alive, write_json

# Re-exported: the trainer (``--run-dir``), the Models page and the tests use them from here.
__all__ = ["LOG", "PROGRESS", "RESULT", "RUN", "Run", "cancel", "finish", "list_runs", "load",
           "start", "write_json"]

#: Popen handles of the runs this process started (polled so that they are reaped).
_children: dict[str, subprocess.Popen] = {}


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
    write_json(path / RUN, {"id": run_id, "kind": kind, "args": command, "pid": proc.pid,
                            "started": time.time()})
    return load(path)


def _alive(run_id: str, pid: int) -> bool:
    proc = _children.get(run_id)
    if proc is not None:
        return proc.poll() is None  # also reaps it
    return process_alive(run_id, pid)


def load(path: Path) -> Run:
    return run_records.load(path, _alive)


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
