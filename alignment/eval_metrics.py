"""Scoring an evaluation: from answers and reward scores to the figures stored with it, and
back to text and tables. Pure Python (no model, no torch): ``assistant eval`` produces the
answers and the scores (:mod:`alignment.evaluate`), this module judges them.

The rules, stated once:

* two answers with the same words (whitespace ignored) tie, whatever their scores;
* two scores closer than :data:`~assistant.significance.SCORE_TOLERANCE` tie;
* every rate carries its n and a 95% Wilson interval; a win rate comes with the exact sign
  test on the prompts that were not tied and a verdict (better, worse, not enough evidence);
* every score comes with what length alone would give: the reward model's accuracy next
  to "the shorter answer wins" and "the longer answer wins" on the same pairs and the share
  of its choices that went to the shorter answer; a win rate next to each side's mean
  answer length (words) and repeated 3-gram rate (:func:`assistant.words.repeated_ngram_rate`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from assistant.registry import EvalRecord
from assistant.significance import SCORE_TOLERANCE, UNDECIDED, compare, paired, rate
from assistant.words import repeated_ngram_rate, same_text, word_count

#: The n-gram size of the repetition rate.
REPEAT_N = 3


def _interval(prefix: str, successes: float, n: int) -> dict[str, float]:
    r = rate(successes, n)
    return {prefix: r.value, f"{prefix}_low": r.low, f"{prefix}_high": r.high}


def _half_if_equal(a: int, b: int, first_wins: bool) -> float:
    if a == b:
        return 0.5
    return 1.0 if (a < b) == first_wins else 0.0


def reward_model_metrics(chosen_scores: Sequence[float], rejected_scores: Sequence[float],
                         chosen: Sequence[str], rejected: Sequence[str],
                         tolerance: float = SCORE_TOLERANCE) -> dict[str, Any]:
    """The reward model's accuracy on held-out pairs (a score tie counts half) beside the
    length baselines on the same pairs."""
    n = len(chosen_scores)
    if n == 0:
        return {"pairs": 0}
    verdicts = [compare(c, r, tolerance) for c, r in zip(chosen_scores, rejected_scores, strict=True)]
    correct = sum(v == 1 for v in verdicts) + sum(v == 0 for v in verdicts) / 2
    lc, lr = [word_count(t) for t in chosen], [word_count(t) for t in rejected]
    shorter = sum(_half_if_equal(a, b, True) for a, b in zip(lc, lr))
    longer = sum(_half_if_equal(a, b, False) for a, b in zip(lc, lr))
    # Of the pairs with answers of different lengths where the model chose, how often it
    # chose the shorter one: near 1 (or 0), its accuracy is mostly length.
    picks = [(v == 1) == (a < b) for v, a, b in zip(verdicts, lc, lr) if v != 0 and a != b]
    return {
        "pairs": n,
        **_interval("reward_accuracy", correct, n),
        "reward_score_ties": sum(v == 0 for v in verdicts),
        **_interval("shorter_wins", shorter, n),
        **_interval("longer_wins", longer, n),
        "reward_picks_shorter": sum(picks) / len(picks) if picks else None,
        "reward_length_pairs": len(picks),
        "chosen_words": sum(lc) / n, "rejected_words": sum(lr) / n,
        "score_tolerance": tolerance,
    }


def answer_metrics(candidate: Sequence[str], baseline: Sequence[str]) -> dict[str, Any]:
    """What can be said of two versions' answers without a judge: how many are identical,
    each side's mean length and repetition."""
    n = len(candidate)
    if n == 0:
        return {"prompts": 0}
    return {
        "prompts": n,
        "identical_answers": sum(same_text(a, b) for a, b in zip(candidate, baseline, strict=True)),
        "candidate_words": sum(map(word_count, candidate)) / n,
        "baseline_words": sum(map(word_count, baseline)) / n,
        "candidate_repetition": repeated_ngram_rate(list(candidate), REPEAT_N),
        "baseline_repetition": repeated_ngram_rate(list(baseline), REPEAT_N),
        "repetition_ngram": REPEAT_N,
    }


