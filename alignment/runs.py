"""Training runs in a background process (started from the Models page): the chat keeps
answering while `assistant train ...` runs as a child process with its own log.

Each run is a folder under ``data_dir/runs/<id>/`` (its files: :mod:`assistant.run_records`).
A run whose process is gone without a result died (killed, out of memory in the kernel);
nothing of it was registered, since registration is the last step of a run.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

from alignment import memory
from alignment.errors import RunWontFit
from assistant import run_records
from assistant.login.auth import TOKEN_ENV, User, issue_token
from assistant.config import Settings
from assistant.errors import AssistantError
from assistant.run_records import LOG, PROGRESS, RESULT, RUN, Run, finish, process_alive, write_json
from assistant.run_records import read_json as _read

# Re-exported: the trainer (``--run-dir``), the Models page and the tests use them from here.
__all__ = ["LOG", "PROGRESS", "RESULT", "RUN", "Run", "cancel", "finish", "list_runs", "load",
           "start", "write_json"]

log = logging.getLogger(__name__)
#: Popen handles of the runs this process started (polled so that they are reaped).
_children: dict[str, subprocess.Popen] = {}
#: Who queued the runs that wait (a child logs in with a token issued when it starts).
_users: dict[str, User | None] = {}
#: Held while the queue is read and changed (every browser session is a thread of the app).
_lock = threading.RLock()


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


def start(settings: Settings, command: list[str], kind: str, user: User | None = None,
          sizes: Mapping[str, Any] | None = None) -> Run:
    """Queue ``assistant <command...> --run-dir <folder>``, run as a child process (in its own
    session, so that stopping the app does not kill it and it can be cancelled whole),
    logged in as ``user`` when login is on.

    Runs are heavy (3-10 GB each with the embedded model, by the tokens of a batch): at
    most ``settings.max_concurrent_runs`` run at once, the others wait in the queue, oldest
    first. A run that would not fit in the free memory (:mod:`alignment.memory`, from the
    training kind and its TRL ``sizes``: batch size, max length) raises
    :class:`RunWontFit` before anything is written."""
    estimate = memory.run_estimate(settings, kind, sizes)
    with _lock:
        running = [r for r in _scan(settings) if r.status == "running"]
        _check_memory(estimate, queued=len(running) >= settings.max_concurrent_runs)
        run_id = f"{time.strftime('%Y%m%d-%H%M%S')}-{kind}-{uuid.uuid4().hex[:4]}"
        path = settings.runs_dir / run_id
        path.mkdir(parents=True)
        _users[run_id] = user
        write_json(path / RUN, {"id": run_id, "kind": kind, "args": command, "pid": 0,
                                "queued": time.time(), "user": user.name if user else None,
                                "memory": asdict(estimate) if estimate else None,
                                # for run_records, below alignment: a died run's message
                                "memory_need": estimate.need if estimate else None})
    promote(settings)
    return load(path)


def _check_memory(estimate: memory.Estimate | None, queued: bool) -> None:
    """A run that starts now must fit in the free memory; a queued one (checked again when
    it starts) at least in the machine's memory."""
    free = memory.total() if queued else memory.available()
    if estimate is not None and free is not None and estimate.need > free:
        raise RunWontFit(estimate, free, "on this machine in all" if queued else "now")


def _queued_estimate(settings: Settings, meta: dict) -> memory.Estimate | None:
    """The estimate a queued run was given (a run queued before estimates were kept: its
    kind's, at its defaults)."""
    kept = meta.get("memory")
    if isinstance(kept, dict):
        try:
            return memory.Estimate(**kept)
        except TypeError:
            pass
    return memory.run_estimate(settings, meta.get("kind"))


def promote(settings: Settings) -> None:
    """Start queued runs while fewer than ``max_concurrent_runs`` run (called when a run is
    queued, when one ends, and whenever the runs are listed: after a restart too)."""
    with _lock:
        listed = _scan(settings)
        slots = settings.max_concurrent_runs - sum(r.status == "running" for r in listed)
        queued = sorted((r for r in listed if r.status == "queued"), key=lambda r: r.queued or 0)
        for run in queued[:max(0, slots)]:
            try:
                _check_memory(_queued_estimate(settings, _read(run.path / RUN)), queued=False)
            except RunWontFit as err:
                finish(run.path, "failed", error=str(err))
                continue
            _launch(settings, run)


def _launch(settings: Settings, run: Run) -> None:
    meta = _read(run.path / RUN)
    user = _users.pop(run.id, None)
    if user is None and meta.get("user"):  # queued before the app restarted
        user = _lookup_user(settings, meta["user"])
    try:
        with open(run.path / LOG, "ab") as out:
            proc = subprocess.Popen(
                _argv(run.args, run.path), stdout=out, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, env=_child_env(settings, user), start_new_session=True,
            )
    except OSError as err:
        finish(run.path, "failed", error=f"Could not start the process: {err}")
        return
    _children[run.id] = proc
    meta.update(pid=proc.pid, started=time.time())
    write_json(run.path / RUN, meta)
    # Reap the child as soon as it exits (a run that fails while nobody looks at the Runs
    # panel would otherwise stay a zombie of the app until it restarts), then start the
    # next queued run.
    threading.Thread(target=_wait_then_next, args=(settings, proc), name=f"reap-{run.id}",
                     daemon=True).start()


def _argv(command: list[str], path: Path) -> list[str]:
    return [sys.executable, "-m", "assistant.cli", *command, "--run-dir", str(path.resolve())]


def _wait_then_next(settings: Settings, proc: subprocess.Popen) -> None:
    proc.wait()
    try:
        promote(settings)
    except Exception:  # a thread has no one to raise to: log it, the next listing retries
        log.exception("Could not start the next queued run")


def _lookup_user(settings: Settings, name: str) -> User | None:
    from assistant.login.auth import UserStore
    from assistant.bootstrap import open_database

    db = open_database(settings)
    try:
        return UserStore(db).get(name)
    except AssistantError:
        return None
    finally:
        db.dispose()


def _alive(run_id: str, pid: int) -> bool:
    proc = _children.get(run_id)
    if proc is not None:
        return proc.poll() is None  # also reaps it
    return process_alive(run_id, pid)


def load(path: Path) -> Run:
    return run_records.load(path, _alive)


def list_runs(settings: Settings) -> list[Run]:
    promote(settings)
    return _scan(settings)


def _scan(settings: Settings) -> list[Run]:
    root = settings.runs_dir
    if not root.is_dir():
        return []
    listed = [load(p) for p in root.iterdir() if (p / RUN).is_file()]
    # Newest first; ids name the second only, so two runs queued in one second sort by time.
    return sorted(listed, key=lambda r: (r.queued or r.started, r.id), reverse=True)


def cancel(run: Run) -> None:
    if run.status == "queued":
        with _lock:  # not started meanwhile: promote() holds the lock while it starts runs
            if not _read(run.path / RUN).get("pid"):
                finish(run.path, "cancelled", error="Cancelled by the user before it started.")
                return
        run = load(run.path)
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
