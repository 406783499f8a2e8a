"""Export of the collected feedback as TRL datasets: real ChatService and SQLite, a stand-in
generator (these tests are about the data, not the language model)."""

from __future__ import annotations

import copy
import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from alignment.errors import ExportPathError, NoTrainingData
from alignment.export import (
    ExportOptions,
    export,
    split_of,
    write_export,
)
from alignment.importers import import_hh_rlhf
from alignment.pii import mask_text
from assistant.chat.service import ChatService
from assistant.cli import main
from assistant.engines.generation import GenerationParams
from assistant.chat.prompting import SOURCES_INSTRUCTION, with_sources
from assistant.storage.conversations import AnswerRecord, SourceRecord
from tests.fakes import FakeGenerator
from tests.shared_data import HH_FILE, shared_file

pytestmark = pytest.mark.both_databases  # SQLite and PostgreSQL (tests/conftest.py)

PARAMS = GenerationParams(temperature=0.7, top_p=0.9, max_new_tokens=40, system_prompt="")
ALL_TRAIN = ExportOptions(test_fraction=0.0)
HH_LINE = json.dumps({
    "chosen": "\n\nHuman: How do I boil an egg?\n\nAssistant: Simmer it for eight minutes.",
    "rejected": "\n\nHuman: How do I boil an egg?\n\nAssistant: Microwave it whole.",
})


@pytest.fixture
def service(store, settings):
    return ChatService(store, FakeGenerator(), settings)


def ask(service: ChatService, conversation_id, text: str, answer: str, params=PARAMS):
    service.generator.answer = answer
    reply = service.send(conversation_id, text, params)
    list(reply)
    return reply.message


def again(service: ChatService, answer_id: int, answer: str, params=PARAMS):
    service.generator.answer = answer
    reply = service.regenerate(answer_id, params)
    list(reply)
    return reply.message


def user(text: str) -> dict:
    return {"role": "user", "content": text}


def said(text: str) -> list[dict]:
    return [{"role": "assistant", "content": text}]


@pytest.fixture
def feedback(service, store):
    """One conversation per kind of signal; returns the answers by name."""
    m = {}
    m["paris"] = ask(service, None, "Capital of France?", "Paris.")
    m["lyon"] = again(service, m["paris"].id, "Lyon.")
    store.choose(m["paris"].id)

    m["joke"] = ask(service, None, "Tell me a joke", "No.")
    store.edit(m["joke"].id, "Why did the chicken cross the road? To get to the other side.")

    m["jupiter"] = ask(service, None, "Largest planet?", "Jupiter.")
    m["mars"] = again(service, m["jupiter"].id, "Mars.")
    store.rate(m["jupiter"].id, 1)
    store.rate(m["mars"].id, -1, "wrong", tags=["Inaccurate"])

    m["welcome"] = ask(service, None, "Thanks!", "You are welcome.")
    store.rate(m["welcome"].id, 1, tags=["polite"])

    m["hello"] = ask(service, None, "Hi", "Hello.")
    store.rate(m["hello"].id, 1)
    store.rate(m["hello"].id, None)  # cleared: no signal
    return m


# -- the three kinds -------------------------------------------------------------------------
def test_preference_pairs_from_choice_edit_and_thumbs(db, feedback):
    m = feedback
    result = export(db, "preference", ALL_TRAIN)
    assert result.train == [
        {"prompt": [user("Capital of France?")], "chosen": said(m["paris"].content),
         "rejected": said(m["lyon"].content)},
        {"prompt": [user("Tell me a joke")],
         "chosen": said("Why did the chicken cross the road? To get to the other side."),
         "rejected": said(m["joke"].content)},
        {"prompt": [user("Largest planet?")], "chosen": said(m["jupiter"].content),
         "rejected": said(m["mars"].content)},
    ]
    r = result.report
    assert (r.rows_in, r.rows_out, r.train, r.test, r.duplicates_dropped, r.filtered_out) == (3, 3, 3, 0, 0, 0)
    assert r.by_signal == {"choice": 1, "edit": 1, "thumbs": 1} and r.imported == 0


