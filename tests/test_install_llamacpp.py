"""`make setup`'s llama.cpp step (scripts/install_llamacpp.sh) never fails setup: without a
compiler, or when the build fails, it says why and the app falls back to the transformers
engine (tests/test_engine_llamacpp.py checks the fallback)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "install_llamacpp.sh"


def fake_venv(root: Path, pip_exit: int) -> Path:
    """A venv whose python has no llama_cpp and whose pip exits with ``pip_exit``."""
    bin_dir = root / "venv" / "bin"
    bin_dir.mkdir(parents=True)
    for name, body in (("python", "exit 1"), ("pip", f"echo 'pip: build failed' >&2; exit {pip_exit}")):
        (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / name).chmod(0o755)
    return root / "venv"


def run(venv: Path, path: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": path}
    return subprocess.run([shutil.which("bash") or "/bin/bash", str(SCRIPT), str(venv)], env=env, capture_output=True,
                          text=True, timeout=60)


def test_without_a_compiler_setup_says_so_and_goes_on(tmp_path):
    # A PATH with the shell tools the script uses, but no cmake and no c++.
    tools = tmp_path / "tools"
    tools.mkdir()
    for tool in ("mktemp", "rm", "date", "tar", "cp", "mv", "mkdir", "dirname"):
        if (found := shutil.which(tool)):
            (tools / tool).symlink_to(found)
    done = run(fake_venv(tmp_path, 0), str(tools))
    assert done.returncode == 0
    assert "no C++ compiler or no cmake" in done.stderr and "transformers engine" in done.stderr


def test_a_failed_build_says_so_and_goes_on(tmp_path):
    if not (shutil.which("cmake") and shutil.which("c++")):
        return  # the compiler case above covers machines without one
    done = run(fake_venv(tmp_path, 1), os.environ["PATH"])
    assert done.returncode == 0
    assert "building llama-cpp-python failed" in done.stderr
    assert "pip: build failed" in done.stderr