def win_metrics(candidate: Sequence[str], baseline: Sequence[str], candidate_scores: Sequence[float],
                baseline_scores: Sequence[float], tolerance: float = SCORE_TOLERANCE) -> dict[str, Any]:
    """The candidate's wins, ties and losses against the baseline as judged by the reward
    model (identical answers tie whatever their scores), the sign test and its verdict."""
    outcomes = [
        0 if same_text(a, b) else compare(sa, sb, tolerance)
        for a, b, sa, sb in zip(candidate, baseline, candidate_scores, baseline_scores, strict=True)
    ]
    wins, losses = outcomes.count(1), outcomes.count(-1)
    p = paired(wins, outcomes.count(0), losses)
    n = len(outcomes)
    decided = [(o, word_count(a), word_count(b)) for o, a, b in zip(outcomes, candidate, baseline)
               if o != 0 and word_count(a) != word_count(b)]
    return {
        "win_rate": p.win_rate.value, "win_rate_low": p.win_rate.low, "win_rate_high": p.win_rate.high,
        "wins": wins, "ties": p.ties, "losses": losses,
        "p_value": p.p_value, "verdict": p.verdict, "prompts_needed": p.prompts_needed,
        "more_prompts": p.more_prompts,
        "mean_reward": sum(candidate_scores) / n if n else None,
        "baseline_mean_reward": sum(baseline_scores) / n if n else None,
        # Of the decided prompts with answers of different length, the share the shorter won.
        "shorter_answer_won": (sum((o == 1) == (a < b) for o, a, b in decided) / len(decided)
                               if decided else None),
        "score_tolerance": tolerance,
    }


def qa_metrics(candidate_correct: Sequence[bool], baseline_correct: Sequence[bool]) -> dict[str, Any]:
    """QA accuracy of each side with its interval, and the sign test on the questions only
    one of them got right."""
    n = len(candidate_correct)
    if n == 0:
        return {}
    better = sum(c and not b for c, b in zip(candidate_correct, baseline_correct, strict=True))
    worse = sum(b and not c for c, b in zip(candidate_correct, baseline_correct))
    p = paired(better, n - better - worse, worse)
    return {
        "qa_questions": n,
        **_interval("qa_accuracy", sum(candidate_correct), n),
        **_interval("baseline_qa_accuracy", sum(baseline_correct), n),
        "qa_p_value": p.p_value, "qa_verdict": p.verdict,
    }


def _paired(prefix: str, candidate: Sequence[bool], baseline: Sequence[bool]) -> dict[str, Any]:
    """Each side's rate with its interval, and the sign test on the items only one got."""
    n = len(candidate)
    better = sum(c and not b for c, b in zip(candidate, baseline, strict=True))
    worse = sum(b and not c for c, b in zip(candidate, baseline))
    p = paired(better, n - better - worse, worse)
    return {**_interval(prefix, sum(candidate), n), **_interval(f"baseline_{prefix}", sum(baseline), n),
            f"{prefix}_p_value": p.p_value, f"{prefix}_verdict": p.verdict}


def grounded_metrics(candidate: Sequence[Any], baseline: Sequence[Any],
                     answerable: Sequence[bool]) -> dict[str, Any]:
    """Grounded QA on retrieved sources, from each side's :class:`alignment.grounded.Verdict`
    per question (``answerable``: the sources hold a gold answer; else the right answer is
    the abstention):

    * answer accuracy: answerable questions answered correctly;
    * cited accuracy: answerable questions answered correctly citing a source that holds the
      answer (both paired, with the sign test);
    * citation accuracy: of the correct answers, the share citing a source that holds it (the
      sides' n differ: intervals, no paired test);
    * abstention: unanswerable questions where the model said the documents do not say
      (paired), and the false abstentions on answerable ones;
    * quotes verbatim: of the answers that quote, the share whose every quote is word for
      word in the source it names.
    """
    out: dict[str, Any] = {}
    ans = [i for i, a in enumerate(answerable) if a]
    una = [i for i, a in enumerate(answerable) if not a]
    out.update(grounded_questions=len(answerable), grounded_answerable=len(ans), grounded_unanswerable=len(una))
    if ans:
        out.update(_paired("grounded_accuracy", [candidate[i].correct for i in ans],
                           [baseline[i].correct for i in ans]))
        out.update(_paired("grounded_cited", [candidate[i].correct and bool(candidate[i].cites_right) for i in ans],
                           [baseline[i].correct and bool(baseline[i].cites_right) for i in ans]))
        for side, verdicts in (("", candidate), ("baseline_", baseline)):
            right = [verdicts[i] for i in ans if verdicts[i].correct]
            out.update(_interval(f"{side}citation_accuracy", sum(bool(v.cites_right) for v in right), len(right)))
            out[f"{side}citation_n"] = len(right)
            out.update(_interval(f"{side}false_abstention", sum(verdicts[i].abstained for i in ans), len(ans)))
    if una:
        out.update(_paired("abstention", [candidate[i].abstained for i in una],
                           [baseline[i].abstained for i in una]))
    for side, verdicts in (("", candidate), ("baseline_", baseline)):
        quoting = [v.quotes_verbatim for v in verdicts if getattr(v, "quotes_verbatim", None) is not None]
        if quoting:
            out.update(_interval(f"{side}quotes_verbatim", sum(quoting), len(quoting)))
            out[f"{side}quoting_n"] = len(quoting)
    return out


