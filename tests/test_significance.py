"""The statistics behind the eval gate, against published values (Wilson 1927 / Newcombe
1998 table for the intervals; exact binomial tails for the sign test)."""

from __future__ import annotations

import pytest

from assistant.significance import (
    BETTER, UNDECIDED, WORSE, compare, mean_interval, min_decided_for_significance, paired,
    prompts_needed, rate, sign_test, wilson,
)
from assistant.words import repeated_ngram_rate, repeated_ngrams, same_text


@pytest.mark.parametrize("k, n, low, high", [
    (8, 10, 0.4902, 0.9433),   # Newcombe (1998), Table I
    (0, 10, 0.0, 0.2775),
    (10, 10, 0.7225, 1.0),
    (81, 263, 0.2553, 0.3662),  # Newcombe (1998): 81/263
    (15, 148, 0.0624, 0.1605),  # Newcombe (1998): 15/148
])
def test_wilson_matches_published_intervals(k, n, low, high):
    lo, hi = wilson(k, n)
    assert lo == pytest.approx(low, abs=1e-4) and hi == pytest.approx(high, abs=1e-4)


def test_rate_carries_n_and_says_when_nothing_was_measured():
    r = rate(58, 116)
    assert r.value == 0.5 and r.n == 116 and r.low < 0.5 < r.high
    assert "n=116" in r.text() and "95% CI" in r.text()
    assert rate(0, 0).text() == "not measured (n=0)"


@pytest.mark.parametrize("wins, losses, p", [
    (14, 10, 0.5413),   # the DPO evaluation: 14 wins, 10 losses of 24 that differ
    (6, 0, 0.03125),
    (5, 0, 0.0625),
    (15, 5, 0.041389),  # scipy.stats.binomtest(15, 20).pvalue
    (3, 3, 1.0),
    (0, 0, 1.0),
])
def test_sign_test_exact_values(wins, losses, p):
    assert sign_test(wins, losses) == pytest.approx(p, abs=1e-4)
    assert sign_test(losses, wins) == pytest.approx(p, abs=1e-4)  # two-sided: symmetric


def test_three_verdicts():
    assert paired(15, 10, 5).verdict == BETTER
    assert paired(5, 10, 15).verdict == WORSE
    undecided = paired(14, 16, 10)
    assert undecided.verdict == UNDECIDED
    assert undecided.win_rate.value == pytest.approx(0.55)
    # Only 24 of 40 differ and the effect is small: hundreds of prompts would be needed.
    assert undecided.prompts_needed > 200 and undecided.more_prompts == undecided.prompts_needed - 40
    assert "more prompts" in undecided.explain() and "p = 0.54" in undecided.explain()


def test_identical_versions_are_never_better():
    same = paired(0, 40, 0)
    assert same.verdict == UNDECIDED and same.prompts_needed is None
    assert "no difference was seen" in same.explain()
    assert paired(10, 0, 10).prompts_needed is None


def test_too_few_prompts_cannot_pass_and_say_so():
    assert min_decided_for_significance() == 6
    few = paired(5, 0, 0)  # every answer won, but five prompts cannot tell at 95%
    assert few.verdict == UNDECIDED
    assert "needs at least 6 prompts whose answers differ" in few.explain()
    assert few.more_prompts >= 1


def test_prompts_needed_shrinks_with_a_larger_effect():
    small, large = prompts_needed(12, 0, 8), prompts_needed(18, 0, 2)
    assert small > large >= 6
    # Ties dilute the evidence: the same decided split needs more prompts in all.
    assert prompts_needed(12, 20, 8) > small
    # At the estimated size, the observed split is significant (most of the time).
    n = prompts_needed(14, 0, 6)
    assert sign_test(round(n * 0.7), n - round(n * 0.7)) < 0.05


def test_scores_within_the_tolerance_tie():
    assert compare(0.1234567, 0.1234561) == 0  # batch-padding noise
    assert compare(0.2, 0.1) == 1 and compare(0.1, 0.2) == -1
    assert compare(0.2, 0.1, tolerance=0.5) == 0


def test_text_measures():
    assert same_text("Paris.\n", "  Paris. ") and not same_text("Paris.", "paris.")
    assert repeated_ngrams("no, no, no, no, no") == (2, 3)
    assert repeated_ngrams("the capital of France is Paris") == (0, 4)
    assert repeated_ngram_rate(["a b c a b c", "x y"]) == pytest.approx(1 / 4)
    assert repeated_ngram_rate([]) == 0.0


def test_the_bootstrap_interval_of_a_weighted_mean():
    assert mean_interval([0.3] * 5) == (0.3, 0.3, 0.3)
    mean, low, high = mean_interval([0.0, 1.0], weights=[3, 1])
    assert mean == 0.25 and 0.0 <= low < mean < high <= 1.0
    # Close to the normal interval (mean +- 1.96 sd / sqrt(n)) on 40 spread values.
    values = [((i * 37) % 40) / 10 - 2 for i in range(40)]  # -2.0 .. 1.9, each once
    n, m = len(values), sum(values) / len(values)
    half = 1.96 * (sum((v - m) ** 2 for v in values) / (n - 1)) ** 0.5 / n ** 0.5
    mean, low, high = mean_interval(values)
    assert mean == pytest.approx(m) and low == pytest.approx(m - half, abs=0.1 * half)
    assert high == pytest.approx(m + half, abs=0.1 * half)
    assert mean_interval(values, seed=3) == mean_interval(values, seed=3)
    with pytest.raises(ValueError):
        mean_interval([])
    with pytest.raises(ValueError):
        mean_interval([1.0, 2.0], weights=[1])


def test_batch_sizes_of_a_heldout_evaluation():
    from alignment.training.heldout import batch_rows, margin_interval

    assert batch_rows(113, 4, 29) == [4] * 28 + [1]
    assert batch_rows(8, 4, 2) == [4, 4] and batch_rows(8, 4, 3) is None
    got = margin_interval({"rewards/margins": [0.2, 0.4, 0.0]}, 9, 4)
    assert got["heldout_margin"] == pytest.approx((0.2 * 4 + 0.4 * 4 + 0.0) / 9)
    assert got["heldout_margin_batches"] == 3
    assert margin_interval({"rewards/margins": [0.2]}, 4, 4) == {}  # one batch: no interval
    assert margin_interval({}, 8, 4) == {}
