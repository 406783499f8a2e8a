"""A real OpenAI-compatible server on 127.0.0.1 for the tests: llama-cpp-python's own server
(started through ``python -m assistant.engines.llamacpp_server``, which picks the weight
layout that is safe on this CPU), serving the embedded GGUF under :data:`BASE` (and whatever
other models a test adds, e.g. a trained version under its name)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

from assistant.engines.serving import wait_until_serving

#: The name the server gives the embedded model.
BASE = "smollm2"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """llama-cpp-python's server with a config file, started and stopped by the tests."""

    def __init__(self, config: dict, log: Path) -> None:
        self.port = config["port"]
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.config = config
        self.log = log
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 180) -> None:
        path = self.log.parent / "server.json"
        path.write_text(json.dumps(self.config))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "assistant.engines.llamacpp_server", "--config_file", str(path)],
            stdout=open(self.log, "ab"), stderr=subprocess.STDOUT)
        wait_until_serving(self.url, self.proc, log_file=self.log, timeout=timeout, name="llama_cpp.server")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=30)


def embedded_server(folder: Path, *extra: dict, interrupt_requests: bool = False) -> Server:
    """A started server of the embedded model as :data:`BASE`, plus ``extra`` model entries
    (llama_cpp.server's config: ``model_alias``, ``lora_path``, ...; the embedded GGUF and the
    same options unless they say otherwise); logs in ``folder``. Skips (fails in CI) without
    llama-cpp-python. The caller stops it."""
    from assistant.engines.model_files import embedded_gguf
    from tests.engines import require_llama

    require_llama()
    model = {"model": str(embedded_gguf()), "n_ctx": 4096, "n_threads": 2, "verbose": False}
    # interrupt_requests off: on (its default), the server cuts a streaming answer short as
    # soon as another request arrives (compare mode sends two at once).
    config = {"host": "127.0.0.1", "port": free_port(), "interrupt_requests": interrupt_requests,
              "models": [{**model, "model_alias": BASE}, *({**model, **e} for e in extra)]}
    server = Server(config, folder / "server.log")
    server.start()
    return server
