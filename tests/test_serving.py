"""The wait for a model server started as a child process: it returns once the server
answers, and says why when it does not (exited, too slow), with the end of its log."""

from __future__ import annotations

import subprocess
import sys

import pytest

from assistant.engines.serving import ServerDidNotStart, wait_until_serving
from tests.llama_server import free_port


def test_a_server_that_exits_is_named_with_its_status_and_log(tmp_path):
    log = tmp_path / "server.log"
    log.write_text("loading...\nerror: no such model file\n")
    proc = subprocess.Popen([sys.executable, "-c", "import sys; sys.exit(3)"])
    with pytest.raises(ServerDidNotStart, match=r"(?s)The model server exited with status 3 .*no such model file"):
        wait_until_serving(f"http://127.0.0.1:{free_port()}/v1", proc, log_file=log, timeout=30)


def test_a_server_that_never_answers_is_given_up_after_the_timeout(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        with pytest.raises(ServerDidNotStart, match="did not answer within 1 s"):
            wait_until_serving(f"http://127.0.0.1:{free_port()}/v1", proc, timeout=1, name="vLLM")
    finally:
        proc.kill()
        proc.wait()


def test_it_returns_once_the_server_answers(tmp_path):
    port = free_port()
    (tmp_path / "v1").mkdir()
    (tmp_path / "v1" / "models").write_text('{"data": []}')
    proc = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
                            cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until_serving(f"http://127.0.0.1:{port}/v1", proc, timeout=30)
        assert proc.poll() is None
    finally:
        proc.kill()
        proc.wait()
