"""Property-based tests (hypothesis) of the parts that take arbitrary text: chunking, the
hh-rlhf import, and the export, whose rows must always load into `datasets` and go through
TRL's chat-template step with the real SmolLM2 tokenizer.

Bounded: each property runs a fixed number of examples with no deadline (the machine is
shared), and nothing is written to a hypothesis example database in the checkout.
"""

from __future__ import annotations

import json
import re

import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from alignment.errors import NoTrainingData
from alignment.export import KINDS, ExportOptions, build_export, load_feedback, write_export
from alignment.importers import MalformedPair, import_hh_rlhf, parse_hh_line
from assistant.documents.chunking import chunk_sections, split_units
from assistant.documents.parsing import Section
from assistant.storage import ConversationStore, Database, upgrade
from assistant.storage.conversations import AnswerRecord, SourceRecord

FUZZ = settings(max_examples=100, deadline=None, database=None, print_blob=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
FEW = settings(FUZZ, max_examples=50)

# Unicode of every kind (no surrogates: not encodable text), with extra weight on what
# text parsing cares about: sentence ends, quotes, brackets, blank lines, odd spaces.
SPECIAL = st.sampled_from(
    list(".!?\"'”’)]([ \n\n\t\r\u00a0\u2028\u200b\x00\x0c") + ["\n\n", ". ", "!\" ", "...", "\r\n"])
WORD = st.text(alphabet=st.characters(exclude_categories=("Cs",)), min_size=1, max_size=12)
SENTENCE = st.sampled_from(["The cat sat.", "Is it?", "Yes!", "word", "Dr. Smith came (late).",
                            "A very long hyphenated-word-that-goes-on-and-on-and-on."])
TEXT = st.one_of(
    st.text(max_size=300),
    st.lists(st.one_of(WORD, SPECIAL, SENTENCE), max_size=120).map("".join),
)
#: Longer documents, so that they need several chunks of a few tokens.
DOCUMENT = st.one_of(
    st.text(min_size=40, max_size=1500),
    st.lists(st.one_of(WORD, SPECIAL, SENTENCE, SENTENCE), min_size=20, max_size=250).map("".join),
    st.lists(WORD, min_size=1, max_size=4).map(lambda ws: "".join(ws) * 40),  # no spaces at all
)
VISIBLE = st.text(alphabet=st.characters(exclude_categories=("Cs", "Cc", "Cf", "Z")), min_size=1, max_size=5)


# -- chunking --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tokenizer():
    """The embedding model's own (fast) tokenizer: what ingest measures chunks with."""
    from transformers import AutoTokenizer

    from assistant.documents.embedding import embedded_model_dir

    return AutoTokenizer.from_pretrained(embedded_model_dir())


def counter(tokenizer):
    def count(texts):
        texts = list(texts)
        return [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]] if texts else []
    return count


# Known loss, see test_closing_quotes_after_a_sentence_end_are_kept: compared without them.
_DROPPED_BY_SPLIT = re.compile(r"[\"'”’)\]]")


def squasher(tokenizer):
    """Text without whitespace, without the characters the tokenizer ignores (control and
    format characters, lone combining marks: a sentence cut by tokens loses them, which the
    parser has already removed from real documents) and without the known loss above."""
    ignored: dict[str, bool] = {}

    def squash(text: str) -> str:
        out = []
        for ch in _DROPPED_BY_SPLIT.sub("", "".join(text.split())):
            if ch not in ignored:
                ignored[ch] = not tokenizer(ch, add_special_tokens=False)["input_ids"]
            if not ignored[ch]:
                out.append(ch)
        return "".join(out)
    return squash


@FUZZ
@given(text=DOCUMENT, shape=st.sampled_from([(16, 0), (16, 8), (24, 12), (64, 16)]))
def test_chunks_respect_the_token_limit_and_cover_the_text_in_order(tokenizer, text, shape):
    size, overlap = shape
    count = counter(tokenizer)
    chunks = chunk_sections([Section(text, page=2, heading="H")], count, tokenizer, size, overlap)
    event(f"{min(len(chunks), 3)}{'+' if len(chunks) >= 3 else ''} chunks")

    assert [c.position for c in chunks] == list(range(len(chunks)))
    for c in chunks:
        assert c.text and c.text == c.text.strip() and (c.page, c.heading) == (2, "H")
        assert c.token_count <= size
        assert count([c.text])[0] <= size, (c.text, count([c.text]))

    # In order and without gaps: each chunk starts inside (or right after) the previous
    # one and ends further on; together they hold all the text but its whitespace.
    squash = squasher(tokenizer)
    flat = squash(text)
    start = end = 0
    for c in chunks:
        piece = squash(c.text)
        found = [m.start() for m in re.finditer(f"(?={re.escape(piece)})", flat)
                 if start <= m.start() <= end]
        assert found, (piece, flat[start:end + len(piece)])
        start = found[-1]
        end = max(end, start + len(piece))
    assert end == len(flat), (flat[end:], [c.text for c in chunks])


