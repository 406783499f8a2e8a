"""Background runs (alignment/runs.py): reaping, the queue, the memory check."""

from __future__ import annotations

import time
from pathlib import Path

from alignment import runs


def wait_for(what: str, check, timeout: float = 60.0):  # noqa: ANN001, ANN201
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := check():
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def zombie_or_alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").exists()
    except OSError:
        return False


def test_a_failed_run_is_reaped_without_anyone_looking(settings):
    # The CLI refuses an unknown command at once (exit status 2): the run ends without a result.
    run = runs.start(settings, ["no-such-command"], "dpo")
    # Nothing polls the run (no page lists it): the process must still not stay a zombie.
    wait_for("the child to be reaped", lambda: not zombie_or_alive(run.pid))
    assert runs.load(run.path).status == "died"

