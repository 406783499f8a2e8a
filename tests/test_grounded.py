"""Grounded examples from SQuAD files (real SQLite, the real embedding model, FAISS and the
product's retrieval), their on-policy pairs, and the export's origin filter."""

from __future__ import annotations

import json
import re

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from alignment.errors import ImportFileError
from alignment.export import ExportOptions, export
from alignment.grounded import ABSTENTION, judge
from alignment.on_policy import collect, grounded_examples
from alignment.squad import import_squad
from assistant.bootstrap import open_library
from assistant.cli import main
from assistant.chat.prompting import SOURCES_INSTRUCTION
from assistant.storage.conversations import SourceRecord
from assistant.storage.pairs import delete_pair, list_pairs
from assistant.storage.schema import Conversation, Message

SYSTEM = "You are a helpful assistant."

CONTEXTS = [
    "The Normans were the people who in the 10th and 11th centuries gave their name to "
    "Normandy, a region in France. They were descended from Norse raiders and pirates from "
    "Denmark, Iceland and Norway under their leader Rollo.",
    "Computational complexity theory classifies computational problems according to their "
    "inherent difficulty. A problem is regarded as inherently difficult if its solution "
    "requires significant resources, whatever the algorithm used.",
    "Bakeries sell bread, cakes and pastries. Sourdough bread is leavened with a starter of "
    "wild yeast and lactic acid bacteria rather than baker's yeast.",
]


def qa(qid: str, question: str, context: str, answer: str | None, impossible: bool = False) -> dict:
    answers = [] if answer is None else [{"text": answer, "answer_start": context.find(answer)}]
    item = {"id": qid, "question": question, "answers": answers}
    if impossible:
        item["is_impossible"] = True
    return item


def squad(version: str) -> dict:
    v2 = version == "v2.0"
    normans = [
        qa("n1", "In what country is Normandy located?", CONTEXTS[0], "France"),
        qa("n2", "Who was the leader of the Norse raiders?", CONTEXTS[0], "Rollo"),
    ]
    if v2:
        normans.append(qa("n3", "Who gave their name to Bavaria?", CONTEXTS[0], None, impossible=True))
    return {"version": version, "data": [
        {"title": "Normans", "paragraphs": [{"context": CONTEXTS[0], "qas": normans}]},
        {"title": "Complexity", "paragraphs": [{"context": CONTEXTS[1], "qas": [
            qa("c1", "How does complexity theory classify problems?", CONTEXTS[1],
               "according to their inherent difficulty"),
            # The gold span is not in the paragraph: skipped and counted.
            {"id": "c2", "question": "What is a Turing machine?",
             "answers": [{"text": "a mathematical model", "answer_start": 3}]},
        ]}]},
        {"title": "Bakery", "paragraphs": [{"context": CONTEXTS[2], "qas": [
            qa("b1", "What is sourdough leavened with?", CONTEXTS[2], "a starter of wild yeast"),
        ]}]},
    ]}


@pytest.fixture(scope="module")
def warm_embedder():
    """Load the embedding model once for the module (later loads reuse the warm files)."""
    from assistant.config import Settings
    from assistant.documents.embedding import Embedder

    return Embedder(Settings().retrieval.embedding_model)


@pytest.fixture
def library(settings, db, warm_embedder):
    lib = open_library(settings, db)
    yield lib


def write(tmp_path, obj, name="squad.json"):
    path = tmp_path / name
    path.write_text(json.dumps(obj) if not isinstance(obj, str) else obj)
    return path


