"""Whether a process is still running (Linux), for whoever left a pid behind: background
training runs, interrupted writes, an interrupted restore; and which processes run a given
command, with when they started (``assistant doctor`` looks for training in progress)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path


def pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a killed child that nobody has reaped yet is a zombie: dead for our purposes
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def started_at(pid: int) -> float | None:
    """When process ``pid`` started (epoch seconds; Linux)."""
    try:
        ticks = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
        boot = next(int(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                    if line.startswith("btime "))
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return None


def processes_with_arg(arg: str) -> Iterator[tuple[int, list[str], dict[str, str], Path]]:
    """(pid, argv, environment, cwd) of the other processes this user may look at whose
    command line has the argument ``arg`` (Linux)."""
    proc = Path("/proc")
    if not proc.is_dir():
        return
    for entry in proc.iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            argv = entry.joinpath("cmdline").read_bytes().decode(errors="replace").split("\0")
            if arg not in argv:
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