def test_kto_rows_from_thumbs_choices_and_edits(db, feedback):
    m = feedback
    rows = export(db, "kto", ALL_TRAIN).train
    got = {(r["prompt"][-1]["content"], r["completion"][0]["content"], r["label"]) for r in rows}
    assert got == {
        ("Largest planet?", m["jupiter"].content, True),
        ("Largest planet?", m["mars"].content, False),
        ("Thanks!", m["welcome"].content, True),
        ("Capital of France?", m["paris"].content, True),
        ("Capital of France?", m["lyon"].content, False),
        ("Tell me a joke", "Why did the chicken cross the road? To get to the other side.", True),
        ("Tell me a joke", m["joke"].content, False),
    }  # the cleared rating of "Hello." gives nothing
    assert len(rows) == 7
    assert all(set(r) == {"prompt", "completion", "label"} and r["completion"][0]["role"] == "assistant"
               for r in rows)


def test_sft_rows_from_good_chosen_and_edited_answers(db, feedback):
    m = feedback
    rows = export(db, "sft", ALL_TRAIN).train
    assert rows == [
        {"messages": [user("Capital of France?"), *said(m["paris"].content)]},
        {"messages": [user("Tell me a joke"),
                      *said("Why did the chicken cross the road? To get to the other side.")]},
        {"messages": [user("Largest planet?"), *said(m["jupiter"].content)]},
        {"messages": [user("Thanks!"), *said(m["welcome"].content)]},
    ]


# -- the prompt is what the answer was given -------------------------------------------------
def test_prompt_has_the_system_prompt_and_the_sources_snapshot(store, db):
    """Answers stored with a sources snapshot (the chunk may be gone since: chunk_id None)."""
    q = store.add_user_message(None, "When is the Zorblax festival?")
    sources = (
        SourceRecord(1, None, "festival.md", "Zorblax festival", "Held on the third of May.", 0.9),
        SourceRecord(2, None, "notes.txt", None, "Blue pancakes </source> are eaten.", 0.4),
    )
    record = AnswerRecord("m", "v1", {"system_prompt": "Be brief."}, 10, 5, 1.0, 1.0)
    a = store.add_assistant_message(q.conversation_id, "On 3 May [1].", record, sources, reply_to_id=q.id)
    b = store.add_assistant_message(q.conversation_id, "In June.", record, sources, reply_to_id=q.id)
    store.choose(a.id)

    [row] = export(db, "preference", ALL_TRAIN).train
    assert row["prompt"] == [
        {"role": "system", "content": f"Be brief.\n\n{SOURCES_INSTRUCTION}"},
        {"role": "user", "content": with_sources("When is the Zorblax festival?", sources)},
    ]
    assert row["prompt"][1]["content"].startswith("Sources:\n\n[1] festival.md, Zorblax festival\n<source>")
    assert "</ source>" in row["prompt"][1]["content"]  # quoted exactly as the model saw it
    assert (row["chosen"], row["rejected"]) == (said(a.content), said(b.content))


def test_prompts_match_what_the_generator_received(service, store, db):
    """Edits, regenerated earlier answers and later turns: every exported prompt is the
    one ChatService sent for that answer, even after the thread changed."""
    given = {}  # answer text -> the prompt the generator received for it

    def record(msg):
        given[msg.content] = service.generator.prompts[-1]
        return msg

    a1 = record(ask(service, None, "Capital of France?", "Paris."))
    conv = a1.conversation_id
    record(ask(service, conv, "And of Italy?", "Rome."))
    store.edit(a1.id, "Paris, of course.")  # later turns continue from the edited answer
    record(ask(service, conv, "And of Spain?", "Madrid."))
    record(again(service, a1.id, "Lutetia."))  # an earlier answer regenerated afterwards
    a4 = record(ask(service, conv, "And of Germany?", "Berlin."))
    store.edit(a4.id, "Berlin!")  # an edit after the answer changes nothing it saw
    rome = next(m for m in store.messages(conv) if m.content.strip() == "Rome.")
    record(again(service, rome.id, "Roma."))
    for m in store.messages(conv, include_inactive=True):
        if m.role == "assistant":
            store.rate(m.id, 1)

    rows = export(db, "kto", ALL_TRAIN).train
    exported = {r["completion"][0]["content"]: r["prompt"] for r in rows if r["label"]}
    assert set(exported) >= set(given)
    for text, prompt in given.items():
        assert exported[text] == prompt, text
    assert [t["content"] for t in given["Madrid. "]] == [
        "Capital of France?", "Paris, of course.", "And of Italy?", "Rome. ", "And of Spain?"]
    assert [t["content"] for t in given["Rome. "]][1] == "Paris. "  # not the later edit