def test_import_v2_makes_documents_and_grounded_examples(db, library, store, tmp_path):
    path = write(tmp_path, squad("v2.0"))
    report = import_squad(db, library, path, SYSTEM)
    assert (report.version, report.articles, report.questions) == ("v2.0", 3, 6)
    assert [d.split(":")[0] for d in report.documents] == ["Normans.txt", "Complexity.txt", "Bakery.txt"]
    assert len(library.store.list_documents()) == 3
    assert report.span_not_in_context == 1 and report.imported == 5
    assert report.unanswerable == 1 and report.answerable + report.not_retrieved == 4

    examples = {e.question: e for e in grounded_examples(db)}
    n1 = examples["In what country is Normandy located?"]
    # The prompt is the chat's: the system prompt with the sources instruction, the question
    # with the relevant sources the product's retrieval returned, numbered.
    hits = library.retriever.relevant(n1.question).hits
    assert [s.text for s in n1.sources] == [h.text for h in hits]
    gold = next(s.rank for s in n1.sources if "France" in s.text)
    assert n1.reference == f"France [{gold}]." and n1.answers == ("France",)
    prompt = export(db, "sft", ExportOptions(test_fraction=0)).train
    row = next(r for r in prompt if r["messages"][-1]["content"] == n1.reference)
    assert row["messages"][0] == {"role": "system", "content": f"{SYSTEM}\n\n{SOURCES_INSTRUCTION}"}
    assert row["messages"][1]["content"].startswith("Sources:\n\n[1] ")
    assert row["messages"][1]["content"].endswith(f"\n\nQuestion: {n1.question}")
    # v2's unanswerable question is taught to abstain, with the same kind of prompt.
    n3 = examples["Who gave their name to Bavaria?"]
    assert n3.reference == ABSTENTION and n3.answers == () and n3.sources

    # Importing again adds nothing (resumes after a stop) and re-ingests no document.
    again = import_squad(db, library, path, SYSTEM)
    assert again.imported == 0 and again.duplicates == 5
    assert all("already stored" in d for d in again.documents)
    assert store.counts()["conversations"] == 5


def test_quoted_targets_answer_quote_the_holding_sentence_and_cite(env_settings, db, library, tmp_path):
    """`data import squad --quote`: the reference answer is the short answer citing its source,
    then the source's sentence that holds the span, word for word with its [n]: what the quoted
    answer mode shows. The on-policy check finds nothing misquoted in it, the quoted mode's
    composer keeps it as it is, and the abstention stays the abstention."""
    from alignment.grounded import judge as judge_answer
    from alignment.on_policy import reason
    from assistant.chat.answer_modes import compose, quotes, unverified_quotes

    path = write(tmp_path, squad("v2.0"))
    runner = CliRunner()
    result = runner.invoke(main, ["data", "import", "squad", str(path), "--quote"])
    assert result.exit_code == 0, result.output
    examples = {e.question: e for e in grounded_examples(db)}
    n2 = examples["Who was the leader of the Norse raiders?"]
    gold = next(s.rank for s in n2.sources if "Rollo" in s.text)
    sentence = ("They were descended from Norse raiders and pirates from Denmark, Iceland and "
                "Norway under their leader Rollo.")
    assert n2.reference == f'Rollo [{gold}].\n\n"{sentence}" [{gold}]'
    texts = [s.text for s in n2.sources]
    assert quotes(n2.reference) and not unverified_quotes(n2.reference, texts)
    verdict = judge_answer(n2.reference, n2.answers, texts)
    assert verdict.quotes_verbatim and reason(verdict, should_abstain=False) is None
    composed = compose("quoted", n2.reference, n2.question, texts)
    assert composed.how == "model+quote" and composed.text == n2.reference
    assert examples["Who gave their name to Bavaria?"].reference == ABSTENTION
    with db.read() as s:
        params = [m.params for m in s.scalars(select(Message).where(Message.role == "assistant"))]
    assert {p["grounded"]["target"] for p in params} == {"quoted"}


def test_import_v1_and_answer_not_retrieved_abstains(db, library, tmp_path):
    obj = squad("1.1")
    # Only the Normans article becomes a document: the bakery question's answer is in no
    # retrieved source, so its example abstains.
    import_squad(db, library, write(tmp_path, obj), SYSTEM, titles=["Normans"])
    report = import_squad(db, library, write(tmp_path, obj), SYSTEM, documents=False, titles=["Bakery"])
    assert report.version == "1.1" and report.not_retrieved == 1 and report.imported == 1
    bakery = next(e for e in grounded_examples(db) if "sourdough" in e.question)
    assert bakery.reference == ABSTENTION and bakery.answers == ()
    assert len(library.store.list_documents()) == 1


@pytest.mark.parametrize("content, reason", [
    ('{"chosen": "a", "rejected": "b"}', "no 'data'"),
    ("[1, 2]", "not a JSON object"),
    ("not json", "not JSON"),
    ('{"data": [{"title": "A", "paragraphs": [{"context": "x", "qas": [{"id": "1"}]}]}]}', "no 'answers'"),
])
def test_not_squad_is_refused_and_nothing_imported(db, library, store, tmp_path, content, reason):
    with pytest.raises(ImportFileError, match=reason) as err:
        import_squad(db, library, write(tmp_path, content), SYSTEM)
    assert "Nothing was imported" in str(err.value)
    assert store.counts()["conversations"] == 0 and library.store.list_documents() == []


