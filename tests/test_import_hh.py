"""Import of Anthropic hh-rlhf preference pairs (the real shared file) and their export."""

from __future__ import annotations

import json
import time

import pytest
from click.testing import CliRunner

from alignment.errors import ImportFileError
from alignment.export import ExportOptions, export
from alignment.importers import HH_MODEL_ID, import_hh_rlhf, line_hash
from assistant.cli import main
from assistant.storage.schema import Conversation
from tests.shared_data import HH_FILE, shared_file

# The four lines of the shared file whose chosen answer is empty (nothing to learn to say).
EMPTY_CHOSEN = [87, 517, 926, 1104]


def dialogue(*turns: str) -> str:
    return "".join(f"\n\n{'Human' if i % 2 == 0 else 'Assistant'}: {t}" for i, t in enumerate(turns))


def pair(prompt: tuple[str, ...], chosen: str, rejected: str) -> str:
    return json.dumps({"chosen": dialogue(*prompt, chosen), "rejected": dialogue(*prompt, rejected)})


@pytest.fixture(scope="module")
def hh_lines() -> list[str]:
    return shared_file(HH_FILE).read_text(encoding="utf-8").splitlines()


def test_import_the_real_file(store, db, hh_lines):
    started = time.perf_counter()
    report = import_hh_rlhf(db, HH_FILE)
    seconds = time.perf_counter() - started
    assert (report.pairs_in, report.imported, report.duplicates) == (1200, 1196, 0)
    assert [(m.line, m.reason) for m in report.malformed] == [
        (n, "the chosen answer is empty") for n in EMPTY_CHOSEN]
    assert seconds < 15, f"importing 1,200 pairs took {seconds:.1f} s"
    assert store.counts()["conversations"] == 1196

    # The first line, as a conversation: shared turns, the question, two alternatives, a choice.
    first = json.loads(hh_lines[0])
    conv = next(c for c in store.list_conversations() if c.id == 1)
    thread = store.messages(conv.id, include_inactive=True)
    *shared, question, chosen, rejected = thread
    assert [m.role for m in shared] == ["user", "assistant", "user", "assistant"]
    assert question.role == "user" and question.content == "okay some of these do not have anything to do with pens"
    assert first["chosen"].endswith(chosen.content) and first["rejected"].endswith(rejected.content)
    assert chosen.chosen and chosen.active and not rejected.chosen and not rejected.active
    assert chosen.reply_to_id == rejected.reply_to_id == question.id
    assert chosen.alternatives == (chosen.id, rejected.id)
    assert chosen.record.model_id == HH_MODEL_ID and chosen.record.model_version == "hh-rlhf"
    assert chosen.record.params == {} and chosen.record.prompt_tokens == 0
    assert [m.id for m in store.messages(conv.id)] == [m.id for m in thread if m.id != rejected.id]
    with db.read() as s:
        source = s.get(Conversation, conv.id).source
    assert source == f"hh-rlhf:{HH_FILE.name}:{line_hash(hh_lines[0])}" and len(source.rsplit(":", 1)[1]) == 16


def test_reimport_counts_duplicates_and_adds_nothing(store, db, hh_lines):
    import_hh_rlhf(db, HH_FILE)
    before = store.counts()
    again = import_hh_rlhf(db, HH_FILE)
    assert (again.pairs_in, again.imported, again.duplicates, len(again.malformed)) == (1200, 0, 1196, 4)
    assert store.counts() == before


def test_export_preference_from_the_imported_pairs(db, hh_lines, tmp_path):
    import_hh_rlhf(db, HH_FILE)
    result = export(db, "preference")
    r = result.report
    assert (r.rows_in, r.rows_out, r.duplicates_dropped, r.filtered_out) == (1196, 1196, 0, 0)
    assert (r.train, r.test) == (1080, 116) and r.train + r.test == r.rows_out
    assert r.by_signal == {"choice": 1196} and r.imported == 1196
    row = next(row for row in result.train if len(row["prompt"]) == 5)
    assert [m["role"] for m in row["prompt"]] == ["user", "assistant", "user", "assistant", "user"]

    # The same pair written differently (another hash, so imported) is dropped as a duplicate.
    same = json.dumps(json.loads(hh_lines[0]), indent=1)
    (tmp_path / "again.jsonl").write_text(same.replace("\n", " ") + "\n")
    assert import_hh_rlhf(db, tmp_path / "again.jsonl").imported == 1
    r = export(db, "preference", ExportOptions(source="imports")).report
    assert (r.rows_in, r.duplicates_dropped, r.rows_out) == (1197, 1, 1196)