def test_prompt_leaves_out_the_turns_trimmed_to_fit(store, settings, db):
    service = ChatService(store, FakeGenerator(context_window=50), settings)
    params = GenerationParams(0.7, 0.9, 10, "Be brief.")
    long = " ".join(["word"] * 20)
    a1 = ask(service, None, long, long, params)
    a2 = ask(service, a1.conversation_id, "Short?", "Yes.", params)
    assert store.get_message(a2.id).record.trimmed_turns == 2
    store.rate(a2.id, 1)
    [row] = export(db, "sft", ALL_TRAIN).train
    assert row["messages"][:-1] == service.generator.prompts[-1]
    assert row["messages"][:-1] == [{"role": "system", "content": "Be brief."}, user("Short?")]


def test_prompt_with_retrieved_sources_matches_the_generator(store, settings, db):
    """The real document library: retrieval -> prompt -> stored snapshot -> export."""
    from assistant.bootstrap import open_library

    library = open_library(settings, db)
    festival = "# Zorblax festival\n\nThe Zorblax festival is held in Quillhaven on the third of May.\n"
    assert library.ingestor.ingest_bytes("festival.md", festival.encode()).ok
    service = ChatService(store, FakeGenerator(context_window=2000), settings, retriever=library.retriever)
    params = GenerationParams(0.0, 1.0, 30, "Be brief.")
    a = ask(service, None, "Where is the Zorblax festival held?", "In Quillhaven [1].", params)
    given = service.generator.prompts[-1]
    b = again(service, a.id, "Nowhere.", params)
    store.choose(a.id)

    [row] = export(db, "preference", ALL_TRAIN).train
    assert row["prompt"] == given
    assert row["prompt"][0]["content"] == f"Be brief.\n\n{SOURCES_INSTRUCTION}"
    assert row["prompt"][-1]["content"] == with_sources(
        "Where is the Zorblax festival held?", store.get_message(a.id).sources)
    assert "Quillhaven" in row["prompt"][-1]["content"]
    assert row["rejected"] == said(b.content)


# -- split, dedup, filters, masking ----------------------------------------------------------
@pytest.fixture
def many(service, store):
    """40 conversations of two rated exchanges each."""
    for i in range(40):
        a = ask(service, None, f"Question {i}?", f"Answer {i}.")
        b = ask(service, a.conversation_id, f"Follow-up {i}?", f"More {i}.")
        store.rate(a.id, 1)
        store.rate(b.id, 1)


def _conversation_of(row: dict) -> str:
    return row["messages"][0]["content"].split()[1].rstrip("?")


def test_split_is_stable_and_by_conversation(db, many):
    options = ExportOptions(test_fraction=0.25, seed=7)
    first, second = export(db, "sft", options), export(db, "sft", options)
    assert (first.train, first.test) == (second.train, second.test)
    train = {_conversation_of(r) for r in first.train}
    test = {_conversation_of(r) for r in first.test}
    assert train and test and not train & test and len(train | test) == 40
    assert len(first.test) == 2 * len(test)  # both rows of a conversation go together
    assert (first.report.train_conversations, first.report.test_conversations) == (len(train), len(test))
    other = export(db, "sft", ExportOptions(test_fraction=0.25, seed=8))
    assert {_conversation_of(r) for r in other.test} != test
    assert export(db, "sft", ALL_TRAIN).report.test == 0
    assert split_of(5, 7, 0.25) == split_of(5, 7, 0.25)


def test_duplicates_are_dropped_and_counted(service, store, db):
    for _ in range(2):  # the same question answered and judged the same way twice
        a = ask(service, None, "Capital of France?", "Paris.")
        again(service, a.id, "Lyon.")
        store.choose(a.id)
    result = export(db, "preference", ALL_TRAIN)
    r = result.report
    assert (r.rows_in, r.duplicates_dropped, r.rows_out) == (2, 1, 1)
    assert r.rows_in == r.rows_out + r.duplicates_dropped + r.filtered_out + r.skipped_identical + r.skipped_empty


def test_identical_alternatives_are_no_pair(service, store, db):
    a = ask(service, None, "Hi", "Hello.")
    again(service, a.id, "Hello.")
    store.choose(a.id)
    with pytest.raises(NoTrainingData, match="identical"):
        export(db, "preference", ALL_TRAIN)


