"""Parse an upload in a child process with an address-space and a CPU limit.

:func:`parse_isolated` hands the file to a fresh ``python -m assistant.documents.parse_worker``
process, which sets ``RLIMIT_AS`` and ``RLIMIT_CPU`` (the standard library's ``resource``)
before reading the file, parses it within the budgets of :mod:`assistant.documents.parsing`, and
writes the sections back as JSON. A parser bug or a file that slips past the budgets then
ends that process only: the app gets a one-line refusal and carries on. The parent also
kills the child when it overruns the time budget.

A child parses one file after another (its CPU limit is set anew for each), so that the
interpreter start and the parser imports (about a second, several on a busy machine) are
paid once, not per upload; any failure of a child ends it, and a fresh one takes the next
file. Up to MAX_IDLE children wait for the next uploads; each is replaced after MAX_FILES.

Only JSON comes back from the child (never a pickle): a child taken over through a parser
bug could otherwise run code in the app. Where ``resource`` is missing (Windows) or
``ASSISTANT_RETRIEVAL__PARSE__ISOLATE=false``, parsing runs in-process, still within the
budgets.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import selectors
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import IO

from assistant.config import ParseLimits
from assistant.errors import (
    CorruptFile,
    DocumentError,
    EmptyFile,
    EncryptedFile,
    NoExtractableText,
    OverBudget,
    UnsupportedFile,
)
from assistant.documents.parsing import ParsedDocument, Section, parse_document, safe_filename

try:
    import resource
except ImportError:  # pragma: no cover - not on Windows
    resource = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

#: Seconds the parent waits past the time budget (the child stops itself at the budget).
GRACE_S = 10.0
#: CPU seconds the child may spend beyond the time budget (its start and its reply).
_CPU_SLACK_S = 10
_ERRORS: dict[str, type[DocumentError]] = {
    cls.__name__: cls
    for cls in (CorruptFile, EmptyFile, EncryptedFile, NoExtractableText, UnsupportedFile)
}
_MB = 1024 * 1024


def parse_isolated(name: str, data: bytes, limits: ParseLimits) -> ParsedDocument:
    """:func:`~assistant.documents.parsing.parse_document` in a child process under ``limits``."""
    if not limits.isolate or resource is None:
        return parse_document(name, data, limits)
    safe = safe_filename(name)
    data = bytes(data)
    job = json.dumps({"name": name, "size": len(data), "limits": limits.model_dump()})
    worker = _pool.take()
    try:
        reply = worker.ask(job.encode() + b"\n", data, limits.max_seconds + GRACE_S)
    except TimeoutError:
        worker.kill()
        raise _over_time(safe, limits) from None
    except (EOFError, OSError):
        status, err = worker.end()
        return _result(safe, limits, status, None, err)
    _pool.give_back(worker)
    return _result(safe, limits, 0, reply, b"")


def _result(
    safe: str, limits: ParseLimits, returncode: int, out: bytes | None, err: bytes
) -> ParsedDocument:
    reply = None
    if out is not None:
        try:
            reply = json.loads(out)
        except ValueError:
            reply = None
    if reply is None:
        tail = err.decode("utf-8", "replace").strip().splitlines()[-3:]
        log.warning("Parsing %s ended with status %s: %s", safe, returncode, " | ".join(tail))
        if returncode == -signal.SIGXCPU:
            raise _over_time(safe, limits)
        if returncode == 3 or "MemoryError" in " ".join(tail):
            raise OverBudget(
                safe, "parsing it needed more memory than allowed",
                f"{limits.max_memory_mb:,} MB of memory", "max_memory_mb",
            )
        raise CorruptFile(
            safe, f"could not be parsed: the parser stopped (status {returncode}); it may be "
            "damaged, or made to crash parsers: export it again or convert it to another format",
        )
    if "error" in reply:
        e = reply["error"]
        if e["type"] == "OverBudget":
            raise OverBudget(e["filename"], e["found"], e["budget"], e["setting"])
        cls = _ERRORS.get(e["type"], CorruptFile)
        raise cls(e["filename"], e["reason"])
    doc = reply["document"]
    return ParsedDocument(
        name=doc["name"], kind=doc["kind"],
        sections=[Section(text, page, heading) for text, page, heading in doc["sections"]],
    )


def _over_time(safe: str, limits: ParseLimits) -> OverBudget:
    return OverBudget(
        safe, f"parsing took longer than {limits.max_seconds:g} s",
        f"{limits.max_seconds:g} s", "max_seconds",
    )


class _Worker:
    """One child process, parsing one file after another until it fails or has served
    MAX_FILES files (its limits are set again for each file)."""

    def __init__(self) -> None:
        self.errors = tempfile.TemporaryFile()  # not a pipe: a chatty parser cannot block
        self.proc = _start(self.errors)
        self.files = 0

    def alive(self) -> bool:
        return self.proc.poll() is None

    def ask(self, header: bytes, data: bytes, timeout: float) -> bytes:
        """Send a file, return the reply; TimeoutError past ``timeout`` seconds, EOFError or
        OSError when the child ended."""
        self.files += 1
        deadline = time.monotonic() + timeout
        stdin = self.proc.stdin
        view = memoryview(header + data)
        while view:
            view = view[stdin.write(view[: 1 << 20]) or 0:]
        stdin.flush()
        fd = self.proc.stdout.fileno()
        buf, need = bytearray(), None
        with selectors.DefaultSelector() as sel:
            sel.register(fd, selectors.EVENT_READ)
            while True:
                if need is None and b"\n" in buf:
                    line, _, rest = bytes(buf).partition(b"\n")
                    if not line.isdigit():
                        raise EOFError  # not our protocol: treat the child as broken
                    need, buf = int(line), bytearray(rest)
                if need is not None and len(buf) >= need:
                    return bytes(buf[:need])
                left = deadline - time.monotonic()
                if left <= 0 or not sel.select(left):
                    raise TimeoutError
                piece = os.read(fd, 1 << 20)
                if not piece:
                    raise EOFError
                buf += piece

    def end(self) -> tuple[int, bytes]:
        """Wait for the child that ended; its status and the tail of what it wrote to stderr."""
        try:
            status = self.proc.wait(timeout=GRACE_S)
        except subprocess.TimeoutExpired:
            self.kill()
            status = self.proc.returncode
        self.errors.seek(0, os.SEEK_END)
        self.errors.seek(max(0, self.errors.tell() - 4096))
        tail = self.errors.read()
        self._close()
        return status, tail

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self._close()

    def _close(self) -> None:
        for stream in (self.proc.stdin, self.proc.stdout, self.errors):
            try:
                stream.close()
            except OSError:
                pass


#: Files one child parses before it is replaced (what a parser leaks stays bounded).
MAX_FILES = 50
#: Idle children kept for the next uploads.
MAX_IDLE = 2


class _Pool:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._idle: list[_Worker] = []

    def take(self) -> _Worker:
        with self._lock:
            while self._idle:
                worker = self._idle.pop()
                if worker.alive():
                    return worker
                worker.kill()
        return _Worker()

    def give_back(self, worker: _Worker) -> None:
        with self._lock:
            if worker.files < MAX_FILES and len(self._idle) < MAX_IDLE and worker.alive():
                self._idle.append(worker)
                return
        worker.kill()

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for worker in idle:
            worker.kill()


def _start(errors: IO[bytes]) -> subprocess.Popen:
    root = str(Path(__file__).resolve().parents[2])  # the folder holding the assistant package
    # Nothing of the app's own settings or secrets (ASSISTANT_PASSWORD, a token) is the
    # parser's business: a child taken over through a parser bug finds none of them.
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASSISTANT_")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    return subprocess.Popen(
        [sys.executable, "-m", "assistant.documents.parse_worker"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=errors,
        env=env, close_fds=True, bufsize=0,
    )


_pool = _Pool()
atexit.register(_pool.close)


# -- the child ---------------------------------------------------------------------------------
def _limit(limits: ParseLimits) -> None:
    cpu_used = resource.getrusage(resource.RUSAGE_SELF)
    cpu = int(cpu_used.ru_utime + cpu_used.ru_stime + limits.max_seconds + _CPU_SLACK_S)
    _, hard_cpu = resource.getrlimit(resource.RLIMIT_CPU)
    if hard_cpu != resource.RLIM_INFINITY:
        cpu = min(cpu, hard_cpu)
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, hard_cpu))
    memory = limits.max_memory_mb * _MB
    _, hard_as = resource.getrlimit(resource.RLIMIT_AS)
    if hard_as != resource.RLIM_INFINITY:
        memory = min(memory, hard_as)
    resource.setrlimit(resource.RLIMIT_AS, (memory, hard_as))


def _read_exactly(stream: IO[bytes], size: int) -> bytes:
    data = stream.read(size)
    if len(data) != size:
        raise EOFError
    return data


def _serve() -> int:
    """Parse files from stdin until it closes: a JSON header line, then the file's bytes;
    each reply is its length in bytes on a line, then JSON."""
    stdin = sys.stdin.buffer
    # Replies go to the real stdout; anything a library prints goes to stderr instead.
    stdout = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    while header := stdin.readline():
        job = json.loads(header)
        limits = ParseLimits(**job["limits"])
        _limit(limits)
        data = _read_exactly(stdin, job["size"])
        try:
            reply = _parse(job["name"], data, limits)
        except MemoryError:
            return 3
        out = json.dumps(reply, ensure_ascii=False).encode("utf-8", "surrogatepass")
        stdout.write(b"%d\n" % len(out) + out)
        stdout.flush()
    return 0


def _parse(name: str, data: bytes, limits: ParseLimits) -> dict:
    try:
        doc = parse_document(name, data, limits)
    except OverBudget as err:
        return {"error": {"type": "OverBudget", "filename": err.filename, "found": err.found,
                          "budget": err.limit, "setting": err.budget}}
    except DocumentError as err:
        return {"error": {"type": type(err).__name__, "filename": err.filename,
                          "reason": err.reason}}
    return {"document": {
        "name": doc.name, "kind": doc.kind,
        "sections": [[s.text, s.page, s.heading] for s in doc.sections],
    }}


if __name__ == "__main__":
    status = _serve()
    # Skip the interpreter's teardown of the parser libraries (most of a second on a busy
    # machine): nothing is left to clean up.
    os._exit(status)