def _curve_lines(m: dict[str, Any]) -> list[str]:
    """The abstention trade-off of each side whose model abstained (quoted mode): answer
    accuracy / abstention / false abstention at each ``answers.min_abstain_probability``."""
    curves, lines = m.get("abstention_curve") or {}, []
    if curves:
        chosen = {m.get("candidate"): m.get("min_abstain_probability"),
                  m.get("baseline"): m.get("baseline_min_abstain_probability")}
        lines = ["    abstention trade-off by answers.min_abstain_probability "
                 "(accuracy / abstention / false abstention; * the threshold used):"]
        lines += [f"      {name}: {curve_line(rows, chosen.get(name, m.get('min_abstain_probability')))}"
                  for name, rows in curves.items()]
    if m.get("answerability_head"):
        lines.append(f"    answerability head {m['answerability_head']} (threshold {m['head_threshold']:.3g}) "
                     f"said the top source does not answer {m['head_abstained']} questions "
                     f"({m.get('head_seconds_per_question', 0):.2f} s a question); by its "
                     "threshold (accuracy / abstention / false abstention):")
        lines += [f"      {name}: {curve_line(rows, None, 'head_threshold')}"
                  for name, rows in (m.get("head_curve") or {}).items()]
    return lines


def curve_line(rows: list[dict[str, Any]], chosen: float | None, key: str = "min_abstain_probability") -> str:
    """One version's trade-off on one line: ``0 62%/60%/27%; 0.1* 73%/53%/16%; ...``."""
    return "; ".join(
        f"{r[key]:g}{'*' if r[key] == chosen else ''} "
        f"{_share(r['accuracy'])}/{_share(r['abstention'])}/{_share(r['false_abstention'])}"
        for r in rows)


# -- reading a record back -----------------------------------------------------------------------
#: The n behind each rate (records written before intervals were stored get them here).
_N = {"win_rate": "prompts", "reward_accuracy": "pairs", "shorter_wins": "pairs",
      "longer_wins": "pairs", "qa_accuracy": "qa_questions", "baseline_qa_accuracy": "qa_questions",
      "grounded_accuracy": "grounded_answerable", "baseline_grounded_accuracy": "grounded_answerable",
      "grounded_cited": "grounded_answerable", "baseline_grounded_cited": "grounded_answerable",
      "citation_accuracy": "citation_n", "baseline_citation_accuracy": "baseline_citation_n",
      "abstention": "grounded_unanswerable", "baseline_abstention": "grounded_unanswerable",
      "quotes_verbatim": "quoting_n", "baseline_quotes_verbatim": "baseline_quoting_n"}

#: The grounded rows of a record: (label, key, n key, paired).
GROUNDED_ROWS = (
    ("grounded answer accuracy (95% CI)", "grounded_accuracy", "grounded_answerable", True),
    ("correct and citing the right source", "grounded_cited", "grounded_answerable", True),
    ("citation accuracy (of correct answers)", "citation_accuracy", "citation_n", False),
    ("abstention on unanswerable", "abstention", "grounded_unanswerable", True),
    ("false abstention on answerable", "false_abstention", "grounded_answerable", False),
    ("quotes word for word in the source (of answers that quote)", "quotes_verbatim", "quoting_n", False),
)


