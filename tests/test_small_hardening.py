"""The small ones of the security probe: invalid text in a query, two ingests of the same
folder at once, and no request to a third party for the page icon."""

from __future__ import annotations

import builtins
import re
from pathlib import Path

from click.testing import CliRunner

from assistant import bootstrap
from assistant.bootstrap import open_database, open_library
from assistant.chat.service import ChatService
from assistant.cli import main
from assistant.storage import ConversationStore
from assistant.words import clean_text
from tests.fakes import FakeGenerator

ROOT = Path(__file__).resolve().parent.parent
DOC = "# Zorblax\n\nThe Zorblax festival is held in Quillhaven every May.\n"


def test_clean_text_replaces_lone_surrogates_only():
    assert clean_text("caf\udcc3\udca9 ok \ud800") == "caf\ufffd\ufffd ok \ufffd"
    assert clean_text("café 😀") == "café 😀"


def test_search_with_invalid_utf8_in_the_query(env_settings, tmp_path):
    """``assistant search $'caf\\xff'``: Python hands the CLI a lone surrogate for the byte."""
    (tmp_path / "z.md").write_text(DOC)
    runner = CliRunner()
    assert runner.invoke(main, ["ingest", str(tmp_path / "z.md")]).exit_code == 0
    result = runner.invoke(main, ["search", "Zorblax caf\udcff festival"])
    assert result.exit_code == 0, result.output
    assert "z.md" in result.output and "Traceback" not in result.output


def test_terminal_chat_with_invalid_text(env_settings, monkeypatch):
    db = open_database(env_settings)
    service = ChatService(ConversationStore(db), FakeGenerator(context_window=4096), env_settings)
    monkeypatch.setattr(bootstrap, "build_chat_service", lambda settings: service)
    lines = iter(["caf\udcff?", UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte")])

    def fake_input(prompt: str = "") -> str:
        item = next(lines, None)
        if item is None:
            raise EOFError
        if isinstance(item, Exception):
            raise item
        return item

    monkeypatch.setattr(builtins, "input", fake_input)
    result = CliRunner().invoke(main, ["chat"])
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    assert "that line is not valid text (utf-8: invalid start byte); type it again" in result.output
    [conv] = ConversationStore(db).list_conversations()
    assert ConversationStore(db).messages(conv.id)[0].content == "caf\ufffd?"


def test_a_document_stored_meanwhile_by_another_ingest_is_a_duplicate(settings, db):
    """Two `assistant ingest` of one folder: both find the file new, both embed it, and the
    second to commit hits the unique content hash. It is told it was a duplicate."""
    first = open_library(settings, db)
    second = open_library(settings, db)
    assert first.ingestor.ingest_bytes("z.md", DOC.encode()).status == "indexed"
    # The second process looked before the first committed.
    original, calls = second.store.find_by_hash, []

    def looked_too_early(digest: str):
        calls.append(digest)
        return None if len(calls) == 1 else original(digest)

    second.store.find_by_hash = looked_too_early
    result = second.ingestor.ingest_bytes("z.md", DOC.encode())
    assert result.status == "duplicate" and result.ok, result.error
    assert "already stored" in result.describe()
    assert len(calls) == 2 and len(second.store.list_documents()) == 1


def test_the_page_icon_is_not_fetched_from_a_third_party():
    """Streamlit turns a ":material/..." page icon into a favicon URL on fonts.gstatic.com;
    icons inside the page come from its bundled font."""
    source = (ROOT / "ui" / "app.py").read_text()
    [icon] = re.findall(r"set_page_config\([^)]*page_icon=\"([^\"]+)\"", source)
    assert not icon.startswith(":material")
