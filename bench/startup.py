"""What a user waits for when the app starts: a cold start (fresh data dir, nothing
converted yet) and a warm restart (the same data dir, a new server process).

    HF_HUB_OFFLINE=1 .venv/bin/python bench/startup.py [--data /tmp/startup-bench]

For each start: ``streamlit run ui/app.py`` (as ``make run`` does, after ``assistant db
upgrade``), then Debian's chromium (``/usr/bin/chromium``, driven by Playwright) opens the
page as soon as the server answers its health check. Reported, from the moment the page
is requested: the first text on the page (how long it stayed blank), and the chat box
(the page usable). The texts seen on the way are listed with their times, so the phases
show. Numbers vary with the machine's load: run it on an idle machine to quote them.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


def healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def one_start(browser, data: Path, port: int, root: Path = ROOT) -> dict:  # noqa: ANN001
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASSISTANT_")}
    env |= {"ASSISTANT_DATA_DIR": str(data), "HF_HUB_OFFLINE": "1"}
    subprocess.run([str(BIN / "assistant"), "db", "upgrade"], env=env, cwd=root, check=True,
                   capture_output=True)
    url = f"http://localhost:{port}"
    t0 = time.monotonic()
    proc = subprocess.Popen(
        [str(BIN / "streamlit"), "run", "ui/app.py", "--server.headless", "true",
         "--server.port", str(port), "--server.fileWatcherType", "none"],
        cwd=root, env=env | {"PYTHONPATH": str(root)},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        while not healthy(url):
            time.sleep(0.1)
        server_up = time.monotonic() - t0
        page = browser.new_page()
        t1 = time.monotonic()
        page.goto(url)
        seen: list[tuple[float, str]] = []
        first_text = ready = None
        while ready is None and time.monotonic() - t1 < 600:
            text = " ".join(page.locator("[data-testid='stMain']").all_inner_texts()).strip()
            now = time.monotonic() - t1
            if text and first_text is None:
                first_text = now
            line = text.splitlines()[0][:80] if text else ""
            if line and (not seen or seen[-1][1] != line):
                seen.append((now, line))
            if page.locator("[data-testid='stChatInput'] textarea").count():
                ready = now
            time.sleep(0.1)
        page.close()
        return {"server_up_s": server_up, "first_text_s": first_text, "chat_ready_s": ready,
                "phases": seen}
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, default=Path("/tmp/startup-bench"))
    ap.add_argument("--port", type=int, default=8599)
    ap.add_argument("--root", type=Path, default=ROOT,
                    help="The checkout whose app is started (to compare with another version).")
    args = ap.parse_args()
    shutil.rmtree(args.data, ignore_errors=True)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        for label in ("cold", "warm"):
            r = one_start(browser, args.data, args.port, args.root)
            print(f"{label}: server up {r['server_up_s']:.1f} s; page blank for "
                  f"{r['first_text_s']:.1f} s; chat box after {r['chat_ready_s']:.1f} s")
            for t, line in r["phases"]:
                print(f"    {t:6.1f} s  {line}")
        browser.close()


if __name__ == "__main__":
    main()