def _pct(m: dict, key: str) -> str:
    value = m.get(key)
    if not isinstance(value, int | float):
        return "-"
    low, high = m.get(f"{key}_low"), m.get(f"{key}_high")
    n = m.get(_N.get(key, ""))
    if (low is None or high is None) and isinstance(n, int) and n > 0:
        r = rate(value * n, n)
        low, high = r.low, r.high
    if low is None or high is None:
        return f"{value:.1%}"
    return f"{value:.1%} ({low:.1%}-{high:.1%})"


def _words(m: dict, key: str) -> str:
    return f"{m[key]:.1f}" if isinstance(m.get(key), int | float) else "-"


def _share(value: Any) -> str:
    return f"{value:.1%}" if isinstance(value, int | float) else "-"


def win_rate_measured(m: dict) -> bool:
    return all(k in m for k in ("wins", "ties", "losses"))


def verdict_text(m: dict) -> str:
    """The win-rate verdict of a record, explained (or why there is none)."""
    if not win_rate_measured(m):
        return ("win rate not measured: no reward model judged the answers (train one with "
                "`assistant train reward`, then evaluate again)")
    return paired(m["wins"], m["ties"], m["losses"]).explain()


def table(record: EvalRecord) -> list[dict[str, str]]:
    """The record as rows of (measure, candidate, baseline, n, note) for the Models page."""
    m = record.metrics
    rows: list[dict[str, str]] = []

    def add(measure: str, cand: str, base: str, n: Any, note: str = "") -> None:
        rows.append({"measure": measure, "candidate": cand, "baseline": base,
                     "n": "" if n is None else str(n), "note": note})

    if m.get("prompts"):
        if win_rate_measured(m):
            add("win rate (95% CI)", _pct(m, "win_rate"), "", m["prompts"],
                f"{m['wins']} wins, {m['ties']} ties, {m['losses']} losses; {m.get('verdict', UNDECIDED)}"
                f" (sign test p = {m.get('p_value', 1.0):.2g})")
            if m.get("mean_reward") is not None:
                add("mean reward", f"{m['mean_reward']:.3f}", f"{m['baseline_mean_reward']:.3f}", m["prompts"])
            add("shorter answer won", _share(m.get("shorter_answer_won")), "", None,
                "of the decided prompts whose answers differ in length")
        else:
            add("win rate", "not measured", "", m["prompts"], "no reward model judged the answers")
        add("identical answers", str(m.get("identical_answers", "-")), "", m["prompts"],
            "counted as ties")
        add("mean answer length (words)", _words(m, "candidate_words"), _words(m, "baseline_words"), m["prompts"])
        penalty = (f"; greedy, repetition penalty {m['repetition_penalty']:g}"
                   if "repetition_penalty" in m else "")
        add(f"repeated {m.get('repetition_ngram', REPEAT_N)}-grams", _share(m.get("candidate_repetition")),
            _share(m.get("baseline_repetition")), m["prompts"],
            f"share of word n-grams already seen in the answer{penalty}")
    if m.get("pairs"):
        rm = m.get("reward_model") or record.reward_model or "reward model"
        add(f"{rm} accuracy (95% CI)", _pct(m, "reward_accuracy"), "", m["pairs"], "held-out preference pairs")
        add("baseline: shorter answer wins", _pct(m, "shorter_wins"), "", m["pairs"], "same pairs")
        add("baseline: longer answer wins", _pct(m, "longer_wins"), "", m["pairs"], "same pairs")
        add(f"{rm} picks the shorter answer", _share(m.get("reward_picks_shorter")), "",
            m.get("reward_length_pairs"), "of the pairs it decided whose answers differ in length")
    if "heldout_pairs_given" in m:
        add("held-out pairs scored", str(m.get("pairs", 0)), "", m["heldout_pairs_given"],
            f"of those given; {m.get('pairs_prompt_shortened', 0)} texts cut from the left to fit")
        add("held-out prompts answered", str(m.get("prompts", 0)), "", m.get("heldout_prompts_given"),
            "of the distinct prompts given")
    if m.get("qa_questions"):
        add("QA accuracy (95% CI)", _pct(m, "qa_accuracy"), _pct(m, "baseline_qa_accuracy"),
            m["qa_questions"], m.get("qa_verdict", ""))
    for label, key, n_key, is_paired in GROUNDED_ROWS:
        if key in m:
            note = (f"{m.get(f'{key}_verdict', '')} (sign test p = {m.get(f'{key}_p_value', 1.0):.2g})"
                    if is_paired else "")
            n = (f"{m.get(n_key, 0)} / {m['baseline_' + n_key]}" if f"baseline_{n_key}" in m
                 else m.get(n_key))
            add(label, _pct(m, key), _pct(m, f"baseline_{key}"), n, note)
    return rows