def test_filters_by_date_model_version_tag_and_source(service, store, db, tmp_path):
    hh = tmp_path / "hh.jsonl"
    hh.write_text(HH_LINE + "\n")
    import_hh_rlhf(store.db, hh)
    old = ask(service, None, "Old question?", "Old answer.")
    store.rate(old.id, 1, tags=["Inaccurate"])
    time.sleep(0.01)
    cut = datetime.now(UTC)
    service.generator.model_version = "fake-v2"
    new = ask(service, None, "New question?", "New answer.")
    store.rate(new.id, -1, tags=["rude"])

    def completions(**kw):
        result = export(db, "kto", ExportOptions(test_fraction=0.0, **kw))
        return sorted(r["completion"][0]["content"].strip() for r in result.train), result.report

    everything, report = completions()
    assert len(everything) == 4 and report.filtered_out == 0
    assert completions(since=cut)[0] == ["New answer."]
    assert completions(until=cut)[0] == [
        "Microwave it whole.", "Old answer.", "Simmer it for eight minutes."]
    assert completions(model_versions=("fake-v1",))[0] == ["Old answer."]
    assert completions(model_versions=("fake-v2", "hh-rlhf"))[0] == [
        "Microwave it whole.", "New answer.", "Simmer it for eight minutes."]
    got, report = completions(tags=("INACCURATE", "polite"))
    assert got == ["Old answer."] and report.filtered_out == 3
    assert completions(source="chats")[0] == ["New answer.", "Old answer."]
    got, report = completions(source="imports")
    assert got == ["Microwave it whole.", "Simmer it for eight minutes."] and report.imported == 2
    with pytest.raises(NoTrainingData, match=r"filters left no kto rows: 4 of 4 .*tag nothing"):
        completions(tags=("nothing",))


def test_pii_is_masked_everywhere_and_years_stay(service, store, db):
    q = "Mail jane.doe@example.com or call +1 (555) 123-4567: was it in 1066?"
    a = ask(service, None, q, "Yes, in 1066. Ring 555-123-4567 or 020 7946 0958 for 1,200 maps.")
    store.rate(a.id, 1)
    plain = export(db, "kto", ALL_TRAIN)
    assert plain.train[0]["prompt"][0]["content"] == q and plain.report.masked == {}
    masked = export(db, "kto", ExportOptions(test_fraction=0.0, mask_pii=True))
    [row] = masked.train
    assert row["prompt"][0]["content"] == "Mail [EMAIL] or call [PHONE]: was it in 1066?"
    assert row["completion"][0]["content"].strip() == "Yes, in 1066. Ring [PHONE] or [PHONE] for 1,200 maps."
    assert masked.report.masked == {"email": 1, "phone": 3}


@pytest.mark.parametrize(("text", "expected"), [
    ("The Battle of Hastings was in 1066.", None),
    ("Between 1990-2000, on 2024-05-01 at 10:30, v1.2.3 cost 3.14159 or 1,200,000.", None),
    ("IP 192.168.100.200, ISBN 978-3-16-148410-0, order 123-456-7890123.", None),
    ("Call +44 20 7946 0958 now.", "Call [PHONE] now."),
    ("Call (555) 123 4567, or 555.123.4567.", "Call [PHONE], or [PHONE]."),
    ("Phone: +33612345678", "Phone: [PHONE]"),
    ("Write to a.b-c+tag@mail.example.co.uk.", "Write to [EMAIL]."),
    ("not@an-address and user@host", None),
])
def test_mask_text_needs_a_phone_or_email_shape(text, expected):
    assert mask_text(text) == (expected if expected is not None else text)


# -- errors ----------------------------------------------------------------------------------
def test_empty_database_says_what_feedback_is_needed(db, service, store):
    with pytest.raises(NoTrainingData, match="choosing the best of several answers"):
        export(db, "preference")
    with pytest.raises(NoTrainingData, match="rating answers"):
        export(db, "kto")
    a = ask(service, None, "Hi", "Hello.")
    store.rate(a.id, 1)
    with pytest.raises(NoTrainingData, match="No preference data"):
        export(db, "preference")  # a single thumbs up is no pair
    assert export(db, "kto", ALL_TRAIN).report.rows_out == 1


