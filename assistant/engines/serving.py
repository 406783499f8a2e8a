"""Waiting for a model server started as a child process (vLLM, llama.cpp's server) until
it answers, with the reason when it does not: it exited, or it took too long. The one wait
the launcher, the tests and the benchmarks share."""

from __future__ import annotations

import subprocess
import time
import urllib.request
from pathlib import Path

from assistant.errors import EngineUnavailable

#: How often the server is asked while it starts.
POLL_S = 0.5


class ServerDidNotStart(EngineUnavailable):
    """The server exited, or did not answer in time; the message ends with its log."""


def wait_until_serving(url: str, proc: subprocess.Popen, *, log_file: Path | None = None,
                       timeout: float = 600.0, name: str = "The model server",
                       error: type[ServerDidNotStart] = ServerDidNotStart) -> None:
    """Until the OpenAI-compatible server at ``url`` (ending in ``/v1``) answers
    ``/models``; ``error`` (naming ``name``, how it was started and the end of its log) when
    ``proc`` exits first or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None or time.monotonic() > deadline:
            why = (f"exited with status {proc.returncode}" if proc.returncode is not None
                   else f"did not answer within {timeout:.0f} s")
            tail = log_file.read_text(errors="replace")[-3000:] if log_file and log_file.is_file() else ""
            args = proc.args if isinstance(proc.args, str) else " ".join(map(str, proc.args))
            raise error(f"{name} {why} (started as: {args}).\n{tail}")
        try:
            with urllib.request.urlopen(f"{url}/models", timeout=2):
                return
        except OSError:
            time.sleep(POLL_S)