class Scripted:
    """Answers chosen per question: the test is about the pair logic, not the model."""

    def __init__(self, answers: dict[str, str], stop_after: int | None = None) -> None:
        self.answers, self.stop_after, self.calls = answers, stop_after, 0

    def __call__(self, prompts):
        self.calls += 1
        if self.stop_after is not None and self.calls > self.stop_after:
            raise KeyboardInterrupt
        return [next(a for q, a in self.answers.items() if p[-1]["content"].endswith(q)) for p in prompts]


def test_on_policy_pairs_resume_and_show_on_the_feedback_page(db, library, tmp_path):
    import_squad(db, library, write(tmp_path, squad("v2.0")), SYSTEM)
    examples = {e.question: e for e in grounded_examples(db)}
    gold = {q: next((s.rank for s in e.sources if e.answers and e.answers[0] in s.text), 1)
            for q, e in examples.items()}
    france = gold["In what country is Normandy located?"]
    script = {
        "In what country is Normandy located?": f"It is in France [{france}].",  # good
        "Who was the leader of the Norse raiders?": "The answer to this question is:",  # wrong
        "How does complexity theory classify problems?": "According to their inherent difficulty.",  # uncited
        "Who gave their name to Bavaria?": "The Normans [1].",  # fails to abstain
        "What is sourdough leavened with?": "A starter of wild yeast [1].",
    }
    # A run stopped after its first batch keeps that batch; the next resumes.
    with pytest.raises(KeyboardInterrupt):
        collect(db, Scripted(script, stop_after=1), "base", "model", "engine", batch_size=2,
                repetition_penalty=1.1)
    assert sum("base" in e.answered for e in grounded_examples(db)) == 2
    report = collect(db, Scripted(script), "base", "model", "engine", batch_size=2, repetition_penalty=1.1)
    assert report.done_before == 2 and report.answered == 3
    assert collect(db, Scripted(script), "base", "model", "engine").answered == 0  # all done

    by_question = {e.question: e.answered["base"] for e in grounded_examples(db)}
    assert by_question["In what country is Normandy located?"] == "kept"
    for q in ("Who was the leader of the Norse raiders?", "How does complexity theory classify problems?",
              "Who gave their name to Bavaria?"):
        assert by_question[q] == "rejected"
    with db.read() as s:
        made = s.query(Message).filter(Message.model_version == "base").all()
        reasons = {m.params["on_policy"]["rejected"] for m in made}
        penalties = {m.params["repetition_penalty"] for m in made}
    assert {"wrong", "uncited", "not_abstained"} <= reasons
    assert penalties == {1.1}  # recorded with each rejected answer

    pairs = export(db, "preference", ExportOptions(test_fraction=0)).train
    rejected = {p["rejected"][0]["content"] for p in pairs}
    assert "The answer to this question is:" in rejected and "The Normans [1]." in rejected
    assert not any("It is in France" in r for r in rejected)
    pair = next(p for p in pairs if p["rejected"][0]["content"] == "The Normans [1].")
    assert pair["chosen"][0]["content"] == ABSTENTION
    assert pair["prompt"] == examples["Who gave their name to Bavaria?"].messages()
    # SFT keeps only the grounded answers.
    sft = export(db, "sft", ExportOptions(test_fraction=0)).train
    assert {r["messages"][-1]["content"] for r in sft} == {e.reference for e in examples.values()}

    shown = list_pairs(db, origin="imported")
    assert {p.origin for p in shown} == {"imported"} and len(shown) == 5
    bad = next(p for p in shown if "The Normans [1]." in p.rejected)
    assert delete_pair(db, bad.kind, bad.id)
    assert "The Normans [1]." not in {
        p["rejected"][0]["content"] for p in export(db, "preference", ExportOptions(test_fraction=0)).train}
    assert list_pairs(db, origin="feedback") == []