def summarize(record: EvalRecord) -> list[str]:
    """The record as lines for a terminal."""
    m = record.metrics
    decoding = (f"; greedy answers, repetition penalty {m['repetition_penalty']:g}"
                if "repetition_penalty" in m else "")
    lines = [f"{record.candidate} against {record.baseline} ({m.get('seconds', 0):.0f} s{decoding}):"]
    if "heldout_pairs_given" in m:
        lines.append(
            f"  held-out data: {m['heldout_pairs_given']} pairs given, {m.get('pairs', 0)} scored"
            f" ({m.get('pairs_prompt_shortened', 0)} texts cut from the left to the reward model's"
            f" length); {m.get('heldout_prompts_given', 0)} distinct prompts, {m.get('prompts', 0)} answered")
    if m.get("pairs"):
        lines.append(
            f"  reward model {m.get('reward_model', record.reward_model)}: accuracy "
            f"{_pct(m, 'reward_accuracy')} on {m['pairs']} held-out pairs; length alone: "
            f"shorter wins {_pct(m, 'shorter_wins')}, longer wins {_pct(m, 'longer_wins')}; "
            f"it picks the shorter answer in {_share(m.get('reward_picks_shorter'))} of "
            f"{m.get('reward_length_pairs', 0)} pairs")
    if m.get("prompts"):
        if win_rate_measured(m):
            lines.append(
                f"  win rate {_pct(m, 'win_rate')} on {m['prompts']} held-out prompts: "
                f"{verdict_text(m)}")
            if m.get("mean_reward") is not None:
                lines.append(f"  mean reward {m['mean_reward']:.3f} vs {m['baseline_mean_reward']:.3f} "
                             f"(scores within {m.get('score_tolerance', SCORE_TOLERANCE):g} tie)")
        else:
            lines.append(f"  {verdict_text(m)}")
        lines.append(
            f"  answers: {m.get('identical_answers', 0)} of {m['prompts']} identical (ties); "
            f"mean length {_words(m, 'candidate_words')} vs {_words(m, 'baseline_words')} words; "
            f"repeated {m.get('repetition_ngram', REPEAT_N)}-grams "
            f"{_share(m.get('candidate_repetition'))} vs {_share(m.get('baseline_repetition'))}")
    if m.get("qa_questions"):
        lines.append(f"  QA accuracy {_pct(m, 'qa_accuracy')} vs {_pct(m, 'baseline_qa_accuracy')} "
                     f"({m['qa_questions']} questions; {m.get('qa_verdict', '')})")
    if m.get("grounded_questions"):
        lines.append(f"  grounded QA on retrieved sources ({m.get('grounded_source', 'held-out examples')}): "
                     f"{m['grounded_questions']} questions, {m.get('grounded_answerable', 0)} answerable, "
                     f"{m.get('grounded_unanswerable', 0)} to abstain on; answers "
                     f"{m.get('answer_mode', 'free')}"
                     + (f", {m['grounded_seconds_per_answer']:.2f} s vs "
                        f"{m['baseline_grounded_seconds_per_answer']:.2f} s each"
                        if "grounded_seconds_per_answer" in m else ""))
        for label, key, _n_key, is_paired in GROUNDED_ROWS:
            if key in m:
                verdict = f"; {m.get(f'{key}_verdict', '')}" if is_paired else ""
                lines.append(f"    {label}: {_pct(m, key)} vs {_pct(m, f'baseline_{key}')}{verdict}")
        lines.extend(_curve_lines(m))
    for note in m.get("notes", []):
        lines.append(f"  {note}")
    if "note" in m:  # older records
        lines.append(f"  {m['note']}")
    return lines
