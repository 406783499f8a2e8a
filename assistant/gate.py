"""The eval gate: whether a candidate version may become the chat's version, from its
evaluations against the active one (QA accuracy must not drop by more than the threshold;
the win rate is judged by a sign test), and activation through it.
"""

from __future__ import annotations

from dataclasses import dataclass

from assistant.registry import ActivationRefused, Registry
from assistant.versions import BASE_VERSION

#: Default eval gate tolerance: a candidate whose QA accuracy drops by more than this is
#: refused (the win rate is judged by a sign test instead: see :func:`gate_report`).
DEFAULT_GATE = 0.05


@dataclass(frozen=True)
class GateReport:
    """What the gate checked, what it could not, and its verdict on the win rate."""

    candidate: str
    baseline: str
    #: better | worse | not enough evidence | not evaluated | not measured (no reward model)
    verdict: str
    reasons: list[str]  # why it refuses (empty: it lets the candidate through)
    checked: list[str]
    not_checked: list[str]

    @property
    def passes(self) -> bool:
        return not self.reasons


def gate_report(registry: Registry, candidate: str, threshold: float = DEFAULT_GATE) -> GateReport:
    """The gate's reading of the newest evaluation of ``candidate`` against the active version.

    It lets a candidate through only on evidence that it is better: the reward model
    preferred its answers on the held-out prompts and the exact sign test on the prompts
    that were not tied says so at 95% (:mod:`assistant.significance`). "Worse" and "not
    enough evidence" refuse (the latter says how many prompts would tell), and so does an
    evaluation without a reward model, which measured no win rate, unless grounded QA (judged
    against gold answers) says it is better. QA accuracy falling by more than ``threshold``
    refuses too, and so does grounded answer accuracy, cited accuracy or abstention that the
    sign test finds worse. ``--force`` skips all of it.
    """
    from assistant.significance import BETTER, UNDECIDED, WORSE, paired

    active = registry.active()
    if candidate == active or candidate == BASE_VERSION:
        return GateReport(candidate, active, BETTER, [], ["it is the active version or the base model"], [])
    record = registry.latest_evaluation(candidate, active)
    if record is None:
        return GateReport(candidate, active, "not evaluated", [
            f"{candidate} has not been evaluated against the active version {active}: "
            f"run `assistant eval {candidate}` first"], [], ["everything: no evaluation"])
    m = record.metrics
    reasons: list[str] = []
    checked: list[str] = []
    not_checked: list[str] = []
    if all(k in m for k in ("wins", "ties", "losses")):
        p = paired(int(m["wins"]), int(m["ties"]), int(m["losses"]))
        verdict = p.verdict
        judged = f"judged by reward model {record.reward_model} on {p.n} held-out prompts"
        w = p.win_rate
        line = (f"win rate {w.value:.0%} (95% CI {w.low:.0%}-{w.high:.0%}) against {active}, "
                f"{judged}: {p.explain()}")
        checked.append(line)
        if verdict == WORSE:
            reasons.append(f"its answers are worse than {active}'s: {line}")
        elif verdict == UNDECIDED:
            more = (f"; evaluate on about {p.prompts_needed} prompts (`assistant eval {candidate} "
                    f"--prompts {p.prompts_needed}`) to tell" if p.more_prompts else "")
            reasons.append(f"no evidence that it is better than {active}: {line}{more}")
    elif m.get("grounded_accuracy_verdict") == BETTER:
        # Grounded QA is judged against gold answers, no reward model needed: evidence that
        # the candidate answers from the documents better is evidence enough.
        verdict = BETTER
        not_checked.append("the win rate: no reward model judged the answers (grounded QA decided)")
    else:
        verdict = "not measured"
        not_checked.append("the win rate: no reward model judged the answers")
        reasons.append(
            f"its win rate against {active} was not measured (the evaluation had no reward "
            "model to judge the answers): train one with `assistant train reward` and evaluate "
            "again")
    for key, what in (("grounded_accuracy", "grounded answer accuracy"),
                      ("grounded_cited", "correct answers citing the right source"),
                      ("abstention", "abstention on unanswerable questions")):
        if f"{key}_verdict" not in m:
            continue
        line = (f"{what} {m[key]:.0%} against {m[f'baseline_{key}']:.0%} "
                f"({m[f'{key}_verdict']}, sign test p = {m.get(f'{key}_p_value', 1.0):.2g})")
        checked.append(line)
        if m[f"{key}_verdict"] == WORSE:
            reasons.append(f"its {line}")
    qa, qa_base = m.get("qa_accuracy"), m.get("baseline_qa_accuracy")
    if qa is not None and qa_base is not None:
        checked.append(f"QA accuracy {qa:.0%} against {qa_base:.0%} on {m.get('qa_questions', '?')} questions")
        if qa < qa_base - threshold:
            reasons.append(f"its QA accuracy fell from {qa_base:.0%} to {qa:.0%} "
                           f"(more than {threshold:.0%})")
    else:
        not_checked.append("QA accuracy")
    return GateReport(candidate, active, verdict, reasons, checked, not_checked)


def gate(registry: Registry, candidate: str, threshold: float = DEFAULT_GATE) -> list[str]:
    """Reasons to refuse activating ``candidate`` over the active version (empty: go);
    :func:`gate_report` tells the whole story."""
    return gate_report(registry, candidate, threshold).reasons


def activate_version(
    registry: Registry,
    name: str,
    base_fingerprint: str,
    *,
    force: bool = False,
    threshold: float = DEFAULT_GATE,
) -> str:
    """Make ``name`` the chat's version, if it can serve this base model and passes the eval
    gate (``force`` skips the gate, not the checks that it can be loaded). Raises
    :class:`ActivationRefused` with the reasons, leaving the active version as it was."""
    registry.check_servable(name, base_fingerprint)
    reasons = gate(registry, name, threshold)
    if reasons and not force:
        raise ActivationRefused(
            f"Refused to activate {name}: {'; '.join(reasons)}. The chat stays on "
            f"{registry.active()}. Pass --force (or tick 'force' on the Models page) to "
            "activate it anyway."
        )
    reason = "forced: " + "; ".join(reasons) if reasons else "activate"
    return registry.activate(name, forced=bool(reasons), reason=reason)