def test_export_filters_by_origin(env_settings, db, library, store, tmp_path):
    import_squad(db, library, write(tmp_path, squad("v2.0")), SYSTEM, titles=["Normans"])
    chat = store.create_conversation()
    q = store.add_user_message(chat.id, "hi")
    from assistant.storage.conversations import AnswerRecord

    record = AnswerRecord("m", "base", {"system_prompt": SYSTEM}, 1, 1, 1.0, None)
    a = store.add_assistant_message(chat.id, "hello", record, reply_to_id=q.id)
    store.rate(a.id, 1)
    with db.write() as s:  # a synthetic example: same shape, its own origin
        conv = s.get(Conversation, 1)
        conv.source = "synth:library:1"
    rows = {o: export(db, "sft", ExportOptions(test_fraction=0, origin=o)).report for o in
            ("all", "feedback", "imported", "synthetic")}
    assert rows["all"].by_origin == {"feedback": 1, "imported": 2, "synthetic": 1}
    assert (rows["feedback"].rows_out, rows["imported"].rows_out, rows["synthetic"].rows_out) == (1, 2, 1)
    grounded = export(db, "sft", ExportOptions(test_fraction=0, grounded=True)).report
    assert grounded.rows_out == 3  # the chat answer had no sources

    runner = CliRunner()
    out = tmp_path / "export"
    result = runner.invoke(main, ["data", "export", "--kind", "sft", "--origin", "synthetic",
                                  "--test-fraction", "0", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "origin: synthetic 1" in result.output
    assert len((out / "train.jsonl").read_text().splitlines()) == 1


def test_judge_rules():
    sources = ["Normandy is in France.", "Rollo led them."]
    v = judge("France [1].", ("France",), sources)
    assert v.correct and v.cites_right and v.good
    assert not judge("France [2].", ("France",), sources).good  # cites a source without it
    assert not judge("France.", ("France",), sources).good  # no citation
    assert not judge("Germany [1].", ("France",), sources).correct
    assert judge(f"Sorry. {ABSTENTION}", (), sources).good
    assert not judge("France [1].", (), sources).good
    assert not judge(ABSTENTION, ("France",), sources).correct  # abstaining on an answerable one
    assert SourceRecord  # the stored shape the judge's sources come from


def test_grounded_metrics_and_the_gate(db, settings):
    from alignment.eval_metrics import grounded_metrics, summarize, table
    from assistant.gate import gate_report
    from assistant.registry import EvalRecord, Registry
    from datetime import UTC, datetime

    sources = ["Normandy is in France.", "Rollo led them."]
    answerable = [True] * 20 + [False] * 4
    # The candidate answers 16 of 20 (14 citing the source that holds the answer) and
    # abstains on 3 of 4; the baseline answers 4 (none cited) and never abstains.
    cand = ([judge("France [1].", ("France",), sources)] * 14 + [judge("France.", ("France",), sources)] * 2
            + [judge("Paris [1].", ("France",), sources)] * 4
            + [judge(ABSTENTION, (), sources)] * 3 + [judge("Rollo [2].", (), sources)])
    base = ([judge("France.", ("France",), sources)] * 4 + [judge("The answer is:", ("France",), sources)] * 16
            + [judge("Rollo [2].", (), sources)] * 4)
    m = grounded_metrics(cand, base, answerable)
    assert (m["grounded_answerable"], m["grounded_unanswerable"]) == (20, 4)
    assert m["grounded_accuracy"] == 0.8 and m["baseline_grounded_accuracy"] == 0.2
    assert m["grounded_accuracy_verdict"] == "better" and m["grounded_accuracy_p_value"] < 0.05
    assert m["citation_accuracy"] == 14 / 16 and m["citation_n"] == 16
    assert m["baseline_citation_accuracy"] == 0 and m["baseline_citation_n"] == 4
    assert m["grounded_cited"] == 14 / 20 and m["abstention"] == 0.75 and m["baseline_abstention"] == 0
    assert m["grounded_accuracy_low"] < 0.8 < m["grounded_accuracy_high"]

    rec = EvalRecord("v1", "base", None, {**m, "grounded_source": "test"}, datetime.now(UTC))
    rows = {r["measure"]: r for r in table(rec)}
    assert rows["grounded answer accuracy (95% CI)"]["candidate"].startswith("80.0% (")
    assert rows["citation accuracy (of correct answers)"]["n"] == "16 / 4"
    assert any("abstention on unanswerable: 75.0%" in line for line in summarize(rec))

    # The gate: grounded QA that the sign test finds better lets a version through without a
    # reward model; worse refuses.
    from tests.test_registry import make_version

    registry = Registry(db, settings.versions_dir)
    v1 = make_version(registry)
    registry.record_evaluation(v1.name, "base", None, m)
    report = gate_report(registry, v1.name)
    assert report.passes and report.verdict == "better"
    assert any("grounded answer accuracy 80%" in line for line in report.checked)
    swapped = grounded_metrics(base, cand, answerable)
    registry.record_evaluation(v1.name, "base", None, swapped)
    report = gate_report(registry, v1.name)
    assert not report.passes and any("grounded answer accuracy 20%" in r for r in report.reasons)


def test_pick_caps_the_unanswerable_share():
    from alignment.squad import SquadQuestion, pick

    qs = [SquadQuestion(str(i), "t", "q?", "c", () if i % 2 else ("c",), () if i % 2 else (0,), bool(i % 2))
          for i in range(100)]
    sample = pick(qs, 40, unanswerable_share=0.25)
    assert len(sample) == 40 and sum(q.impossible for q in sample) == 10
    assert pick(qs, 40) == pick(qs, 40) and len(pick(qs, 40)) == 40  # seeded
    assert sum(q.impossible for q in pick(qs, None, unanswerable_share=0.0)) == 0


def test_the_grounded_loop_end_to_end_on_the_tiny_model(tiny_settings, tmp_path, warm_embedder, monkeypatch):
    """import squad -> on-policy (the real transformers engine) -> train grounded (SFT, then
    DPO on top) -> eval with grounded QA on retrieved sources -> calibrate the abstention
    threshold, through the CLI."""
    from alignment.evaluate import ABSTAIN_CURVE
    from assistant.bootstrap import open_database, open_registry

    path = write(tmp_path, squad("v2.0"))

    def cli(*args):
        result = CliRunner().invoke(main, list(args))
        assert result.exit_code == 0, result.output + repr(result.exception)
        return result.output

    out = cli("data", "import", "squad", str(path))
    assert "5 grounded examples imported of 6 questions" in out and "1 skipped" in out
    out = cli("data", "on-policy", "--max-new-tokens", "4", "--batch-size", "3")
    assert "base: answered 5 grounded examples (0 done before, of 5)" in out
    penalty = tiny_settings.generation.repetition_penalty  # the chat's: what users would read
    assert f"greedy, repetition penalty {penalty:g}." in out
    out = cli("data", "on-policy")
    assert "answered 0 grounded examples (5 done before" in out
    out = cli("train", "grounded", "--steps", "1", "--lora-r", "4", "--max-length", "400",
              "--batch-size", "2", "--test-fraction", "0", "--min-rows", "1")
    assert "Registered v1: sft from base" in out and "Registered v2: dpo from v1" in out, out
    assert "Next: `assistant models calibrate v2 --grounded-file FILE`" in out and "`assistant eval v2`" in out
    db = open_database(tiny_settings)
    registry = open_registry(tiny_settings, db)
    assert registry.lineage("v2") == ["v2", "v1", "base"]
    assert registry.get("v1").data["kind"] == "sft" and registry.get("v2").data["kind"] == "preference"
    # Grounded SFT's own learning rate; the DPO on top keeps DPO's.
    assert (registry.get("v1").config["learning_rate"], registry.get("v2").config["learning_rate"]) == (5e-4, 5e-5)
    out = cli("eval", "v2", "--against", "base", "--grounded-file", str(path), "--grounded", "4",
              "--prompts", "0", "--qa", "0")
    assert "grounded QA on retrieved sources" in out and "grounded answer accuracy" in out
    m = registry.evaluations("v2")[-1].metrics
    assert m["grounded_questions"] == 4 and m["grounded_answerable"] + m["grounded_unanswerable"] == 4
    # Calibrating v2's abstention threshold: too few answerable questions is refused, v2 unchanged.
    refused = CliRunner().invoke(main, ["models", "calibrate", "v2", "--grounded-file", str(path),
                                        "--all-paragraphs"])
    assert refused.exit_code == 1 and "needs at least 10" in refused.output
    assert registry.abstain_threshold("v2") is None
    import alignment.calibration

    monkeypatch.setattr(alignment.calibration, "MIN_ANSWERABLE", 2)
    out = cli("models", "calibrate", "v2", "--grounded-file", str(path), "--all-paragraphs")
    kept = registry.get("v2").metrics["abstention_calibration"]
    assert kept["asked"] == 5 and kept["answerable"] == 4 and kept["with_probability"] == 5
    assert [r["min_abstain_probability"] for r in kept["curve"]] == list(ABSTAIN_CURVE)
    assert registry.abstain_threshold("v2") == kept["min_abstain_probability"] in (*ABSTAIN_CURVE, 1.0)
    assert f"v2's threshold is now {kept['min_abstain_probability']:g}" in out
    assert "of the training article" not in out  # asked the file's questions, not the examples
    assert f"abstention threshold: {kept['min_abstain_probability']:g} (calibrated" in cli("models", "show", "v2")
    # The evaluation answers with it, as the chat does.
    cli("eval", "v2", "--against", "base", "--grounded-file", str(path), "--grounded", "4",
        "--prompts", "0", "--qa", "0", "--answer-mode", "quoted")
    m = registry.evaluations("v2")[-1].metrics
    assert m["min_abstain_probability"] == kept["min_abstain_probability"]
    assert m["baseline_min_abstain_probability"] == 0.2


def test_synth_keeps_only_questions_checked_against_their_chunk(db, library, tmp_path):
    from alignment.synth import EmptyLibrary, synthesize

    def reply(prompts, params):
        out = []
        for p in prompts:
            text = p[-1]["content"]
            if "Normans" in text:
                out.append("Question: Who led the Norse raiders?\nAnswer: Rollo")  # checkable
            elif "Bakeries" in text:
                out.append("Question: What do bakeries sell?\nAnswer: croissants and coffee")  # not in it
            else:
                out.append("I cannot do that.")  # unparsed
        return out

    with pytest.raises(EmptyLibrary, match="no documents"):
        synthesize(db, library, reply, SYSTEM)
    for name, text in zip(("normans.txt", "complexity.txt", "bakery.txt"), CONTEXTS):
        assert library.ingestor.ingest_bytes(name, text.encode()).ok
    state = tmp_path / "tried.json"
    report = synthesize(db, library, reply, SYSTEM, state=state, limit=2, batch_size=1,
                        written_by="writer v7")
    assert (report.chunks, report.tried) == (3, 2)
    rest = synthesize(db, library, reply, SYSTEM, state=state, written_by="writer v7")  # the third chunk
    assert (rest.tried_before, rest.tried) == (2, 1)
    assert report.kept + rest.kept == 1
    assert {**report.dropped, **rest.dropped} == {"answer_not_in_chunk": 1, "unparsed": 1}
    (example,) = grounded_examples(db)
    assert example.question == "Who led the Norse raiders?" and example.answers == ("Rollo",)
    assert example.reference.startswith("Rollo [")
    assert [p.origin for p in list_pairs(db)] == ["synthetic"]
    with db.read() as s:  # which model wrote the question is kept with the example
        (params,) = s.scalars(select(Message.params).where(Message.role == "assistant"))
    assert params["grounded"]["question_by"] == "writer v7"


def test_synth_several_questions_a_chunk_only_named_documents_and_resume(env_settings, db, library,
                                                                         tmp_path):
    """--per-chunk: the first attempt greedy, the others sampled; a question the chunk already
    got is a duplicate; each kept one is its own example. --document picks the chunks; an
    unknown name is refused before anything is made. A chunk tried with K attempts (or by an
    older run, stored as "synth:library:<id>") is not tried again."""
    from alignment.synth import GREEDY, SAMPLED, UnknownDocument, synthesize

    asked = []

    def reply(prompts, params):
        asked.append((len(prompts), params))
        if "Normans" not in prompts[0][-1]["content"]:
            return ["Question: What does a bakery sell?\nAnswer: bread, cakes and pastries"] * len(prompts)
        if params == GREEDY:
            return ["Question: Who led the Norse raiders?\nAnswer: Rollo"] * len(prompts)
        n = sum(1 for _, p in asked if p == SAMPLED)  # the samples differ, or repeat one
        return [["Question: Which region did the Normans name?\nAnswer: Normandy",
                 "Question: who led the Norse raiders ?\nAnswer: Rollo",  # normalised: the same
                 "Question: Where is Normandy?\nAnswer: Spain"][(n - 1) % 3]] * len(prompts)

    for name, text in zip(("normans.txt", "complexity.txt", "bakery.txt"), CONTEXTS):
        assert library.ingestor.ingest_bytes(name, text.encode()).ok
    state = tmp_path / "tried.json"
    with pytest.raises(UnknownDocument, match=r"'nope.txt'.*it has: 'bakery.txt', 'complexity.txt', "
                                              r"'normans.txt'\. Nothing was made"):
        synthesize(db, library, reply, SYSTEM, state=state, documents=["normans.txt", "nope.txt"])
    assert asked == [] and not state.exists() and grounded_examples(db) == []
    # A chunk an older run kept (its source without an attempt number) is not tried again.
    bakery = library.store.document_chunks(
        next(d.id for d in library.store.list_documents() if d.name == "bakery.txt"))[0]
    with db.write() as s:
        s.add(Conversation(title="older", source=f"synth:library:{bakery.id}"))

    report = synthesize(db, library, reply, SYSTEM, state=state, per_chunk=4,
                        documents=["normans.txt", "bakery.txt"])
    assert (report.chunks, report.tried_before, report.tried, report.attempts) == (2, 1, 1, 4)
    assert [p for _, p in asked] == [GREEDY, SAMPLED, SAMPLED, SAMPLED]
    assert (report.kept, report.duplicates, report.dropped) == (2, 1, {"answer_not_in_chunk": 1})
    assert report.kept_share == 0.5
    examples = grounded_examples(db)
    assert sorted(e.question for e in examples) == ["Which region did the Normans name?",
                                                    "Who led the Norse raiders?"]
    with db.read() as s:
        sources = set(s.scalars(select(Conversation.source).where(Conversation.source.like("synth:%"))))
    normans = library.store.document_chunks(
        next(d.id for d in library.store.list_documents() if d.name == "normans.txt"))[0]
    assert sources == {f"synth:library:{bakery.id}", f"synth:library:{normans.id}",
                       f"synth:library:{normans.id}:2"}
    again = synthesize(db, library, reply, SYSTEM, state=tmp_path / "fresh.json", per_chunk=4,
                       documents=["normans.txt"])  # from the stored sources alone
    assert (again.tried_before, again.tried, len(asked)) == (1, 0, 4)

    # Through the CLI: the unknown name is refused before any model loads.
    result = CliRunner().invoke(main, ["data", "synth", "--document", "nope.txt", "--per-chunk", "2"])
    assert result.exit_code == 1 and "No document named 'nope.txt'" in result.output, result.output
    assert "Nothing was made" in result.output


def test_synth_teacher_unreachable_or_failing_loses_nothing(env_settings, db, library, tmp_path):
    """An unreachable teacher: a clear error before anything is tried. A model failing mid-run:
    what was kept stays, the failed batch is not marked tried (the next run tries it)."""
    from alignment.synth import SynthStopped, TRIED_FILE, synthesize
    from assistant.errors import EngineUnavailable
    from tests.llama_server import free_port

    for name, text in zip(("normans.txt", "complexity.txt", "bakery.txt"), CONTEXTS):
        assert library.ingestor.ingest_bytes(name, text.encode()).ok
    state = env_settings.data_dir / TRIED_FILE
    url = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    result = CliRunner().invoke(main, ["data", "synth", "--teacher-url", url, "--teacher-model", "big"])
    assert result.exit_code == 1, result.output
    assert f"The teacher at {url} cannot be used (Connection error.)" in result.output
    assert "--teacher-url" in result.output and "Nothing was tried." in result.output
    assert not state.exists() and grounded_examples(db) == []
    result = CliRunner().invoke(main, ["data", "synth", "--teacher-url", url, "--version", "base"])
    assert result.exit_code == 2 and "exclusive" in result.output

    calls = []

    def dies(prompts, params):
        calls.append(len(prompts))
        if len(calls) > 1:
            raise EngineUnavailable("The model server is unreachable.")
        return ["Question: Who led the Norse raiders?\nAnswer: Rollo" if "Normans" in p[-1]["content"]
                else "Question: What is sourdough leavened with?\nAnswer: a starter of wild yeast"
                for p in prompts]

    with pytest.raises(SynthStopped, match=r"unreachable\. Stopped after 1 chunks: the 1 grounded "
                                           r"examples kept stay.*run `assistant data synth` again"):
        synthesize(db, library, dies, SYSTEM, state=state, batch_size=1,
                   documents=["normans.txt", "bakery.txt"])
    assert len(grounded_examples(db)) == 1  # the first batch's
    assert len(json.loads(state.read_text())) == 1  # the failed chunk was not marked tried
    rest = synthesize(db, library, lambda p, _: ["no"] * len(p), SYSTEM, state=state,
                      documents=["normans.txt", "bakery.txt"])
    assert (rest.tried_before, rest.tried) == (1, 1)


FAQ = ("Frequently asked questions about the Normans. Question: Who led the Norse raiders "
       "that settled Normandy? Answer: Rollo. Question: Which country is Normandy in? Answer: "
       "France.")


@pytest.mark.slow
def test_synth_with_a_real_teacher_server(env_settings, db, library, tmp_path):
    """The teacher: llama_cpp.server on 127.0.0.1 (the embedded model, through the product's
    OpenAI engine) writes the questions; what it writes is kept or dropped by the check, the
    kept ones stored. The teacher dying mid-run keeps what was kept."""
    from alignment.synth import TRIED_FILE, SynthStopped, check, synthesize
    from alignment.teacher import build_teacher, reworded
    from tests.llama_server import BASE, embedded_server

    texts = {"faq.txt": FAQ, "normans.txt": CONTEXTS[0], "bakery.txt": CONTEXTS[2]}
    for name, text in texts.items():
        assert library.ingestor.ingest_bytes(name, text.encode()).ok
    state = env_settings.data_dir / TRIED_FILE
    server = embedded_server(tmp_path)
    try:
        result = CliRunner().invoke(main, ["data", "synth", "--teacher-url", server.url,
                                           "--teacher-model", BASE, "--document", "faq.txt"])
        assert result.exit_code == 0, result.output + repr(result.exception)
        assert f"The teacher ({BASE} at {server.url}) writes the questions." in result.output
        kept = re.search(r"1 chunks tried \(0 before, of 1\), 1 questions asked: (\d+) grounded "
                         r"examples kept", result.output)
        assert kept, result.output
        assert len(grounded_examples(db)) == int(kept[1])

        teacher = build_teacher(env_settings, server.url, BASE)

        def then_dies(prompts, params):
            replies = ["".join(teacher.stream(p, params)).strip() for p in prompts]
            server.stop()  # after the first batch
            return replies

        with pytest.raises(SynthStopped, match=f"The teacher at {server.url} cannot be used "
                                               r".*Stopped after 1 chunks"):
            synthesize(db, library, reworded(then_dies, server.url), SYSTEM, state=state,
                       batch_size=1, documents=["normans.txt", "bakery.txt"])
    finally:
        server.stop()
    assert len(json.loads(state.read_text())) == 2  # the FAQ's chunk and the first batch's
    for example in grounded_examples(db):  # whatever the teacher wrote: kept only when checked
        reply = f"Question: {example.question}\nAnswer: {example.answers[0]}"
        assert any(not isinstance(check(reply, text), str) for text in texts.values())


def test_a_false_abstention_is_rejected_for_that_reason():
    """An answerable question met with "the documents do not say" is counted apart from a
    wrong answer: on-policy runs report how many pairs teach the model not to abstain."""
    from alignment.on_policy import reason

    sources = ["Normandy is a region in the north of France."]
    assert reason(judge(ABSTENTION, ("France",), sources), should_abstain=False) == "abstained"
    assert reason(judge("It is in Spain [1].", ("France",), sources), should_abstain=False) == "wrong"
    assert reason(judge("It is in France [1].", ("France",), sources), should_abstain=False) is None
    assert reason(judge(ABSTENTION, (), sources), should_abstain=True) is None
    assert reason(judge("France [1].", (), sources), should_abstain=True) == "not_abstained"


def test_a_quote_not_in_its_source_is_rejected_and_long_answers_are_judged_on_50_words():
    """data on-policy turns down an answer whose "quote" [n] is not word for word in source n
    (even when it holds the answer); a gold span after the 50th word does not count."""
    from alignment.grounded import MAX_JUDGED_WORDS
    from alignment.on_policy import reason

    sources = ["Normandy is a region in the north of France."]
    altered = 'France [1]. "Normandy is a region in the south of France." [1]'
    assert reason(judge(altered, ("France",), sources), should_abstain=False) == "misquoted"
    exact = 'France [1]. "Normandy is a region in the north of France." [1]'
    assert reason(judge(exact, ("France",), sources), should_abstain=False) is None
    assert judge(exact, ("France",), sources).quotes_verbatim is True
    padded = " ".join(["word"] * MAX_JUDGED_WORDS) + " France [1]."
    assert not judge(padded, ("France",), sources).correct
