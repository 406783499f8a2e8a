"""The browser tests' fixtures: the real app under ``streamlit run`` on a free localhost port,
and Debian's chromium driven by Playwright (``make test`` installs it; Playwright's own
browser download does not work here)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from tests.needs import missing

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent  # the venv's console scripts (streamlit, assistant)
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]
SCREENSHOTS = Path(os.environ.get("E2E_SCREENSHOTS") or Path(__file__).parent / "screenshots")
START_TIMEOUT_S = 60
# Short answers so that each takes seconds on 2 cores; greedy so that they are repeatable.
APP_ENV = {
    "HF_HUB_OFFLINE": "1",
    "ASSISTANT_GENERATION__MAX_NEW_TOKENS": "48",
    "ASSISTANT_GENERATION__TEMPERATURE": "0",
}


@dataclass
class AppServer:
    url: str
    log: Path
    data_dir: Path
    proc: subprocess.Popen

    def log_tail(self, chars: int = 6000) -> str:
        text = self.log.read_text(encoding="utf-8", errors="replace") if self.log.exists() else ""
        return text[-chars:] or "(the server logged nothing)"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def _stop(proc: subprocess.Popen) -> None:
    """Stop the server and everything it started (it leads its own process group)."""
    if proc.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


@contextmanager
def _serve(root: Path, model_cache: Path, extra_env: dict[str, str] | None = None,
           setup: list[list[str]] = (), setup_env: dict[str, str] | None = None,
           ) -> Iterator[AppServer]:
    """``streamlit run ui/app.py`` on a fresh data dir under ``root``, after ``assistant db
    upgrade`` (as ``make run`` does) and any ``setup`` commands (``assistant`` arguments,
    run with ``setup_env`` added)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASSISTANT_")}
    env |= APP_ENV | {
        "ASSISTANT_DATA_DIR": str(root / "data"),
        "ASSISTANT_MODEL_CACHE_DIR": str(model_cache),
    } | (extra_env or {})
    for args in (["db", "upgrade"], *setup):
        done = subprocess.run([str(BIN / "assistant"), *args], cwd=ROOT, env=env | (setup_env or {}),
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, f"assistant {' '.join(args)} failed:\n{done.stdout}{done.stderr}"

    port = _free_port()
    url = f"http://localhost:{port}"
    log = root / "streamlit.log"
    cmd = [
        str(BIN / "streamlit"), "run", "ui/app.py", "--server.headless", "true",
        "--server.port", str(port), "--browser.gatherUsageStats", "false",
        "--server.fileWatcherType", "none",  # nothing edits the code under test: save the CPU
    ]
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    server = AppServer(url, log, root / "data", proc)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not _healthy(url):
            if proc.poll() is not None:
                pytest.fail(f"streamlit exited with {proc.returncode}:\n{server.log_tail()}")
            if time.monotonic() > deadline:
                pytest.fail(f"streamlit not healthy after {START_TIMEOUT_S} s:\n{server.log_tail()}")
            time.sleep(0.2)
        yield server
    finally:
        _stop(proc)


@pytest.fixture(scope="session")
def app_server(tmp_path_factory, model_cache) -> Iterator[AppServer]:
    """The app as ``make run`` starts it: login off. The model cache is the test run's, so
    the GGUF conversion happens once per run, whichever test needs the model first."""
    with _serve(tmp_path_factory.mktemp("e2e"), model_cache) as server:
        yield server


#: The users of ``login_server`` (name, role); all have LOGIN_PASSWORD.
LOGIN_USERS = (("root", "admin"), ("alice", "user"), ("bob", "user"))
LOGIN_PASSWORD = "correct horse battery"


@pytest.fixture(scope="session")
def login_server(tmp_path_factory, model_cache) -> Iterator[AppServer]:
    """A second app with login on (ASSISTANT_AUTH=password) and three users, added with
    ``assistant users add`` as an admin would."""
    new = {"ASSISTANT_NEW_PASSWORD": LOGIN_PASSWORD}
    admin = {"ASSISTANT_USER": "root", "ASSISTANT_PASSWORD": LOGIN_PASSWORD}
    setup = [["users", "add", name, "--role", role] for name, role in LOGIN_USERS]
    with _serve(tmp_path_factory.mktemp("e2e-login"), model_cache, {"ASSISTANT_AUTH": "password"},
                setup, setup_env=new | admin) as server:
        yield server


@pytest.fixture(scope="session")
def browser():
    if not CHROMIUM.exists():
        missing(f"{CHROMIUM} is missing: `make test` installs Debian's chromium "
                "(apt-get install chromium chromium-driver)")
    from playwright.sync_api import sync_playwright

    pw = sync_playwright().start()
    try:
        b = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()
    finally:
        pw.stop()


@pytest.fixture(scope="session")
def screenshots() -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """On a failure, attach the server's log and save what each open page showed."""
    outcome = yield
    report = outcome.get_result()
    if not report.failed:
        return
    funcargs = getattr(item, "funcargs", {})
    for name in ("app_server", "login_server"):
        server = funcargs.get(name)
        if isinstance(server, AppServer):
            report.sections.append((f"{name} log (tail)", server.log_tail()))
    browser = funcargs.get("browser")
    if browser is not None and browser.is_connected():
        for i, context in enumerate(browser.contexts):
            for j, page in enumerate(context.pages):
                path = SCREENSHOTS / f"FAILED-{item.name}-{i}-{j}.png"
                try:
                    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
                    page.screenshot(path=path, full_page=True, timeout=5000)
                    report.sections.append(("screenshot at failure", str(path)))
                except Exception:  # noqa: BLE001 - a closed page: nothing to save
                    pass
