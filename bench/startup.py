"""What a user waits for when the app starts: a cold start (fresh data dir, nothing
converted yet) and a warm restart (the same data dir, a new server process).

    HF_HUB_OFFLINE=1 .venv/bin/python bench/startup.py [--data /tmp/startup-bench] [--no-ask]

For each start: ``streamlit run ui/server.py`` (as ``make run`` does, after ``assistant db
upgrade``), then Debian's chromium (``/usr/bin/chromium``, driven by Playwright) opens the
page as soon as the server answers its health check. Reported, from the moment the server
process is started: the server's health check, the first text on the page (how long it
stayed blank), the chat box (the page usable) and, unless ``--no-ask``, the first streamed
word of an answer to a question typed as soon as the chat box appears (on the engine that
``make run`` uses, ``ASSISTANT_ENGINE`` or its default). The texts seen on the way are
listed with their times, so the phases show. Numbers vary with the machine's load: run it
on an idle machine to quote them.
"""

from __future__ import annotations

from assistant.cpu import report as cpu_report
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
QUESTION = "What is the capital of France?"
# The newest answer's own text, without the spinner's ("Reading the question…") or the stop
# button's.
ANSWER_TEXT = """() => {
  const msgs = document.querySelectorAll('[data-testid="stMainBlockContainer"] [data-testid="stChatMessage"]');
  if (msgs.length < 2) return '';
  const m = msgs[msgs.length - 1];
  const spinner = m.querySelector('[data-testid="stSpinner"]');
  return m.innerText.replace(spinner ? spinner.innerText : '', '')
                    .replace(/stop_circle|Stop/g, '').trim();
}"""


def healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def one_start(browser, data: Path, port: int, root: Path = ROOT,  # noqa: ANN001
              ask: bool = True) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASSISTANT_")}
    env |= {"ASSISTANT_DATA_DIR": str(data), "HF_HUB_OFFLINE": "1"}
    subprocess.run([str(BIN / "assistant"), "db", "upgrade"], env=env, cwd=root, check=True,
                   capture_output=True)
    url = f"http://localhost:{port}"
    if healthy(url):
        raise SystemExit(f"Something already answers on port {port} (an app left running?): "
                         "stop it or pass --port.")
    t0 = time.monotonic()
    proc = subprocess.Popen(
        [str(BIN / "streamlit"), "run", "ui/server.py", "--server.headless", "true",
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
        t1 = t0
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
        first_word = None
        if ask and ready is not None:
            box = page.locator("[data-testid='stChatInput'] textarea")
            box.fill(QUESTION)
            box.press("Enter")
            asked = time.monotonic() - t1
            while first_word is None and time.monotonic() - t1 < 900:
                if page.evaluate(ANSWER_TEXT):
                    first_word = time.monotonic() - t1
                time.sleep(0.05)
            seen.append((asked, f"(asked: {QUESTION})"))
        page.close()
        return {"server_up_s": server_up, "first_text_s": first_text, "chat_ready_s": ready,
                "first_word_s": first_word, "phases": seen}
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, default=Path("/tmp/startup-bench"))
    ap.add_argument("--port", type=int, default=8599)
    ap.add_argument("--root", type=Path, default=ROOT,
                    help="The checkout whose app is started (to compare with another version).")
    ap.add_argument("--no-ask", action="store_true",
                    help="Stop at the chat box; do not ask a question.")
    args = ap.parse_args()
    print(cpu_report(), flush=True)  # every figure names its CPU
    shutil.rmtree(args.data, ignore_errors=True)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        for label in ("cold", "warm"):
            r = one_start(browser, args.data, args.port, args.root, ask=not args.no_ask)
            t = {k: "never" if v is None else f"{v:.1f} s" for k, v in r.items() if k != "phases"}
            print(f"{label}, from the server's start: health check {t['server_up_s']}; first "
                  f"text {t['first_text_s']}; chat box {t['chat_ready_s']}; first streamed "
                  f"word {t['first_word_s']}")
            for t, line in r["phases"]:
                print(f"    {t:6.1f} s  {line}")
        browser.close()


if __name__ == "__main__":
    main()
