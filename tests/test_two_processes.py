"""Two app processes on one PostgreSQL database, as a team runs them behind a proxy: a
document ingested by one is found by a search in the other, a version activated in one
answers in the other, and ratings made by both at once are all there.

The second process is a real one (its own interpreter, engine, FAISS index in memory and
chat service, as a second ``streamlit run`` would hold), driven over its stdin.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from assistant.bootstrap import open_library, open_registry
from assistant.storage import ConversationStore
from assistant.storage.conversations import AnswerRecord
from tests.test_live_switch import trained  # noqa: F401  (fixture: an SFT version of the tiny model)

ROOT = Path(__file__).resolve().parents[1]
RECORD = AnswerRecord(model_id="m", model_version="base", params={}, prompt_tokens=1,
                      completion_tokens=1, latency_ms=1.0, ttft_ms=1.0)

APP = textwrap.dedent(
    """
    import json, sys
    from assistant.bootstrap import build_chat_service, open_database
    from assistant.config import get_settings
    from assistant.engines.generation import GenerationParams
    from assistant.storage.conversations import AnswerRecord

    settings = get_settings()
    db = open_database(settings)
    service = build_chat_service(settings, db)
    params = GenerationParams(temperature=0.0, top_p=1.0, max_new_tokens=4, system_prompt="")
    record = AnswerRecord(model_id="m", model_version="base", params={}, prompt_tokens=1,
                          completion_tokens=1, latency_ms=1.0, ttft_ms=1.0)
    print("ready", flush=True)
    for line in sys.stdin:
        cmd, _, arg = line.strip().partition(" ")
        if cmd == "search":
            out = [h.document_name for h in service.retriever.search(arg, k=3)]
        elif cmd == "ask":
            reply = service.send(None, arg, params)
            "".join(reply)
            out = reply.message.record.model_version
        elif cmd == "rate":  # questions answered and rated as fast as it can
            out = []
            for i in range(int(arg)):
                q = service.store.add_user_message(None, f"b{i}")
                a = service.store.add_assistant_message(q.conversation_id, "x", record, reply_to_id=q.id)
                service.store.rate(a.id, 1 if i % 2 else -1, f"b{i}")
                out.append([a.id, 1 if i % 2 else -1])
        print(json.dumps(out), flush=True)
    """
)


class App:
    def __init__(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", APP], cwd=ROOT, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline().strip()
        assert line == "ready", f"the second app process did not start (said {line!r})"

    def send(self, command: str) -> None:
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()

    def answer(self):
        return json.loads(self.proc.stdout.readline())

    def __call__(self, command: str):
        self.send(command)
        return self.answer()

    def close(self) -> None:
        self.proc.stdin.close()
        assert self.proc.wait(timeout=60) == 0


@pytest.mark.parametrize("database_kind", ["postgresql"], indirect=True)
def test_two_app_processes_share_documents_versions_and_ratings(tiny_settings, feedback_db, trained):  # noqa: F811
    db = feedback_db
    other = App()
    try:
        assert "zebra.txt" not in other("search zebrafish stripes")
        # This process ingests; the other one's next search finds it (its index catches up).
        library = open_library(tiny_settings, db)
        result = library.ingestor.ingest_bytes(
            "zebra.txt", b"Zebrafish have dark horizontal stripes and regrow their fins.")
        assert result.status == "indexed", result.describe()
        assert other("search zebrafish stripes")[0] == "zebra.txt"

        # A version activated here answers there.
        assert other("ask hello") == "base"
        open_registry(tiny_settings, db).activate(trained.name)
        assert other("ask hello again") == trained.name

        # Both rate at once: nothing lost, nothing doubled.
        store = ConversationStore(db)
        mine: list[tuple[int, int]] = []

        def rate_here(tag: str) -> None:
            for i in range(40):
                q = store.add_user_message(None, f"{tag}{i}")
                a = store.add_assistant_message(q.conversation_id, "y", RECORD, reply_to_id=q.id)
                store.rate(a.id, -1 if i % 3 else 1, f"{tag}{i}")
                mine.append((a.id, -1 if i % 3 else 1))

        other.send("rate 80")
        threads = [threading.Thread(target=rate_here, args=(t,)) for t in ("a", "c")]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        theirs = [tuple(x) for x in other.answer()]
    finally:
        other.close()
    from sqlalchemy import select

    from assistant.storage.schema import Feedback

    expected = dict(mine + theirs)
    assert len(expected) == 160
    with db.read() as s:
        rows = s.execute(select(Feedback.message_id, Feedback.rating)
                         .where(Feedback.message_id.in_(list(expected)))).all()
    assert len(rows) == 160 and dict(rows) == expected
