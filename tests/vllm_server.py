"""A real vLLM on 127.0.0.1 for the tests (registered in conftest.py): the CPU build that
``make vllm`` installs in its own venv, started the way the product starts it
(:mod:`assistant.engines.vllm_launch`), serving the embedded model's checkpoint, with LoRA
and runtime adapter loading on. Started once per run (~40 s on 2 cores) and stopped by the
last module that uses it; idle, it uses no CPU."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from assistant.config import Settings, VllmSettings
from tests.llama_server import free_port
from tests.needs import missing

#: vLLM's venv; the Makefile exports its Python (make vllm installs it).
PYTHON = Path(os.environ.get("ASSISTANT_VLLM__PYTHON")
              or Path(__file__).resolve().parents[1] / ".venv-vllm/bin/python").absolute()
#: The base model's name on the server (what the product serves the embedded model as).
BASE = "smollm2"


def require_vllm() -> None:
    if not PYTHON.exists():
        missing(f"vLLM is not installed at {PYTHON} (make vllm installs it)")


class VllmServer:
    """A vLLM server that tests can stop, kill mid-answer and start again (with or without
    runtime adapter loading)."""

    def __init__(self, checkpoint: Path, folder: Path, **vllm) -> None:
        self.settings = Settings(data_dir=folder, vllm=VllmSettings(python=PYTHON, **vllm))
        self.checkpoint = checkpoint
        self.log = folder / "vllm.log"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.proc: subprocess.Popen | None = None
        self.runtime_lora = True

    def start(self, runtime_lora: bool = True) -> None:
        from assistant.engines import vllm_launch

        self.proc, spec = vllm_launch.start(self.settings, self.log, model=str(self.checkpoint),
                                            port=self.port, runtime_lora=runtime_lora)
        assert spec.url == self.url and spec.model == BASE
        self.runtime_lora = runtime_lora

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        from assistant.engines import vllm_launch

        if self.proc is not None:
            vllm_launch.stop(self.proc)

    def kill(self) -> None:
        """SIGKILL, as a crash or the OOM killer would: no goodbye to open streams."""
        if self.running():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)

    def ensure(self, runtime_lora: bool = True) -> VllmServer:
        """Running, in the configuration asked for (restarted when a test left it otherwise)."""
        if self.running() and self.runtime_lora == runtime_lora:
            return self
        self.stop()
        self.start(runtime_lora)
        return self


@pytest.fixture(scope="session")
def vllm_session(embedded_checkpoint, tmp_path_factory) -> Iterator[VllmServer]:
    require_vllm()
    server = VllmServer(embedded_checkpoint, tmp_path_factory.mktemp("vllm"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def vllm_server(vllm_session) -> VllmServer:
    """The run's vLLM, running with runtime adapter loading on."""
    return vllm_session.ensure(runtime_lora=True)
