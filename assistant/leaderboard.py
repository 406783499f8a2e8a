"""Rank model versions from compare-mode votes: Bradley-Terry strengths on the Elo scale,
with bootstrap confidence intervals.

A tie counts half a win to each side; "both bad" says nothing about which is better and
is left out, as are comparisons of a version with itself.

A bootstrap interval from a handful of games is meaningless (one game resamples to the
same game every time: "1149-1149"), so a standing says whether it has enough games
(:data:`MIN_GAMES`) for its interval to be shown.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

from assistant.storage.comparisons import Outcome

#: Games a version needs before its interval means anything.
MIN_GAMES = 10


@dataclass(frozen=True)
class Standing:
    version: str
    rating: float  # Elo scale, the field's mean at 1000
    low: float  # 95% bootstrap interval
    high: float
    games: int
    wins: float  # ties count one half

    @property
    def has_interval(self) -> bool:
        return self.games >= MIN_GAMES

    def interval_text(self) -> str:
        """``1012-1188``, or why there is none yet."""
        if not self.has_interval:
            more = MIN_GAMES - self.games
            return f"needs {more} more game{'s' if more != 1 else ''}"
        return f"{round(self.low)}-{round(self.high)}"


def _games(outcomes: Sequence[Outcome]) -> list[tuple[str, str, float]]:
    """(a, b, a's score) for the comparisons that rank two different versions."""
    score = {"a": 1.0, "b": 0.0, "tie": 0.5}
    return [
        (o.a_version, o.b_version, score[o.vote])
        for o in outcomes
        if o.vote in score and o.a_version != o.b_version
    ]


def bradley_terry(games: Sequence[tuple[str, str, float]], iters: int = 500) -> dict[str, float]:
    """Strengths by the minorisation-maximisation algorithm (Hunter 2004). Every version
    also plays one drawn game against a virtual average player, a weak prior that keeps
    strengths finite for a version that never lost (or never won)."""
    versions = sorted({v for a, b, _ in games for v in (a, b)})
    if not versions:
        return {}
    strength = dict.fromkeys(versions, 1.0)
    for _ in range(iters):
        new = {}
        for v in versions:
            wins, denom = 0.5, 2.0 / (strength[v] + 1.0)  # the prior game vs strength 1
            for a, b, s in games:
                if v == a:
                    wins += s
                    denom += 1.0 / (strength[a] + strength[b])
                elif v == b:
                    wins += 1.0 - s
                    denom += 1.0 / (strength[a] + strength[b])
            new[v] = wins / denom
        mean_log = sum(math.log(x) for x in new.values()) / len(new)
        strength = {v: x / math.exp(mean_log) for v, x in new.items()}
    return strength


def _elo(strength: float) -> float:
    return 1000.0 + 400.0 * math.log10(strength)


def leaderboard(outcomes: Sequence[Outcome], bootstrap: int = 200, seed: int = 0) -> list[Standing]:
    games = _games(outcomes)
    point = bradley_terry(games)
    if not point:
        return []
    rng = random.Random(seed)
    samples: dict[str, list[float]] = {v: [] for v in point}
    for _ in range(bootstrap):
        resample = [games[rng.randrange(len(games))] for _ in games]
        fitted = bradley_terry(resample, iters=100)
        for v in point:
            # A version missing from a resample sits at the average.
            samples[v].append(_elo(fitted.get(v, 1.0)))
    standings = []
    for v, s in point.items():
        ordered = sorted(samples[v])
        lo = ordered[int(0.025 * (len(ordered) - 1))]
        hi = ordered[int(math.ceil(0.975 * (len(ordered) - 1)))]
        played = [g for g in games if v in g[:2]]
        wins = sum(sc if v == a else 1.0 - sc for a, b, sc in played)
        standings.append(Standing(v, _elo(s), lo, hi, len(played), wins))
    return sorted(standings, key=lambda x: -x.rating)
