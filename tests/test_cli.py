"""The ``assistant`` console script."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from assistant.cli import main
from assistant.storage import ConversationStore, Database, current_revision, head_revision


@pytest.fixture
def run(env_settings):
    def invoke(*args: str, input: str | None = None):
        return CliRunner().invoke(main, list(args), input=input, catch_exceptions=False)

    return invoke


def test_console_script_is_installed():
    exe = Path(sys.executable).parent / "assistant"
    assert exe.is_file(), "the assistant console script is not installed beside python"
    out = subprocess.run([str(exe), "--help"], capture_output=True, text=True, check=True).stdout
    assert "chat" in out and "db" in out


def test_db_upgrade_and_current(run, env_settings):
    result = run("db", "upgrade")
    assert result.exit_code == 0, result.output
    assert f"revision {head_revision()}" in result.output
    db = Database(env_settings.resolved_database_url)
    assert current_revision(db) == head_revision()
    assert head_revision() in run("db", "current").output


def test_missing_model_exits_with_message(run, monkeypatch, tmp_path):
    monkeypatch.setenv("ASSISTANT_MODEL", str(tmp_path / "missing"))
    result = CliRunner().invoke(main, ["chat"], input="hi\n")
    assert result.exit_code == 1
    assert "does not exist" in result.output and "Traceback" not in result.output


@pytest.mark.slow
def test_terminal_chat_rates_and_continues(run, env_settings):
    result = run("chat", "-t", "0", "-n", "24", input="What is the capital of France?\n   \n/up clear answer\n")
    assert result.exit_code == 0, result.output
    assert "Paris" in result.output
    assert "The message is empty" in result.output
    assert "Rating saved." in result.output

    store = ConversationStore(Database(env_settings.resolved_database_url))
    [conv] = store.list_conversations()
    [_, answer] = store.messages(conv.id)
    assert answer.rating == 1 and answer.comment == "clear answer"

    again = run("chat", "-c", str(conv.id), "-t", "0", "-n", "8", input="Thanks!\n")
    assert "[👍]" in again.output  # the history is shown with its rating
    assert len(store.messages(conv.id)) == 4


@pytest.mark.slow
def test_terminal_chat_says_an_answer_was_cut_at_the_token_limit_and_continues_it(run, env_settings):
    result = run("chat", "-t", "0", "-n", "6", input="Write a very long story about a dragon.\n/continue\n")
    assert result.exit_code == 0, result.output
    assert "[cut at the token limit: /continue goes on with it]" in result.output
    assert "assistant (continued)> " in result.output
    store = ConversationStore(Database(env_settings.resolved_database_url))
    [conv] = store.list_conversations()
    [_, answer] = store.messages(conv.id)
    assert answer.record.completion_tokens == 12 and answer.record.cut_at_limit
    assert answer.record.params["repetition_penalty"] == env_settings.generation.repetition_penalty


@pytest.mark.slow
def test_terminal_chat_reports_errors_and_goes_on(run, env_settings, hold_lock):
    result = run("chat", "-c", "999", input="")
    assert result.exit_code == 1 and "Conversation 999 does not exist" in result.output

    run("db", "upgrade")
    db_file = Database(env_settings.resolved_database_url).where
    with hold_lock(db_file):
        result = run("chat", "-n", "4", input="hello\n/list\n")
    assert result.exit_code == 0
    assert "locked by another process" in result.output
    store = ConversationStore(Database(env_settings.resolved_database_url))
    assert store.counts()["messages"] == 0


@pytest.mark.slow
def test_terminal_chat_rejects_a_message_too_long(run, env_settings, monkeypatch):
    monkeypatch.setenv("ASSISTANT_CONTEXT_WINDOW", "300")
    result = run("chat", "-n", "100", input="word " * 400 + "\n")
    assert result.exit_code == 0
    assert "The message is too long" in result.output
    store = ConversationStore(Database(env_settings.resolved_database_url))
    assert store.counts()["messages"] == 0


@pytest.mark.slow
def test_terminal_chat_open_takes_a_conversation_number(run, env_settings):
    result = run("chat", "-n", "4", input="/open abc\n/open 999\n")
    assert result.exit_code == 0, result.output
    assert "Usage: /open ID" in result.output and "invalid literal" not in result.output
    assert "Conversation 999 does not exist" in result.output
