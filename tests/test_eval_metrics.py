"""Judging an evaluation from answers and scores: identical answers tie, scores tie within the
tolerance, every rate has its interval, length and repetition stand beside every score."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from alignment.eval_metrics import (
    answer_metrics, qa_metrics, reward_model_metrics, summarize, table, verdict_text, win_metrics,
)
from assistant.registry import EvalRecord
from assistant.significance import BETTER, UNDECIDED


def record(metrics: dict, reward: str | None = "v9") -> EvalRecord:
    return EvalRecord("v2", "base", reward, metrics, datetime.now(UTC))


def test_identical_answers_tie_whatever_their_scores():
    # 16 word-for-word identical answers whose scores differ by batch-padding noise, as in
    # the evaluation that reported 15/12/13 where the text said 14/16/10.
    same = ["No, I can't help with that."] * 16
    cand = same + ["Sure."] * 14 + ["x"] * 10
    base = [a.replace(" ", "  ") for a in same] + ["Sure thing."] * 24
    sc = [0.1 + (1e-6 if i % 2 else -1e-6) for i in range(16)] + [1.0] * 14 + [-1.0] * 10
    sb = [0.1] * 16 + [0.0] * 24
    m = win_metrics(cand, base, sc, sb)
    assert (m["wins"], m["ties"], m["losses"]) == (14, 16, 10)
    assert m["verdict"] == UNDECIDED and m["p_value"] == pytest.approx(0.5413, abs=1e-4)
    assert m["win_rate"] == pytest.approx(0.55) and m["win_rate_low"] < 0.5 < m["win_rate_high"]
    assert m["more_prompts"] > 0


def test_scores_within_the_tolerance_tie_and_clear_wins_count():
    cand, base = [f"answer {i}" for i in range(10)], [f"other {i}" for i in range(10)]
    m = win_metrics(cand, base, [0.5 + 5e-5] * 10, [0.5] * 10)
    assert (m["wins"], m["ties"], m["losses"]) == (0, 10, 0) and m["score_tolerance"] == 1e-4
    m = win_metrics(cand, base, [1.0] * 10, [0.0] * 10)
    assert m["wins"] == 10 and m["verdict"] == BETTER


def test_reward_accuracy_beside_the_length_baselines():
    # The judge always prefers the shorter answer, and the chosen answer is shorter in 3 of 4.
    chosen = ["short", "short one", "a much longer chosen answer here", "tiny"]
    rejected = ["a longer rejected answer", "a longer rejected answer too", "brief", "tiny!"]
    score = lambda t: -len(t.split())  # noqa: E731
    m = reward_model_metrics([score(t) for t in chosen], [score(t) for t in rejected], chosen, rejected)
    assert m["pairs"] == 4
    # pairs 1-3 differ in length (the judge follows length); pair 4 is a score tie (half).
    assert m["reward_accuracy"] == pytest.approx((2 + 0.5) / 4)
    assert m["shorter_wins"] == pytest.approx((2 + 0.5) / 4) and m["longer_wins"] == pytest.approx((1 + 0.5) / 4)
    assert m["reward_picks_shorter"] == 1.0 and m["reward_length_pairs"] == 3
    assert m["reward_accuracy_low"] < m["reward_accuracy"] < m["reward_accuracy_high"]


def test_answer_lengths_and_repetition():
    m = answer_metrics(["no, no, no, no, no, no", "Paris is the capital."], ["Paris.", "Paris."])
    assert m["identical_answers"] == 0 and m["candidate_words"] == 5.0 and m["baseline_words"] == 1.0
    assert m["candidate_repetition"] == pytest.approx(3 / 6) and m["baseline_repetition"] == 0.0


def test_qa_accuracy_has_intervals_and_a_paired_verdict():
    m = qa_metrics([True, True, False, False], [True, False, False, True])
    assert m["qa_accuracy"] == 0.5 and m["qa_questions"] == 4 and m["qa_verdict"] == UNDECIDED
    assert 0 < m["qa_accuracy_low"] < 0.5 < m["qa_accuracy_high"] < 1


def test_without_a_reward_model_the_win_rate_is_not_measured():
    m = {"prompts": 16, **answer_metrics(["a b c"] * 16, ["a b c"] * 16), "notes": ["no reward model"]}
    text = "\n".join(summarize(record(m, reward=None)))
    assert "win rate not measured" in text and "judges" not in text
    assert "16 of 16 identical" in text
    rows = table(record(m, reward=None))
    assert rows[0]["measure"] == "win rate" and rows[0]["candidate"] == "not measured"
    assert "not measured" in verdict_text(m)


def test_summary_and_table_show_intervals_baselines_and_lengths():
    cand, base = ["yes " * 3] * 20, ["no no no no no"] * 20
    m = {**answer_metrics(cand, base), **win_metrics(cand, base, [1.0] * 20, [0.0] * 20),
         **reward_model_metrics([1.0, 0.0], [0.0, 1.0], ["a", "b c"], ["a b", "c"]),
         **qa_metrics([True], [True]), "reward_model": "v9", "seconds": 3.0}
    text = "\n".join(summarize(record(m)))
    assert "win rate 100.0% (" in text and "better" in text and "sign test p" in text
    assert "shorter wins 50.0% (" in text and "longer wins" in text and "picks the shorter" in text
    assert "mean length 3.0 vs 5.0 words" in text and "repeated 3-grams" in text
    measures = [r["measure"] for r in table(record(m))]
    assert "win rate (95% CI)" in measures and "baseline: shorter answer wins" in measures
    assert "mean answer length (words)" in measures and "repeated 3-grams" in measures


def test_older_records_still_render():
    old = {"win_rate": 0.5, "wins": 1, "ties": 0, "losses": 1, "prompts": 2, "mean_reward": 0.1,
           "baseline_mean_reward": 0.2, "reward_accuracy": 0.6, "pairs": 10, "reward_model": "v1",
           "qa_accuracy": 0.5, "baseline_qa_accuracy": 0.5, "qa_questions": 2, "seconds": 1}
    assert summarize(record(old)) and table(record(old))
    assert summarize(record({"note": "no reward model: not measured"}, None))[-1].endswith("not measured")