def test_all_rows_in_the_test_split_is_an_error(db, service, store):
    a = ask(service, None, "Hi", "Hello.")
    store.rate(a.id, 1)
    seed = next(seed for seed in range(100) if split_of(a.conversation_id, seed, 0.5) == "test")
    with pytest.raises(NoTrainingData, match="fell into the test split.*--test-fraction 0"):
        export(db, "sft", ExportOptions(test_fraction=0.5, seed=seed))


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def test_unwritable_path_is_refused_and_leaves_nothing(db, feedback, tmp_path):
    result = export(db, "preference", ALL_TRAIN)
    tmp_path = tmp_path / "exports"
    tmp_path.mkdir()
    (tmp_path / "a-file").write_text("not a folder")
    before = _tree(tmp_path)
    target = tmp_path / "a-file" / "export"
    with pytest.raises(ExportPathError) as err:
        write_export(result, target)
    assert str(target) in str(err.value) and "choose another --out folder" in str(err.value)
    assert _tree(tmp_path) == before

    with pytest.raises(ExportPathError, match="is a file"):
        write_export(result, tmp_path / "a-file")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("keep me")
    with pytest.raises(ExportPathError, match="holds no earlier export"):
        write_export(result, tmp_path / "mine")
    assert (tmp_path / "mine" / "thesis.tex").read_text() == "keep me"


def test_a_failed_write_leaves_the_earlier_export_whole(db, feedback, tmp_path, monkeypatch):
    import alignment.export as export_module

    result = export(db, "preference", ALL_TRAIN)
    tmp_path = tmp_path / "exports"
    out = write_export(result, tmp_path / "out")
    before = {p: p.read_bytes() for p in out.iterdir()}

    def disk_full(result, folder):
        (folder / "train.jsonl").write_text('{"half": ')
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(export_module, "_write_jsonl", disk_full)
    with pytest.raises(ExportPathError, match="no space left on device"):
        write_export(result, out)
    assert {p: p.read_bytes() for p in out.iterdir()} == before
    assert _tree(tmp_path) == {"out", *(f"out/{p.name}" for p in before)}  # no temp folders


def test_jsonl_round_trip(db, many, tmp_path):
    from datasets import load_dataset

    result = export(db, "sft", ExportOptions(test_fraction=0.25, seed=7))
    out = write_export(result, tmp_path / "sft", "jsonl")
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "test.jsonl", "train.jsonl"]
    loaded = load_dataset(
        "json", data_files={s: str(out / f"{s}.jsonl") for s in ("train", "test")},
        cache_dir=str(tmp_path / "cache"),
    )
    assert list(loaded["train"]) == result.train and list(loaded["test"]) == result.test
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["kind"] == "sft" and manifest["report"]["rows_out"] == 80

    # Exporting again to the same folder replaces the earlier export whole.
    write_export(export(db, "kto", ALL_TRAIN), out, "hf")
    assert json.loads((out / "manifest.json").read_text())["kind"] == "kto"
    assert not (out / "train.jsonl").exists() and (out / "dataset_dict.json").exists()


def test_hf_folder_round_trip(db, feedback, many, tmp_path):
    from datasets import load_from_disk

    for kind in ("preference", "kto", "sft"):
        result = export(db, kind, ExportOptions(test_fraction=0.25, seed=7))
        out = write_export(result, tmp_path / kind, "hf")
        loaded = load_from_disk(str(out))
        for split, rows in result.splits().items():
            if rows:
                assert [dict(r) for r in loaded[split]] == rows
            else:
                assert split not in loaded
        if kind == "kto":
            assert loaded["train"].features["label"].dtype == "bool"


# -- command line ----------------------------------------------------------------------------
def test_cli_export_prints_the_report(env_settings, feedback, tmp_path):
    out = tmp_path / "pref"
    result = CliRunner().invoke(main, ["data", "export", "--kind", "preference", "--out", str(out),
                                       "--test-fraction", "0"])
    assert result.exit_code == 0, result.output
    assert "preference: 3 pairs in, 3 out (train 3" in result.output
    assert "duplicates dropped 0, filtered out 0" in result.output
    assert len((out / "train.jsonl").read_text().splitlines()) == 3

    result = CliRunner().invoke(main, ["data", "export", "--kind", "sft", "--out", str(tmp_path / "hf"),
                                       "--format", "hf", "--test-fraction", "0",
                                       "--tag", "polite", "--until", datetime.now(UTC).strftime("%Y-%m-%d")])
    assert result.exit_code == 0, result.output
    assert "sft: 4 rows in, 1 out" in result.output and "filtered out 3" in result.output


def test_cli_export_errors_are_one_line(env_settings, tmp_path):
    result = CliRunner().invoke(main, ["data", "export", "--out", str(tmp_path / "x")])
    assert result.exit_code == 1
    assert "Error: No preference data in the database" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "x").exists()
    result = CliRunner().invoke(main, ["data", "export", "--out", str(tmp_path / "x"), "--since", "May 1"])
    assert result.exit_code == 2 and "is not a date" in result.output


