"""The answerability head: its rules (threshold, AUC), its input, and the loop on the tiny
model: grounded examples -> `assistant train answerability` -> a registered head that never
chats -> quoted mode abstaining by it, in the chat and in `assistant eval`."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from alignment.answerability import auc, choose, judged, rates, weak
from assistant.chat.answer_modes import ABSTENTION, compose
from assistant.cli import main
from tests.test_grounded import CONTEXTS, qa, write

SYSTEM = "You are a helpful assistant."


def test_the_threshold_keeps_false_abstention_within_the_budget():
    probabilities = [0.9, 0.8, 0.7, 0.6, 0.4, 0.3, 0.2, 0.1]
    labels = [1, 1, 0, 1, 0, 0, 1, 0]  # 1: the source does not answer
    assert auc(probabilities, labels) == pytest.approx(12 / 16)
    assert auc([0.5, 0.5], [1, 0]) == 0.5 and auc([0.1], [1]) is None
    assert rates(probabilities, labels, 0.6) == (0.75, 0.25)
    # The lowest threshold with at most 25% of the answered questions judged not answered.
    assert choose(probabilities, labels, 0.25) == 0.6
    assert choose(probabilities, labels, 0.0) == 0.8
    assert choose([0.5, 0.9], [0, 0], -1.0) == 1.0  # none low enough: never abstain
    # A head that abstains more on the answered questions is not trusted at any threshold.
    backwards = [0.9, 0.8, 0.3, 0.2, 0.1]
    assert rates(backwards, [0, 0, 1, 1, 1], 0.8) == (0.0, 1.0)
    assert choose(backwards, [0, 0, 1, 1, 1], 0.5) == 1.0
    # Mixed: at 0.2 it abstains on every not-answered question and on half the answered ones.
    assert choose(backwards, [0, 1, 1, 1, 0], 0.5) == 0.2
    # A head near chance is reported as such (its report says how to leave it out).
    assert "ANSWERABILITY=off" in weak(0.52)[0] and weak(0.6) == [] and weak(None) == []
    kept = judged(probabilities, labels, 0.6, 0.25)
    assert (kept["abstention"], kept["false_abstention"], kept["heldout"], kept["heldout_unanswered"]) == (
        0.75, 0.25, 8, 4)
    assert [r["threshold"] for r in kept["curve"]][:2] == [0.1, 0.2] and kept["auc"] == 0.75


def test_the_input_keeps_the_question_whole(tiny_model_dir):
    from transformers import AutoTokenizer

    from assistant.chat.answerability import encode

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    ids = encode(tok, "Who led the Norse?", CONTEXTS[0], max_length=24)
    text = tok.decode(ids)
    assert len(ids) == 24 and text.startswith("Text: The Normans") and text.endswith("\nQuestion: Who led the Norse?")
    whole = tok.decode(encode(tok, "Who led the Norse?", CONTEXTS[0], max_length=400))
    assert whole == f"Text: {CONTEXTS[0]}\nQuestion: Who led the Norse?"
    assert len(encode(tok, "why " * 50, CONTEXTS[0], max_length=16)) == 16  # a huge question: its end


def test_quoted_mode_abstains_when_the_head_says_the_sources_do_not_answer():
    source = CONTEXTS[0]
    said = "Normandy is in France."
    judged = compose("quoted", said, "Where is Normandy?", [source], unanswerable=True)
    assert (judged.text, judged.how) == (ABSTENTION, "head")
    assert compose("quoted", said, "Where is Normandy?", [source]).how != "abstained"
    # Free mode is the model's answer as written; no sources: a plain chat answer.
    assert compose("free", said, "Where is Normandy?", [source], unanswerable=True).text == said
    assert compose("quoted", said, "Hi", [], unanswerable=True).how == "plain"


def _squad() -> dict:
    """Questions whose paragraph answers them, and questions it does not (SQuAD 2.0)."""
    answerable = [("Normandy is a region in which country?", 0, "France"),
                  ("Who was the leader of the Norse raiders?", 0, "Rollo"),
                  ("In which centuries did the Normans name Normandy?", 0, "10th and 11th centuries"),
                  ("From which countries were the Norse raiders?", 0, "Denmark, Iceland and Norway"),
                  ("How does complexity theory classify problems?", 1, "according to their inherent difficulty"),
                  ("What does an inherently difficult problem require?", 1, "significant resources"),
                  ("What is sourdough bread leavened with?", 2, "a starter of wild yeast"),
                  ("What do bakeries sell?", 2, "bread, cakes and pastries")]
    unanswerable = [("Who was the queen of the Normans in Normandy?", 0),
                    ("How many ships did the Norse raiders of Normandy have?", 0),
                    ("When did Rollo die in Normandy?", 0),
                    ("Which problem did complexity theory classify first?", 1),
                    ("Who founded computational complexity theory of problems?", 1),
                    ("How long is sourdough bread baked?", 2),
                    ("What temperature do bakeries bake bread at?", 2),
                    ("Which bakery sold the first sourdough bread?", 2)]
    titles = ["Normans", "Complexity", "Bakery"]
    qas: dict[int, list[dict]] = {0: [], 1: [], 2: []}
    for k, (question, c, answer) in enumerate(answerable):
        qas[c].append(qa(f"a{k}", question, CONTEXTS[c], answer))
    for k, (question, c) in enumerate(unanswerable):
        qas[c].append(qa(f"u{k}", question, CONTEXTS[c], None, impossible=True))
    return {"version": "v2.0", "data": [
        {"title": titles[c], "paragraphs": [{"context": CONTEXTS[c], "qas": qas[c]}]} for c in range(3)]}


def _cli(*args: str) -> str:
    result = CliRunner().invoke(main, list(args))
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result.output


def test_train_a_head_and_quoted_mode_abstains_by_it(tiny_settings, tmp_path, monkeypatch):
    """import squad -> train answerability (the real Trainer on the tiny model) -> a head
    version that cannot chat, loaded back with the same held-out scores -> the chat's quoted
    answer abstains by it without asking the model -> `assistant eval` reports it."""
    import alignment.answerability
    import assistant.chat.answerability as heads
    from alignment.answerability import rows, split
    from assistant.bootstrap import open_database, open_library, open_registry
    from assistant.chat.answerability import HeadSlot
    from assistant.chat.service import ChatService
    from assistant.engines.generation import GenerationParams
    from assistant.storage import ConversationStore
    from assistant.registry import ActivationRefused
    from tests.fakes import FakeGenerator

    path = write(tmp_path, _squad())
    _cli("data", "import", "squad", str(path))
    db = open_database(tiny_settings)
    registry = open_registry(tiny_settings, db)
    data, skipped = rows(db)
    assert sum(r.unanswered for r in data) == 8 and len(data) + skipped == 16
    refused = CliRunner().invoke(main, ["train", "answerability", "--test-fraction", "0.5"])
    assert refused.exit_code == 1 and "needs at least 8 of each label" in refused.output, refused.output
    assert registry.list() == []  # nothing registered, no staging left
    monkeypatch.setattr(alignment.answerability, "MIN_PER_LABEL", 1)
    out = _cli("train", "answerability", "--epochs", "1", "--batch-size", "4", "--max-length", "64",
               "--lora-r", "4", "--test-fraction", "0.5")
    assert "Registered v1: an answerability head" in out and "AUC" in out, out
    head_version = registry.get("v1")
    kept = head_version.metrics["answerability"]
    assert head_version.kind == "answerability" and 0.0 <= kept["threshold"] <= 1.0
    listed = next(line for line in _cli("models", "list").splitlines() if " v1 " in line)
    assert "answerability" in listed and f"held-out AUC {kept['auc']:.3f}" in listed
    with pytest.raises(ActivationRefused, match="is an answerability head"):
        registry.check_servable("v1", head_version.base_fingerprint)

    # Loaded back (merged), the head scores the held-out questions as training measured them.
    slot = HeadSlot(tiny_settings, registry)
    head = slot.head()
    assert head is not None and head.version == "v1" and head.threshold == kept["threshold"]
    _, test = split(data, alignment.answerability.HeadOptions(test_fraction=0.5))
    scores = head.probabilities([(r.question, r.source) for r in test])
    assert kept["heldout"] == len(test)
    assert auc(scores, [r.unanswered for r in test]) == pytest.approx(kept["auc"], abs=1e-3)
    tiny_settings.answers.answerability = "off"
    assert slot.head() is None
    tiny_settings.answers.answerability = "v9"
    assert slot.head() is None  # a missing head: logged, the chat answers without one
    tiny_settings.answers.answerability = "newest"

    # The chat in quoted mode: the head says no, the model is not asked.
    kept_threshold = heads.head_threshold
    monkeypatch.setattr(heads, "head_threshold", lambda version: 0.0)
    generator = FakeGenerator(answer="Rollo led them.", context_window=2000)
    tiny_settings.answers.mode = "quoted"
    library = open_library(tiny_settings, db)
    svc = ChatService(ConversationStore(db), generator, tiny_settings, retriever=library.retriever,
                      registry=registry)
    reply = svc.send(None, "Who was the leader of the Norse raiders?", GenerationParams(max_new_tokens=8))
    assert "".join(reply) == ABSTENTION and generator.prompts == []
    stored = svc.store.get_message(reply.message.id)
    assert stored.record.params["formed"] == "head" and stored.record.engine == "answerability head (no model)"
    assert stored.record.latency_ms > 0  # the head's question is part of the wait
    from ui.answers import with_citations

    assert "the answerability head judged that no source answers" in with_citations(stored.content, stored)[2]

    # `assistant eval` in quoted mode abstains by the same head and reports its trade-off.
    monkeypatch.setattr(heads, "head_threshold", kept_threshold)
    out = _cli("eval", "base", "--against", "base", "--grounded-file", str(path), "--grounded", "6",
               "--prompts", "0", "--qa", "0", "--answer-mode", "quoted")
    m = registry.evaluations("base")[-1].metrics
    assert m["answerability_head"] == "v1" and m["head_threshold"] == kept["threshold"]
    assert [r["head_threshold"] for r in m["head_curve"]["base"]] == [0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]
    assert "answerability head v1" in out

    # Its threshold chosen on questions about the documents (no model answers), as a version's is.
    import alignment.calibration

    monkeypatch.setattr(alignment.calibration, "MIN_ANSWERABLE", 2)
    out = _cli("models", "calibrate", "v1", "--grounded-file", str(path), "--all-paragraphs")
    calibrated = registry.get("v1").metrics["abstention_calibration"]
    assert 0 < calibrated["answerable"] < calibrated["asked"] <= 16 and not calibrated["training_article"]
    assert f"v1's threshold is now {calibrated['head_threshold']:.3g}" in out and "AUC" in out
    assert heads.head_threshold(registry.get("v1")) == calibrated["head_threshold"]
    assert slot.head().threshold == calibrated["head_threshold"]  # the chat's, loaded before, follows
    assert "head threshold:" in _cli("models", "show", "v1")

    # A head moves to another installation like any version (here: the same one).
    out = _cli("models", "import", str(head_version.path))
    assert "as v2 (answerability on base); it was v1 there." in out, out
    assert registry.get("v2").metrics["answerability"] == kept
    assert heads.head_threshold(registry.get("v2")) == calibrated["head_threshold"]
