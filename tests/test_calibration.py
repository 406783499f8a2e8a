"""A version's own abstention threshold: the paragraphs left out for it at import, the rule
that chooses it, where it is kept (real SQLite and PostgreSQL) and which threshold wins."""

from __future__ import annotations

import json

import pytest

from alignment.calibration import choose, report
from alignment.squad import SquadQuestion, calibration_paragraph, import_squad
from assistant.bootstrap import open_library
from assistant.chat.answer_modes import DEFAULT_MIN_ABSTAIN_PROBABILITY, abstain_threshold
from assistant.registry import CALIBRATION, Registry, VersionNotFound
from assistant.versions import BASE_VERSION
from tests.test_registry import make_version


def question(title: str, context: str, qid: str = "q") -> SquadQuestion:
    return SquadQuestion(qid, title, "What?", context, (), (), True)


def test_the_calibration_paragraphs_are_a_stable_share_picked_by_paragraph():
    """About 30% of paragraphs, the same on every call, every question of a paragraph alike
    (nothing is stored: the import and the calibration compute it each)."""
    picked = [calibration_paragraph(question("Article", f"Paragraph number {k} says something."))
              for k in range(400)]
    assert 0.24 < sum(picked) / len(picked) < 0.36
    again = [calibration_paragraph(question("Article", f"Paragraph number {k} says something.", "other"))
             for k in range(400)]
    assert picked == again
    # The article's title is part of it: the same words in another article may differ.
    other = [calibration_paragraph(question("Another", f"Paragraph number {k} says something."))
             for k in range(400)]
    assert other != picked


CONTEXTS = [f"Town number {k} is famous for its {colour} bridge, built by {name}."
            for k, (colour, name) in enumerate(zip(
                ["red", "blue", "green", "white", "black", "grey", "gold", "pink", "brown", "amber"],
                ["Ada", "Bo", "Cy", "Di", "Ed", "Flo", "Gus", "Hal", "Ivy", "Jo"]))]
PARAGRAPHS = [{"context": c, "qas": [{"id": f"q{k}", "question": f"Who built the bridge of town number {k}?",
                                      "answers": [{"text": c.split("built by ")[1].rstrip("."),
                                                   "answer_start": c.index("built by ") + 9}]}]}
              for k, c in enumerate(CONTEXTS)]
#: The questions of the paragraphs left for calibration.
LEFT = {p["qas"][0]["question"] for p in PARAGRAPHS if calibration_paragraph(question("Towns", p["context"]))}


def towns(tmp_path):
    path = tmp_path / "towns.json"
    path.write_text(json.dumps({"version": "v2.0", "data": [{"title": "Towns", "paragraphs": PARAGRAPHS}]}))
    return path


def test_import_with_calibration_leaves_those_paragraphs_out(db, settings, tmp_path):
    path, contexts, left = towns(tmp_path), CONTEXTS, LEFT
    assert 0 < len(left) < len(contexts)  # these ten paragraphs split both ways

    library = open_library(settings, db)
    report = import_squad(db, library, path, "Be brief.", calibration=True)
    assert report.calibration_questions == report.calibration_paragraphs == len(left)
    assert report.imported == len(contexts) - len(left)
    from alignment.on_policy import grounded_examples

    asked = {e.question for e in grounded_examples(db)}
    assert asked == {p["qas"][0]["question"] for p in PARAGRAPHS} - left


def test_calibration_and_evaluation_ask_apart_paragraphs(db, settings, tmp_path):
    """``models calibrate`` asks the paragraphs left for calibration, ``eval
    --grounded-paragraphs rest`` the others: a threshold is never judged on its own questions."""
    from alignment.evaluate import EvalOptions, grounded_items

    def asked(paragraphs: str) -> set[str]:
        o = EvalOptions(grounded=None, grounded_file=str(towns(tmp_path)), grounded_paragraphs=paragraphs)
        items, where = grounded_items(settings, db, o)
        assert where.startswith(str(tmp_path))
        return {i.question for i in items}

    everything = {p["qas"][0]["question"] for p in PARAGRAPHS}
    assert asked("calibration") == LEFT and asked("rest") == everything - LEFT
    assert asked("all") == everything
    with pytest.raises(ValueError, match="grounded_paragraphs is one of all, calibration, rest"):
        asked("some")


