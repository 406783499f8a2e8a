"""Logins that last across reloads, in a real browser: ``streamlit run ui/server.py`` (the
app plus the route that sets the HttpOnly session cookie), with login on.

    .venv/bin/python -m pytest -q tests/e2e/test_sessions.py
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from urllib.parse import urlparse

import pytest
from playwright.sync_api import Page, expect

from tests.e2e.conftest import (
    APP_ENV,
    BIN,
    LOGIN_PASSWORD,
    ROOT,
    START_TIMEOUT_S,
    AppServer,
    _free_port,
    _healthy,
    _stop,
)

pytestmark = pytest.mark.slow
expect.set_options(timeout=30_000)


@pytest.fixture(scope="module")
def session_server(tmp_path_factory, model_cache) -> Iterator[AppServer]:
    root = tmp_path_factory.mktemp("e2e-sessions")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASSISTANT_")}
    env |= APP_ENV | {"ASSISTANT_DATA_DIR": str(root / "data"),
                      "ASSISTANT_MODEL_CACHE_DIR": str(model_cache),
                      "ASSISTANT_AUTH": "password"}
    for args in (["db", "upgrade"], ["users", "add", "root", "--role", "admin"]):
        done = subprocess.run([str(BIN / "assistant"), *args], cwd=ROOT, capture_output=True,
                              text=True, timeout=120,
                              env=env | {"ASSISTANT_NEW_PASSWORD": LOGIN_PASSWORD})
        assert done.returncode == 0, done.stdout + done.stderr
    port = _free_port()
    url = f"http://localhost:{port}"
    log = root / "streamlit.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(BIN / "streamlit"), "run", "ui/server.py", "--server.headless", "true",
             "--server.port", str(port), "--browser.gatherUsageStats", "false",
             "--server.fileWatcherType", "none"],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    server = AppServer(url, log, root / "data", proc)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not _healthy(url):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"streamlit did not start:\n{server.log_tail()}")
            time.sleep(0.2)
        yield server
    finally:
        _stop(proc)


def log_in(page: Page, password: str = LOGIN_PASSWORD) -> None:
    expect(page.get_by_role("heading", name="Log in", level=1)).to_be_visible()
    page.get_by_role("textbox", name="User name").fill("root")
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()


def logged_in(page: Page) -> None:
    expect(page.get_by_role("button", name="Log out")).to_be_visible()


def test_a_login_lasts_across_reloads_until_logout_or_expiry(browser, session_server):
    requests: list[str] = []
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.on("request", lambda request: requests.append(request.url))
    try:
        page = context.new_page()
        page.goto(session_server.url)
        log_in(page, "not the password")
        expect(page.get_by_test_id("stAlertContentError")).to_contain_text(
            "Wrong user name or password")
        log_in(page)
        logged_in(page)
        [cookie] = [c for c in context.cookies() if c["name"] == "assistant_session"]
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
        assert page.evaluate("document.cookie").find("assistant_session") == -1  # not for scripts

        page.reload()  # a new Streamlit session: still logged in
        logged_in(page)
        second = context.new_page()  # another tab of the same browser
        second.goto(session_server.url)
        logged_in(second)

        page.get_by_role("button", name="Log out").click()
        expect(page.get_by_role("heading", name="Log in", level=1)).to_be_visible()
        second.reload()  # the session is revoked on the server, not only in the first tab
        expect(second.get_by_role("heading", name="Log in", level=1)).to_be_visible()

        log_in(second)
        logged_in(second)
        with sqlite3.connect(session_server.data_dir / "assistant.db") as db:
            db.execute("UPDATE login_sessions SET expires_at = '2000-01-01 00:00:00'")
        second.reload()
        expect(second.get_by_role("heading", name="Log in", level=1)).to_be_visible()
        expect(second.get_by_test_id("stAlertContentWarning")).to_contain_text("has ended")

        outside = [u for u in requests if urlparse(u).scheme not in ("data", "blob")
                   and urlparse(u).hostname not in ("localhost", "127.0.0.1")]
        assert requests and not outside, outside
    finally:
        context.close()