def test_cli_until_a_date_includes_that_day(env_settings, feedback, tmp_path):
    today = datetime.now(UTC).date()
    args = ["data", "export", "--kind", "sft", "--test-fraction", "0", "--out"]
    result = CliRunner().invoke(main, [*args, str(tmp_path / "a"), "--until", f"{today}"])
    assert "sft: 4 rows in, 4 out" in result.output, result.output
    result = CliRunner().invoke(main, [*args, str(tmp_path / "b"), "--since", f"{today + timedelta(days=1)}"])
    assert result.exit_code == 1 and "filters left no sft rows" in result.output


# -- TRL -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tokenizer():
    """The real SmolLM2 tokenizer and chat template (read from the embedded GGUF: ~9 s)."""
    from transformers import AutoTokenizer

    from assistant.engines.model_files import embedded_gguf

    gguf = embedded_gguf()
    return AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)


def _tiny_llama(tokenizer, **extra):
    from transformers import LlamaConfig

    return LlamaConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, **extra,
    )


@pytest.mark.slow
def test_exports_train_in_trl_trainers(store, db, feedback, tokenizer, tmp_path):
    """The exported folders load straight into TRL 1.16's DPO, KTO, reward and SFT trainers
    (a tiny random Llama with the real tokenizer, one fp32 step each)."""
    import torch
    from datasets import load_from_disk
    from transformers import AutoModelForSequenceClassification, LlamaForCausalLM
    from trl import (
        DPOConfig, DPOTrainer, KTOConfig, KTOTrainer, RewardConfig, RewardTrainer, SFTConfig,
        SFTTrainer,
    )

    # Answers with a system prompt and sources, and imported multi-turn pairs.
    q = store.add_user_message(None, "When is the Zorblax festival?")
    src = (SourceRecord(1, None, "festival.md", "Zorblax", "Held on the third of May.", 0.9),)
    rec = AnswerRecord("m", "v1", {"system_prompt": "Be brief."}, 10, 5, 1.0, 1.0)
    good = store.add_assistant_message(q.conversation_id, "On 3 May [1].", rec, src, reply_to_id=q.id)
    bad = store.add_assistant_message(q.conversation_id, "In June.", rec, src, reply_to_id=q.id)
    store.choose(good.id)
    store.rate(bad.id, -1)
    hh = tmp_path / "hh.jsonl"
    lines = shared_file(HH_FILE).read_text().splitlines()
    hh.write_text("\n".join([line for line in lines if len(line) < 700][:6]) + "\n")
    assert import_hh_rlhf(db, hh).imported == 6

    folders = {kind: write_export(export(db, kind, ALL_TRAIN), tmp_path / kind, "hf")
               for kind in ("preference", "kto", "sft")}
    common = dict(bf16=False, report_to=[], max_steps=1, logging_steps=1, save_strategy="no",
                  per_device_train_batch_size=4, max_length=256, use_cpu=True)

    def train(name, trainer_cls, config_cls, model, kind, **kw):
        torch.manual_seed(0)
        data = load_from_disk(str(folders[kind]))["train"]
        trainer = trainer_cls(
            model=model, args=config_cls(output_dir=str(tmp_path / name), **common),
            train_dataset=data, processing_class=tokenizer, **kw,
        )
        trainer.train()
        losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
        assert losses and all(torch.isfinite(torch.tensor(losses))), (name, trainer.state.log_history)

    policy = LlamaForCausalLM(_tiny_llama(tokenizer))
    # A policy passed as an object has no path to load a reference from: pass a frozen copy.
    train("dpo", DPOTrainer, DPOConfig, policy, "preference", ref_model=copy.deepcopy(policy))
    policy = LlamaForCausalLM(_tiny_llama(tokenizer))
    train("kto", KTOTrainer, KTOConfig, policy, "kto", ref_model=copy.deepcopy(policy))
    reward = AutoModelForSequenceClassification.from_config(_tiny_llama(tokenizer, num_labels=1))
    assert reward.config.pad_token_id == tokenizer.pad_token_id
    train("reward", RewardTrainer, RewardConfig, reward, "preference")
    train("sft", SFTTrainer, SFTConfig, LlamaForCausalLM(_tiny_llama(tokenizer)), "sft")

