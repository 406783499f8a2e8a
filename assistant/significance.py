"""How sure a measured rate is: 95% intervals, the sign test for paired comparisons, and the
three verdicts the eval gate gives (better, worse, not enough evidence).

Pure Python (``math``), so that the registry's gate and the leaderboard use the same
arithmetic as ``assistant eval``:

* an accuracy or a win rate gets a Wilson score interval (it stays inside [0, 1] and is
  honest for small n, where the normal approximation is not);
* two versions answering the same prompts are compared by the exact two-sided sign test
  on the prompts one of them won (ties excluded): a tie says nothing about which is better;
* "not enough evidence" comes with an estimate of how many prompts would be needed to
  tell, from the effect observed so far (normal approximation, 80% power).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from statistics import NormalDist

#: Two-sided 95%.
ALPHA = 0.05
Z95 = NormalDist().inv_cdf(1 - ALPHA / 2)  # 1.95996...
#: Power assumed when estimating how many more prompts a comparison needs.
POWER = 0.8
#: Two scores closer than this are a tie: a reward model scoring the same text in batches
#: of different padding differs by 1e-7..1e-6, which is noise, not a preference.
SCORE_TOLERANCE = 1e-4

BETTER, WORSE, UNDECIDED = "better", "worse", "not enough evidence"


@dataclass(frozen=True)
class Rate:
    """A proportion with its sample size and 95% interval."""

    value: float
    n: int
    low: float
    high: float

    def as_dict(self) -> dict[str, float | int]:
        return {"value": self.value, "n": self.n, "low": self.low, "high": self.high}

    def text(self) -> str:
        """``64.8% (95% CI 55.1-73.5%, n=116)``."""
        if self.n == 0:
            return "not measured (n=0)"
        return f"{self.value:.1%} (95% CI {self.low:.1%}-{self.high:.1%}, n={self.n})"


def wilson(successes: float, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for ``successes`` out of ``n`` (a tie counted as half a
    success is fine: the interval only uses the observed proportion)."""
    if n <= 0:
        return 0.0, 1.0
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def rate(successes: float, n: int) -> Rate:
    low, high = wilson(successes, n)
    return Rate(successes / n if n else 0.0, n, low, high)


def sign_test(wins: int, losses: int) -> float:
    """Exact two-sided p-value of ``wins`` against ``losses`` under "either side is equally
    likely to win" (binomial, p = 1/2). Ties are left out by the caller."""
    n = wins + losses
    if n == 0:
        return 1.0
    k = min(wins, losses)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n
    return min(1.0, 2 * tail)


def min_decided_for_significance(alpha: float = ALPHA) -> int:
    """The fewest decided (non-tied) pairs with which the sign test can reach ``alpha`` at
    all (6 at 5%: 6-0 gives p = 0.031, 5-0 gives 0.0625)."""
    n = 1
    while sign_test(n, 0) >= alpha:
        n += 1
    return n


@dataclass(frozen=True)
class Paired:
    """Two versions on the same n prompts: who won each, the sign test, the verdict."""

    wins: int
    ties: int
    losses: int
    p_value: float
    verdict: str  # BETTER | WORSE | UNDECIDED
    #: Prompts in all that the comparison would need to tell at 95% (80% power), estimated
    #: from the effect seen so far; None when no effect was seen (wins == losses) or
    #: nothing was decided, so that no number of prompts is expected to tell.
    prompts_needed: int | None

    @property
    def n(self) -> int:
        return self.wins + self.ties + self.losses

    @property
    def win_rate(self) -> Rate:
        """Wins plus half the ties, with a Wilson interval."""
        return rate(self.wins + self.ties / 2, self.n)

    @property
    def more_prompts(self) -> int | None:
        if self.prompts_needed is None:
            return None
        return max(0, self.prompts_needed - self.n)

    def explain(self) -> str:
        """One sentence: the verdict and why."""
        counts = f"{self.wins} wins, {self.ties} ties, {self.losses} losses"
        if self.verdict != UNDECIDED:
            return (f"{self.verdict} ({counts}; sign test p = {self.p_value:.3g} on the "
                    f"{self.wins + self.losses} prompts that differ)")
        decided = self.wins + self.losses
        need = min_decided_for_significance()
        why = f"not enough evidence ({counts}; sign test p = {self.p_value:.2g}"
        if decided < need:
            why += (f"; the sign test needs at least {need} prompts whose answers differ to "
                    f"tell at 95%, and {decided} differ")
        if self.more_prompts:
            why += f"; about {self.more_prompts} more prompts would be needed at this effect"
        elif self.prompts_needed is None:
            why += "; no difference was seen, so more prompts are not expected to show one"
        return why + ")"

    def as_dict(self) -> dict[str, object]:
        return {"wins": self.wins, "ties": self.ties, "losses": self.losses, "n": self.n,
                "p_value": self.p_value, "verdict": self.verdict,
                "prompts_needed": self.prompts_needed, "more_prompts": self.more_prompts,
                "win_rate": self.win_rate.as_dict()}


def prompts_needed(wins: int, ties: int, losses: int, alpha: float = ALPHA,
                   power: float = POWER) -> int | None:
    """Prompts a sign test would need to detect the observed effect: the decided share q =
    wins / (wins + losses) and the share of prompts that are decided at all, held fixed."""
    decided, n = wins + losses, wins + ties + losses
    if decided == 0 or wins == losses:
        return None
    q = wins / decided
    z_a, z_b = NormalDist().inv_cdf(1 - alpha / 2), NormalDist().inv_cdf(power)
    m = ((z_a * 0.5 + z_b * math.sqrt(q * (1 - q))) / abs(q - 0.5)) ** 2
    m = max(m, min_decided_for_significance(alpha))
    return math.ceil(m * n / decided)


def paired(wins: int, ties: int, losses: int, alpha: float = ALPHA) -> Paired:
    p = sign_test(wins, losses)
    if p < alpha:
        verdict = BETTER if wins > losses else WORSE
    else:
        verdict = UNDECIDED
    return Paired(wins, ties, losses, p, verdict, prompts_needed(wins, ties, losses, alpha))


def compare(a: float, b: float, tolerance: float = SCORE_TOLERANCE) -> int:
    """1 if ``a`` is higher than ``b`` by more than ``tolerance``, -1 if lower, else 0."""
    if abs(a - b) <= tolerance:
        return 0
    return 1 if a > b else -1


def mean_interval(values: list[float], weights: list[float] | None = None, resamples: int = 2000,
                  seed: int = 0) -> tuple[float, float, float]:
    """A weighted mean of ``values`` with its 95% percentile-bootstrap interval, resampling
    the values themselves (e.g. per-batch means weighted by batch size, where the rows inside
    a batch are not available separately). Deterministic for a given ``seed``."""
    if not values:
        raise ValueError("no values")
    w = list(weights) if weights is not None else [1.0] * len(values)
    if len(w) != len(values) or min(w) <= 0:
        raise ValueError("one positive weight per value")

    def mean(idx: list[int]) -> float:
        return sum(w[i] * values[i] for i in idx) / sum(w[i] for i in idx)

    rng = random.Random(seed)
    k = len(values)
    draws = sorted(mean([rng.randrange(k) for _ in range(k)]) for _ in range(resamples))
    low = draws[int(resamples * ALPHA / 2)]
    high = draws[min(resamples - 1, int(resamples * (1 - ALPHA / 2)))]
    return mean(list(range(k))), low, high
