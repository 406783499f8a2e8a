"""`assistant ingest | search | documents | index` on a real library."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from assistant.cli import main
from assistant.documents.index import INDEX_FILE
from assistant.storage import ConversationStore, Database


@pytest.fixture
def run(env_settings):
    def invoke(*args: str):
        return CliRunner().invoke(main, list(args), catch_exceptions=False)

    return invoke


def test_ingest_search_list_check_rebuild_delete(run, env_settings, tmp_path):
    docs = tmp_path / "docs"
    (docs / "sub").mkdir(parents=True)
    (docs / "sub" / "festival.md").write_text(
        "# Zorblax\n\nThe Zorblax festival is held in Quillhaven on the third of May.\n")
    (docs / "empty.txt").write_bytes(b"")
    (docs / ".hidden.txt").write_text("secret notes that must not be ingested")

    result = run("ingest", str(docs), str(tmp_path / "nope.pdf"))
    assert result.exit_code == 1
    assert "festival.md: indexed, 1 chunks" in result.output
    assert "empty.txt: the file is empty" in result.output
    assert "nope.pdf: no such file or folder" in result.output
    assert "hidden" not in result.output
    assert "1 of 2 files ingested" in result.output

    again = run("ingest", str(docs / "sub"))
    assert again.exit_code == 0 and "already stored" in again.output

    found = run("search", "Where is the Zorblax festival?", "-k", "3")
    assert found.exit_code == 0
    assert found.stdout.startswith("[1] ") and "festival.md, Zorblax" in found.stdout
    assert "Quillhaven" in found.output

    listing = run("documents", "list")
    assert "festival.md" in listing.output and "1 chunks" in listing.output

    assert run("index", "check").exit_code == 0
    (env_settings.index_dir / INDEX_FILE).unlink()
    broken = run("index", "check")
    assert broken.exit_code == 1 and "missing 1" in broken.output
    assert "1 chunks" in run("index", "rebuild").output
    assert run("index", "check").exit_code == 0

    doc_id = listing.stdout.split()[0].lstrip("#")
    assert "Deleted" in run("documents", "delete", doc_id).output
    assert "No documents yet" in run("search", "Zorblax").output
    missing = CliRunner().invoke(main, ["documents", "delete", doc_id])
    assert missing.exit_code == 1 and "does not exist" in missing.output


def test_terminal_chat_lists_the_sources_as_the_app_does(run, env_settings, tmp_path):
    doc = tmp_path / "festival.md"
    doc.write_text("# Zorblax\n\nThe Zorblax festival is held in Quillhaven on the third of May.\n")
    assert run("ingest", str(doc)).exit_code == 0
    result = CliRunner().invoke(main, ["chat", "-t", "0", "-n", "24"],
                                input="Where is the Zorblax festival held?\nWhat is 2 plus 2?\n")
    assert result.exit_code == 0, result.output
    listed = [line for line in result.stdout.splitlines() if line.startswith("  ")]
    assert any("festival.md · Zorblax" in line for line in listed), result.stdout
    # The arithmetic is in no document: a plain chat answer, which says so.
    assert result.output.count("No document was used: none of the documents searched") == 1
    [conv] = ConversationStore(Database(env_settings.resolved_database_url)).list_conversations()
    # Reopened, the answer comes with its sources again.
    again = CliRunner().invoke(main, ["chat", "-c", str(conv.id)], input="")
    assert any("festival.md · Zorblax" in line for line in again.stdout.splitlines()
               if line.startswith("  "))
    assert "[No document was used: none of the documents searched" in again.stdout


def test_search_output_has_no_library_noise(env_settings, tmp_path):
    """In a fresh process, as a user runs it: the model libraries' progress bars and
    warnings ("Loading weights ...") stay out of stdout and stderr."""
    doc = tmp_path / "festival.md"
    doc.write_text("# Zorblax\n\nThe Zorblax festival is held in Quillhaven on the third of May.\n")
    assert CliRunner().invoke(main, ["ingest", str(doc)]).exit_code == 0
    done = subprocess.run([str(Path(sys.executable).parent / "assistant"), "search", "Zorblax", "-k", "1"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("[1] ") and "festival.md" in done.stdout
    assert done.stderr == "Loading the embedding model and the index...\n"