def test_malformed_lines_are_reported_and_the_rest_imported(store, db, tmp_path):
    good = pair(("Hi", "Hello!", "How do I boil an egg?"), "Simmer it for eight minutes.", "No idea.")
    lines = [
        good,                                                        # 1
        "{not json",                                                 # 2
        json.dumps({"chosen": dialogue("Hi", "Hello")}),             # 3
        json.dumps({"chosen": "just text", "rejected": "other text"}),  # 4
        json.dumps({"chosen": dialogue("Hi", "A"), "rejected": dialogue("Hey", "B")}),  # 5
        json.dumps({"chosen": dialogue("Hi", "A"), "rejected": dialogue("Hi", "A")}),   # 6
        "",                                                          # blank lines are skipped
        pair(("Tell me a joke",), "Knock knock.", "No."),            # 8
        json.dumps({"chosen": dialogue("Hi"), "rejected": dialogue("Hello")}),  # 9
        json.dumps(["chosen", "rejected"]),                          # 10
    ]
    path = tmp_path / "mixed.jsonl"
    path.write_bytes(("\n".join(lines) + "\n").encode() + b"\xff\xfe broken\n")
    report = import_hh_rlhf(db, path)
    assert report.imported == 2 and report.duplicates == 0 and report.pairs_in == 10
    assert [(m.line, m.reason) for m in report.malformed] == [
        (2, "not JSON (Expecting property name enclosed in double quotes)"),
        (3, "missing key 'rejected' (text expected)"),
        (4, "no 'Human:' / 'Assistant:' turns"),
        (5, "chosen and rejected do not share the turns before the final answer"),
        (6, "chosen and rejected are identical"),
        (9, "the dialogue does not end with an 'Assistant:' answer"),
        (10, "not a JSON object"),
        (11, "not UTF-8 text"),
    ]
    [conv, _] = sorted(store.list_conversations(), key=lambda c: c.id)
    shown = [m.content for m in store.messages(conv.id)]
    assert shown == ["Hi", "Hello!", "How do I boil an egg?", "Simmer it for eight minutes."]


def test_missing_file_is_a_clear_error(db, tmp_path):
    with pytest.raises(ImportFileError, match=r"missing\.jsonl: no such file\. Nothing was imported"):
        import_hh_rlhf(db, tmp_path / "missing.jsonl")


def test_cli_import_prints_counts_and_malformed_lines(env_settings, hh_lines):
    runner = CliRunner()
    result = runner.invoke(main, ["data", "import", "hh-rlhf", str(HH_FILE)])
    assert result.exit_code == 0, result.output
    assert "1200 pairs read, 1196 imported, 0 duplicates skipped" in result.output
    assert "4 malformed" in result.output
    for n in EMPTY_CHOSEN:
        assert f"line {n}: the chosen answer is empty" in result.output
    again = runner.invoke(main, ["data", "import", "hh-rlhf", str(HH_FILE)])
    assert "0 imported, 1196 duplicates skipped" in again.output

    missing = runner.invoke(main, ["data", "import", "hh-rlhf", "nope.jsonl"])
    assert missing.exit_code == 1 and "Error: Cannot import nope.jsonl: no such file" in missing.output


def test_imported_conversations_stay_out_of_the_chat_list(store, db, tmp_path):
    chat = store.add_user_message(None, "My own question").conversation_id
    f = tmp_path / "one.jsonl"
    f.write_text(pair(("How do I boil an egg?",), "Simmer it.", "Fry it.") + "\n")
    assert import_hh_rlhf(db, f).imported == 1
    assert len(store.list_conversations()) == 2
    assert [c.id for c in store.list_conversations(chats_only=True)] == [chat]