@FEW
@given(data=st.one_of(TEXT.map(lambda t: t.encode("utf-8")), st.binary(max_size=300)))
def test_parsing_then_chunking_arbitrary_bytes_never_crashes(tokenizer, data):
    from assistant.errors import DocumentError
    from assistant.documents.parsing import parse_document

    for name in ("notes.txt", "notes.md"):
        try:
            parsed = parse_document(name, data)
        except DocumentError as err:  # a reason for the user, not a crash
            assert name in str(err)
            continue
        chunks = chunk_sections(parsed.sections, counter(tokenizer), tokenizer, 32, 8)
        assert all(c.token_count <= 32 for c in chunks)


def test_closing_quotes_after_a_sentence_end_are_kept():
    text = 'He said "Stop." Then he left (quietly.) The end.'
    assert "".join(split_units(text)).split() == text.split()


# -- hh-rlhf import --------------------------------------------------------------------------
CONTENT = st.text(min_size=1, max_size=60).filter(
    lambda t: t.strip() and "\n\nHuman:" not in f"\n\n{t}" and "\n\nAssistant:" not in f"\n\n{t}"
    and not t.strip().startswith(("Human:", "Assistant:"))
)


@st.composite
def dialogues(draw):
    """A well-formed hh-rlhf pair: alternating turns from Human, ending on two different
    Assistant answers."""
    n = draw(st.integers(0, 2))
    turns = []
    for _ in range(n):
        turns += [("Human", draw(CONTENT)), ("Assistant", draw(CONTENT))]
    turns.append(("Human", draw(CONTENT)))
    chosen, rejected = draw(CONTENT), draw(CONTENT)
    prefix = "".join(f"\n\n{role}: {text}" for role, text in turns)
    return turns, chosen, rejected, {"chosen": f"{prefix}\n\nAssistant: {chosen}",
                                     "rejected": f"{prefix}\n\nAssistant: {rejected}"}