CURVE = [{"min_abstain_probability": t, "false_abstention": f}
         for t, f in ((0.0, 0.4), (0.02, 0.3), (0.05, 0.2), (0.1, 0.1), (0.2, 0.0))]


def test_the_lowest_threshold_within_the_false_abstention_budget_is_chosen():
    assert choose(CURVE, 0.2) == 0.05  # 0.05's 20% is within 20%; lower ones are not
    assert choose(CURVE, 0.5) == 0.0
    assert choose(CURVE, 0.05) == 0.2
    # None within it: the version's abstentions are not trusted at all.
    assert choose([dict(r, false_abstention=0.5) for r in CURVE], 0.2) == 1.0
    # No answerable question (no false abstention measured) decides nothing.
    assert choose([dict(r, false_abstention=None) for r in CURVE], 0.2) == 1.0


def test_the_report_says_how_few_questions_decided_and_where_they_came_from():
    curve = [dict(r, accuracy=0.5, abstention=0.4) for r in CURVE]
    calibration = {"min_abstain_probability": choose(curve, 0.2), "max_false_abstention": 0.2,
                   "questions": "qa.json", "asked": 25, "answerable": 20, "model_abstained": 9,
                   "with_probability": 25, "curve": curve, "engine": "llama.cpp", "answer_seconds": 40,
                   "training_article": False}
    lines = report("v1", calibration)
    # 0.05 was chosen at 20% false abstention: 4 of the 20 answerable questions, one being 5 points.
    assert "  false abstention at 0.05: 4 of 20 answerable questions (20.0%, 95% CI 8.1%-41.6%); " \
           "one question moves it 5.0 points." in lines
    assert lines[-1] == "v1's threshold is now 0.05: the chat uses it while the setting " \
                        "answers.min_abstain_probability is unset."
    # Calibrated on the training article's held-out examples: said to be biased.
    warned = report("v1", dict(calibration, training_article=True))
    assert "held-out examples of the training article" in warned[-1] and "--grounded-file" in warned[-1]
    # Nothing trusted (threshold 1, not on the curve): no count to give.
    none = report("v1", dict(calibration, min_abstain_probability=1.0))
    assert not any(line.startswith("  false abstention at ") for line in none)
    assert any("are not trusted (threshold 1)" in line for line in none)


def test_the_setting_wins_then_the_version_s_own_then_the_default():
    assert abstain_threshold(0.3, 0.05) == 0.3
    assert abstain_threshold(0.0, 0.05) == 0.0  # 0 is a setting (keep every abstention)
    assert abstain_threshold(None, 0.05) == 0.05
    assert abstain_threshold(None, 0.0) == 0.0
    assert abstain_threshold(None, None) == DEFAULT_MIN_ABSTAIN_PROBABILITY


@pytest.mark.both_databases
def test_a_calibration_is_kept_with_its_version(db, settings):
    registry = Registry(db, settings.versions_dir)
    v1 = make_version(registry, "sft")
    assert registry.abstain_threshold(v1.name) is None
    kept = registry.calibrate(v1.name, {"min_abstain_probability": 0.05, "asked": 40})
    assert registry.abstain_threshold(v1.name) == 0.05
    # Its other metrics stay; calibrating again replaces the calibration.
    assert kept.metrics["final_loss"] == 0.5 and kept.metrics[CALIBRATION]["asked"] == 40
    registry.calibrate(v1.name, {"min_abstain_probability": 1.0})
    assert registry.abstain_threshold(v1.name) == 1.0 and registry.get(v1.name).metrics["final_loss"] == 0.5
    # The version's folder says it too (`assistant models import` elsewhere keeps it).
    described = json.loads((v1.path / "version.json").read_text())
    assert described["metrics"] == {"final_loss": 0.5, CALIBRATION: {"min_abstain_probability": 1.0}}
    assert described["name"] == v1.name and described["parent"] == BASE_VERSION
    assert registry.abstain_threshold(BASE_VERSION) is None and registry.abstain_threshold("v99") is None
    with pytest.raises(VersionNotFound):
        registry.calibrate("v99", {"min_abstain_probability": 0.1})