JSON = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=False) | st.integers() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
LINES = st.one_of(
    st.text(max_size=200),
    dialogues().map(lambda d: json.dumps(d[3])),
    dialogues().map(lambda d: json.dumps(d[3])[: len(json.dumps(d[3])) // 2]),  # cut short
    st.fixed_dictionaries({"chosen": st.one_of(TEXT, JSON), "rejected": st.one_of(TEXT, JSON)}).map(json.dumps),
    JSON.map(json.dumps),
)


@FUZZ
@given(line=LINES)
@example(line='{"chosen": "\\n\\nHuman:", "rejected": "\\n\\nAssistant:"}')
def test_a_line_is_a_pair_or_a_reason_never_an_exception(line):
    try:
        pair = parse_hh_line(line)
    except MalformedPair as err:
        assert str(err)
        event("malformed")
        return
    event("a pair")
    assert pair.prompt and pair.prompt[-1].role == "user" and pair.chosen and pair.rejected
    roles = [t.role for t in pair.prompt]
    assert all(a != b for a, b in zip(roles, roles[1:], strict=False))  # turns alternate


@FUZZ
@given(d=dialogues())
def test_a_well_formed_pair_parses_to_its_turns(d):
    turns, chosen, rejected, obj = d
    if chosen.strip() == rejected.strip():
        with pytest.raises(MalformedPair):
            parse_hh_line(json.dumps(obj))
        return
    pair = parse_hh_line(json.dumps(obj))
    role = {"Human": "user", "Assistant": "assistant"}
    assert [(t.role, t.content) for t in pair.prompt] == [(role[r], c.strip()) for r, c in turns]
    assert (pair.chosen, pair.rejected) == (chosen.strip(), rejected.strip())


@pytest.mark.parametrize("line", ["1" * 5000, "[" * 100_000], ids=["long-integer", "deep-nesting"])
def test_json_that_python_refuses_is_reported_malformed(line):
    with pytest.raises(MalformedPair):
        parse_hh_line(line)


@pytest.fixture(scope="module")
def module_db(tmp_path_factory):
    database = Database(f"sqlite:///{tmp_path_factory.mktemp('fuzz-db') / 'a.db'}", 2)
    upgrade(database)
    yield database
    database.dispose()


@FEW
@given(lines=st.lists(st.one_of(LINES.map(lambda s: s.encode("utf-8")), st.binary(max_size=80)),
                      max_size=25))
def test_importing_arbitrary_lines_accounts_for_every_line(module_db, tmp_path_factory, lines):
    lines = [re.sub(rb"[\r\n]", b" ", line) for line in lines]  # one line each
    path = tmp_path_factory.mktemp("hh") / "pairs.jsonl"
    path.write_bytes(b"\n".join(lines))
    before = ConversationStore(module_db).counts()["conversations"]
    report = import_hh_rlhf(module_db, path)
    nonblank = [i for i, line in enumerate(lines, 1) if line.decode("utf-8", "replace").strip()]
    assert report.pairs_in == len(nonblank)
    assert report.imported + report.duplicates + len(report.malformed) == report.pairs_in
    assert [m.line for m in report.malformed] == sorted({m.line for m in report.malformed})
    assert {m.line for m in report.malformed} <= set(nonblank)
    assert all(m.reason for m in report.malformed)
    assert ConversationStore(module_db).counts()["conversations"] == before + report.imported


# -- export ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def chat_tokenizer(tiny_model_dir):
    """The real SmolLM2 tokenizer and chat template (from the embedded GGUF)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


ANSWER = st.one_of(TEXT, st.just(""))  # a stopped answer can be empty
QUESTION = st.tuples(TEXT, VISIBLE, TEXT).map("".join)  # ChatService refuses blank ones


@st.composite
def conversations(draw):
    """A script of what users did: questions, alternative answers (with their system
    prompt and sources), ratings with tags, choices and edits, in any order."""
    convs = []
    for _ in range(draw(st.integers(1, 3))):
        exchanges = []
        for _ in range(draw(st.integers(1, 3))):
            answers = draw(st.lists(st.tuples(
                ANSWER,
                st.one_of(st.none(), TEXT),  # system prompt
                st.lists(st.tuples(TEXT, st.one_of(st.none(), TEXT), TEXT), max_size=2),  # sources
            ), max_size=3))
            acts = draw(st.lists(st.tuples(
                st.sampled_from(["up", "down", "clear", "choose", "edit"]),
                st.integers(0, 2), TEXT, st.lists(st.sampled_from(["unsafe", "Inaccurate", " x "]), max_size=2),
            ), max_size=4))
            exchanges.append((draw(QUESTION), answers, acts))
        convs.append(exchanges)
    return convs


def fill(db: Database, script) -> None:
    from sqlalchemy import text

    with db.write() as s:  # cascades to messages, feedback, choices, edits, sources
        s.execute(text("DELETE FROM conversations"))
    store = ConversationStore(db)
    for exchanges in script:
        conv = None
        for question, answers, acts in exchanges:
            q = store.add_user_message(conv, question)
            conv = q.conversation_id
            ids = []
            for content, system, sources in answers:
                record = AnswerRecord(model_id="m", model_version="v1",
                                      params={} if system is None else {"system_prompt": system},
                                      prompt_tokens=1, completion_tokens=1, latency_ms=1.0, ttft_ms=None)
                srcs = tuple(SourceRecord(n, None, name or "doc", loc, body, 0.5)
                             for n, (name, loc, body) in enumerate(sources, 1))
                ids.append(store.add_assistant_message(conv, content, record, srcs, reply_to_id=q.id).id)
            for act, which, body, tags in acts:
                if not ids:
                    break
                target = ids[which % len(ids)]
                if act in ("up", "down", "clear"):
                    store.rate(target, {"up": 1, "down": -1, "clear": None}[act], body, tags)
                elif act == "choose":
                    store.choose(target)
                elif body.strip():
                    store.edit(target, body)


COLUMNS = {"preference": {"prompt", "chosen", "rejected"}, "kto": {"prompt", "completion", "label"},
           "sft": {"messages"}}


def _check_messages(messages) -> None:
    assert isinstance(messages, list) and messages
    for m in messages:
        assert set(m) == {"role", "content"} and m["role"] in ("system", "user", "assistant")
        assert isinstance(m["content"], str)


@FEW
@given(script=conversations(), mask=st.booleans())
def test_every_export_loads_into_datasets_and_trl_templates(module_db, chat_tokenizer, script, mask):
    from datasets import Dataset
    from trl.data_utils import maybe_apply_chat_template

    fill(module_db, script)
    snapshot = load_feedback(module_db)
    for kind in KINDS:
        try:
            result = build_export(snapshot, kind, ExportOptions(test_fraction=0.0, mask_pii=mask))
        except NoTrainingData as err:
            assert str(err)
            event(f"{kind}: no rows")
            continue
        event(f"{kind}: rows")
        rows = result.train + result.test
        assert result.report.rows_out == len(rows) > 0
        dataset = Dataset.from_list(rows)
        assert set(dataset.column_names) == COLUMNS[kind]
        for row in dataset:
            for key in ("prompt", "chosen", "rejected", "completion", "messages"):
                if key in row:
                    _check_messages(row[key])
            if kind == "kto":
                assert isinstance(row["label"], bool)
            if kind != "sft":
                assert row["prompt"][-1]["role"] == "user"
            templated = maybe_apply_chat_template(row, chat_tokenizer)
            assert all(isinstance(v, str) for k, v in templated.items() if k != "label")


@settings(FEW, max_examples=8, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                      HealthCheck.too_slow])
@given(script=conversations())
def test_written_exports_load_with_datasets_json_loader(module_db, tmp_path, script):
    from datasets import load_dataset

    fill(module_db, script)
    snapshot = load_feedback(module_db)
    for kind in KINDS:
        try:
            result = build_export(snapshot, kind, ExportOptions(test_fraction=0.5))
        except NoTrainingData:
            continue
        out = write_export(result, tmp_path / kind)
        files = {s: str(out / f"{s}.jsonl") for s in ("train", "test") if getattr(result.report, s)}
        loaded = load_dataset("json", data_files=files, cache_dir=str(tmp_path / "hf-cache"))
        for split, rows in result.splits().items():
            if rows:
                assert loaded[split].to_list() == rows
