"""``assistant eval``: is a candidate version better than the active one?

Three measurements, stored as an evaluation in the registry (what the activation gate reads):

1. the reward model's accuracy on held-out preference pairs (how far to trust the judge),
   beside what answer length alone would score on the same pairs;
2. the candidate's win rate against the baseline: both answer the held-out prompts
   (greedy, with the chat's repetition penalty) through the engine the chat uses (what is
   judged is what serves), the reward
   model scores both answers; identical answers and scores within a
   tolerance tie, a tie counts half; the sign test on the rest gives the verdict (better,
   worse, not enough evidence). Without a reward model the win rate is not measured; the
   answers' length and repetition still are;
3. answer accuracy on a small retrieval QA set (``evalsets/squad_qa.jsonl``): the paragraph is
   given as a numbered source in the chat's own prompt format; an answer is correct when it
   contains a reference answer;
4. grounded QA on retrieved sources: questions asked with the sources the product's own
   retrieval returns (not the gold paragraph), judged by :mod:`alignment.grounded` (answer
   accuracy, citation accuracy, abstention on unanswerable questions), each side with its
   interval and the sign test. The questions are the held-out grounded examples in the
   database (the test split of `data import squad`), or those of a SQuAD file
   (``--grounded-file``, retrieved from the library now: e.g. an article never trained on).

    assistant eval v4                    # against the active version, newest reward model
    assistant eval v4 --against base --reward v2 --prompts 32
    assistant eval v4 --grounded-file dev.json --grounded-title Normans --grounded 80
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING, Any

from alignment.answering import VersionAnswers, answering, penalty_of
from alignment.errors import NoTrainingData
from alignment.eval_metrics import answer_metrics, qa_metrics, reward_model_metrics, summarize, table, win_metrics
from alignment.export import ExportOptions, export
from alignment.grounded import Verdict, contains_answer, judge
from alignment.on_policy import grounded_examples
from assistant.bootstrap import open_database, open_registry
from assistant.config import Settings
from assistant.engines.models import LoadedModel, load_model
from assistant.engines.messages import Messages
from assistant.chat.prompting import build_messages
from assistant.registry import EvalRecord, Registry
from assistant.significance import SCORE_TOLERANCE, min_decided_for_significance
from assistant.versions import REWARD_KIND

if TYPE_CHECKING:
    from alignment.reward_model import RewardScorer
    from assistant.chat.evidence import Similarity
    from assistant.registry import Version
    from assistant.storage import Database

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvalOptions:
    baseline: str | None = None  # None: the active version
    reward: str | None = None  # None: the newest reward model
    pairs: int = 200  # held-out pairs the reward model is checked on
    prompts: int = 16  # held-out prompts both versions answer
    qa: int = 24  # QA questions (at most the set's 24)
    max_new_tokens: int = 64
    qa_max_new_tokens: int = 32
    batch_size: int = 8
    test_fraction: float = 0.1  # the same split as training's default
    split_seed: int = 0
    tolerance: float = SCORE_TOLERANCE  # reward scores closer than this tie
    grounded: int | None = 60  # grounded questions (0: none; None: all)
    grounded_max_new_tokens: int = 48
    #: A SQuAD file whose questions are asked (None: the held-out grounded examples).
    grounded_file: str | None = None
    grounded_titles: tuple[str, ...] = ()
    #: Which of --grounded-file's paragraphs are asked: ``all``, ``calibration`` (those ``data
    #: import squad --calibration`` leaves out of the examples and ``assistant models
    #: calibrate`` asks: :func:`alignment.squad.calibration_paragraph`) or ``rest`` (the others:
    #: questions a calibration on this file did not see).
    grounded_paragraphs: str = "all"
    #: Repetition penalty of every answer (None: the chat's, ``generation.repetition_penalty``;
    #: 1.0: off, to see how much a version loops on its own).
    repetition_penalty: float | None = None
    #: How grounded answers are formed (:mod:`assistant.chat.answer_modes`; None: the chat's,
    #: ``answers.mode``).
    answer_mode: str | None = None


@dataclass(frozen=True)
class QAItem:
    context: str
    question: str
    answers: tuple[str, ...]
    title: str = ""


def qa_items(limit: int | None = None) -> list[QAItem]:
    text = resources.files("alignment.evalsets").joinpath("squad_qa.jsonl").read_text("utf-8")
    items = [json.loads(line) for line in text.splitlines() if line.strip()]
    out = [QAItem(i["context"], i["question"], tuple(i["answers"]), i.get("title", "")) for i in items]
    return out[:limit] if limit is not None else out


def is_correct(answer: str, references: tuple[str, ...]) -> bool:
    """Whether ``answer`` contains a reference answer, normalised the SQuAD way."""
    return contains_answer(answer, references)


def qa_messages(item: QAItem, system_prompt: str) -> Messages:
    """The prompt the chat would send with this paragraph retrieved as source [1]."""
    source = _Source(item.title or "document", "", item.context)
    return build_messages(system_prompt, [], item.question, [source])


@dataclass(frozen=True)
class _Source:
    document_name: str
    location: str
    text: str


def evaluate(
    settings: Settings,
    candidate: str,
    options: EvalOptions | None = None,
    *,
    db: Database | None = None,
    loaded: LoadedModel | None = None,
) -> EvalRecord:
    o = options or EvalOptions()
    started = time.perf_counter()
    db = db or open_database(settings)
    registry = open_registry(settings, db)
    baseline = o.baseline or registry.active()
    registry.get(candidate)
    registry.get(baseline)
    reward = registry.get(o.reward) if o.reward else registry.newest(REWARD_KIND)
    loaded = loaded or load_model(settings)
    scorer = None
    if reward is not None:  # before any answer is generated: another base fails at once
        from alignment.reward_model import load_reward_model

        scorer = load_reward_model(loaded, reward)
    with answering(settings, registry, {candidate, baseline}, loaded=loaded,
                   fingerprint=loaded.fingerprint,
                   repetition_penalty=penalty_of(settings, o.repetition_penalty)) as models:
        return _evaluate(settings, registry, candidate, baseline, reward, scorer, models, o, db,
                         started, models.engine)


def _evaluate(settings: Settings, registry: Registry, candidate: str, baseline: str, reward: Version | None,
              scorer: RewardScorer | None, models: VersionAnswers, o: EvalOptions, db: Database, started: float,
              engine: str) -> EvalRecord:
    metrics: dict[str, Any] = {"candidate": candidate, "baseline": baseline, "engine": engine,
                               "repetition_penalty": models.repetition_penalty}
    notes: list[str] = []

    # Held-out pairs (the default training split's test side).
    try:
        test = export(db, "preference", ExportOptions(test_fraction=o.test_fraction, seed=o.split_seed)).test
    except NoTrainingData:
        test = []
    pairs = test[: o.pairs]
    distinct = list({json.dumps(r["prompt"]): r["prompt"] for r in test}.values())
    prompts = distinct[: o.prompts]
    metrics.update(heldout_pairs_given=len(test), heldout_prompts_given=len(distinct))
    if not test:
        notes.append("no held-out preference pairs (the test split is empty): win rate and "
                     "reward-model accuracy not measured; import or collect more pairs")

    if prompts:
        cand, base = answers(models, candidate, baseline, prompts, o)
        metrics.update(answer_metrics(cand, base))
        metrics["examples"] = [{"prompt": p[-1]["content"][:500], "candidate": c[:500], "baseline": b[:500]}
                               for p, c, b in list(zip(prompts, cand, base))[:3]]
        need = min_decided_for_significance()
        if len(prompts) < need:
            notes.append(f"{len(prompts)} prompts cannot show a difference at 95%: the sign test "
                         f"needs at least {need} prompts whose answers differ (use --prompts {need} or more)")
    if scorer is not None:
        metrics["reward_model"] = reward.name
        if pairs:
            ps = [p["prompt"] for p in pairs]
            chosen_text = [p["chosen"][0]["content"] for p in pairs]
            rejected_text = [p["rejected"][0]["content"] for p in pairs]
            chosen, rejected = scorer.score(ps, chosen_text), scorer.score(ps, rejected_text)
            metrics.update(reward_model_metrics(chosen, rejected, chosen_text, rejected_text, o.tolerance))
            metrics["pairs_prompt_shortened"] = scorer.shortened
        if prompts:
            sc, sb = scorer.score(prompts, cand), scorer.score(prompts, base)
            metrics.update(win_metrics(cand, base, sc, sb, o.tolerance))
        del scorer
    else:
        notes.append("no reward model: the win rate and the reward model's accuracy were not "
                     "measured (train one with `assistant train reward`)")

    items = qa_items(o.qa)
    if items:
        system = settings.generation.system_prompt
        conversations = [qa_messages(i, system) for i in items]
        correct = {}
        for name in (candidate, baseline):
            said = models.generate(name, conversations, o.qa_max_new_tokens, o.batch_size, f"{name} QA")
            correct[name] = [is_correct(a, i.answers) for a, i in zip(said, items)]
        metrics.update(qa_metrics(correct[candidate], correct[baseline]))
    if o.grounded:
        metrics.update(grounded_qa(settings, db, models, candidate, baseline, o, notes, registry))
    metrics["notes"] = notes
    metrics["seconds"] = round(time.perf_counter() - started, 1)
    log.info("eval %s vs %s: %s", candidate, baseline, metrics)
    return registry.record_evaluation(candidate, baseline, getattr(reward, "name", None), metrics)


# -- grounded QA on retrieved sources ------------------------------------------------------------
@dataclass(frozen=True)
class GroundedItem:
    messages: Messages
    answers: tuple[str, ...]  # empty: the right answer is the abstention
    sources: tuple[str, ...]
    question: str = ""


def grounded_items(settings: Settings, db: Database, o: EvalOptions) -> tuple[list[GroundedItem], str]:
    """The grounded questions to ask and where they come from."""
    if o.grounded_file:
        from alignment.squad import (
            calibration_paragraph,
            ground,
            parse_squad,
            pick,
            select_articles,
            span_in_context,
        )
        from assistant.bootstrap import open_library

        _, articles = parse_squad(o.grounded_file)
        questions = [q for a in select_articles(articles, o.grounded_titles) for q in a.questions
                     if span_in_context(q) and _asked(o.grounded_paragraphs, calibration_paragraph(q))]
        library = open_library(settings, db)
        items = []
        for q in pick(questions, o.grounded):
            ex = ground(q, library)
            items.append(GroundedItem(
                build_messages(settings.generation.system_prompt, [], q.question, ex.sources),
                ex.judged_answers, tuple(s.text for s in ex.sources), q.question))
        titles = f" ({', '.join(o.grounded_titles)})" if o.grounded_titles else ""
        part = PARAGRAPHS[o.grounded_paragraphs]
        return items, f"{o.grounded_file}{titles}{part}"
    from alignment.export import split_of

    held_out = [e for e in grounded_examples(db)
                if split_of(e.conversation_id, o.split_seed, o.test_fraction) == "test"]
    items = [GroundedItem(e.messages(), e.answers, tuple(s.text for s in e.sources), e.question)
             for e in held_out[: o.grounded]]
    return items, "held-out grounded examples"


#: What each ``grounded_paragraphs`` adds to where the questions come from.
PARAGRAPHS = {"all": "", "calibration": ", the paragraphs left for calibration",
              "rest": ", the paragraphs not left for calibration"}


def _asked(paragraphs: str, for_calibration: bool) -> bool:
    if paragraphs not in PARAGRAPHS:
        raise ValueError(f"grounded_paragraphs is one of {', '.join(PARAGRAPHS)}, not {paragraphs!r}")
    return paragraphs == "all" or for_calibration == (paragraphs == "calibration")


def grounded_qa(settings: Settings, db: Database, models: VersionAnswers, candidate: str, baseline: str,
                o: EvalOptions, notes: list[str], registry: Registry) -> dict[str, Any]:
    from alignment.eval_metrics import grounded_metrics
    from assistant.chat.answer_modes import abstain_threshold

    items, where = grounded_items(settings, db, o)
    if not items:
        notes.append("no grounded questions (import a SQuAD file with `assistant data import squad`, "
                     "or pass --grounded-file): grounded QA not measured")
        return {}
    mode = o.answer_mode or settings.answers.mode
    similarity = answer_similarity(settings) if mode != "free" else None
    verdicts, seconds, curves, thresholds, head_curves = {}, {}, {}, {}, {}
    head = head_probabilities(settings, registry, items) if mode == "quoted" else None
    for name in dict.fromkeys((candidate, baseline)):  # a version against itself: answered once
        answered, seconds[name] = grounded_answers(models, name, items, mode, o)
        formed = former(mode, answered, items, settings, similarity)
        # Each version's own threshold, as the chat uses it (unless the setting names one).
        thresholds[name] = abstain_threshold(settings.answers.min_abstain_probability,
                                             registry.abstain_threshold(name))
        judged = [p >= head[1] for p in head[2]] if head else None
        said = formed(thresholds[name], judged)
        verdicts[name] = [judge_item(a, i) for a, i in zip(said, items)]
        if mode == "quoted" and any(a.abstained for a in answered):
            curves[name] = abstention_curve(formed, items, judged)
        if head:
            head_curves[name] = curve_rows(items, lambda t, f=formed, m=thresholds[name]: f(
                m, [p >= t for p in head[2]]), HEAD_CURVE, "head_threshold")
        if name == candidate:
            examples = [{"question": i.question[:300], "answers": list(i.answers), "candidate": a[:300]}
                        for a, i in zip(said, items)][:5]
    out = grounded_metrics(verdicts[candidate], verdicts[baseline], [bool(i.answers) for i in items])
    out.update(grounded_source=where, grounded_examples=examples, answer_mode=mode,
               grounded_seconds_per_answer=round(seconds[candidate] / len(items), 3),
               baseline_grounded_seconds_per_answer=round(seconds[baseline] / len(items), 3))
    if mode == "quoted":
        out["min_abstain_probability"] = thresholds[candidate]
        out["baseline_min_abstain_probability"] = thresholds[baseline]
    if curves:
        out["abstention_curve"] = curves
    if head:
        out.update(answerability_head=head[0], head_threshold=head[1], head_curve=head_curves,
                   head_abstained=sum(p >= head[1] for p in head[2]),
                   head_seconds_per_question=round(head[3] / len(items), 3))
    return out


def head_probabilities(settings: Settings, registry: Registry,
                       items: list[GroundedItem]) -> tuple[str, float, list[float], float] | None:
    """The answerability head quoted mode uses (:mod:`assistant.chat.answerability`): its
    name, threshold, each item's probability that its top source does not answer it (an item
    without sources gets 0) and the seconds they took, one question at a time as the chat
    asks (None: no head)."""
    from assistant.chat.answerability import HeadSlot

    head = HeadSlot(settings, registry).head()
    if head is None:
        return None
    started = time.perf_counter()
    found = {k: head.probabilities([(i.question, i.sources[0])])[0] for k, i in enumerate(items) if i.sources}
    seconds = time.perf_counter() - started
    return head.version, head.threshold, [found.get(k, 0.0) for k in range(len(items))], seconds


def judge_item(answer: str, item: GroundedItem) -> Verdict:
    return judge(answer, item.answers, item.sources)


@dataclass(frozen=True)
class ModelAnswer:
    """What the model wrote, and the probability it gave its first sentence (None: the
    engine gave no log-probabilities, or no model answered: extractive mode)."""

    text: str
    probability: float | None = None

    @property
    def abstained(self) -> bool:
        from assistant.chat.answer_modes import abstains

        return abstains(self.text)


def grounded_answers(models: VersionAnswers, name: str, items: list[GroundedItem], mode: str,
                     o: EvalOptions) -> tuple[list[ModelAnswer], float]:
    """Version ``name``'s own answers to ``items`` (nothing in extractive mode), and the
    seconds they took in all."""
    from assistant.chat.answer_modes import WITHOUT_MODEL, first_sentence
    from assistant.engines.generation import leading_probability

    started = time.perf_counter()
    if mode in WITHOUT_MODEL:
        return [ModelAnswer("")] * len(items), time.perf_counter() - started
    said = models.generate_with_stats(name, [i.messages for i in items], o.grounded_max_new_tokens,
                                      o.batch_size, f"{name} grounded QA", logprobs=mode == "quoted")
    answered = [ModelAnswer(text, leading_probability(stats.logprobs, first_sentence(text)))
                for text, stats in said]
    return answered, time.perf_counter() - started


def form(mode: str, answer: ModelAnswer, item: GroundedItem, settings: Settings,
         similarity: Similarity | None, min_abstain_probability: float, unanswerable: bool = False) -> str:
    """The answer shown for the model's ``answer`` in ``mode``, as the chat forms it
    (:func:`assistant.chat.answer_modes.compose`)."""
    from assistant.chat.answer_modes import compose

    if mode == "free":
        return answer.text
    return compose(mode, answer.text, item.question, item.sources, similarity,
                   settings.answers.min_similarity, answer.probability, min_abstain_probability,
                   unanswerable).text


def former(mode: str, answered: list[ModelAnswer], items: list[GroundedItem], settings: Settings,
           similarity: Similarity | None) -> Callable[[float, Sequence[bool] | None], list[str]]:
    """The answers shown for ``answered`` at a given ``answers.min_abstain_probability``, with
    the items the answerability head judged not answered (None: no head). Only whether a
    model's abstention is trusted depends on the threshold (compose's rule: its probability is
    known and under it), so each answer is composed at most three times (the head's
    abstention is one of them), however many thresholds are asked."""
    done: dict[tuple[int, bool, bool], str] = {}

    def at(threshold: float, judged: Sequence[bool] | None = None) -> list[str]:
        out = []
        for k, (a, i) in enumerate(zip(answered, items)):
            trusted = a.probability is None or a.probability >= threshold
            head = bool(judged[k]) if judged is not None else False
            key = (k, trusted and not head, head)
            if key not in done:
                done[key] = form(mode, a, i, settings, similarity, threshold, head)
            out.append(done[key])
        return out
    return at


#: The ``answers.min_abstain_probability`` values evaluation reports the trade-off at.
ABSTAIN_CURVE = (0.0, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5)


#: The answerability head's thresholds evaluation reports the trade-off at (1: it never abstains).
HEAD_CURVE = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)


def abstention_curve(formed: Callable[[float, Sequence[bool] | None], list[str]], items: list[GroundedItem],
                     judged: Sequence[bool] | None = None) -> list[dict]:
    """Answer accuracy, abstention and false abstention at each of :data:`ABSTAIN_CURVE`:
    the trade-off behind ``answers.min_abstain_probability`` (``judged``: the head's verdicts)."""
    return curve_rows(items, lambda t: formed(t, judged), ABSTAIN_CURVE, "min_abstain_probability")


def curve_rows(items: list[GroundedItem], answers_at: Callable[[float], list[str]],
               thresholds: Sequence[float], key: str) -> list[dict]:
    """Answer accuracy, abstention and false abstention of ``answers_at`` each threshold."""
    ans = [k for k, i in enumerate(items) if i.answers]
    una = [k for k, i in enumerate(items) if not i.answers]
    rows = []
    for threshold in thresholds:
        verdicts = [judge_item(a, i) for a, i in zip(answers_at(threshold), items)]
        rows.append({
            key: threshold,
            "accuracy": _share(sum(verdicts[k].correct for k in ans), len(ans)),
            "abstention": _share(sum(verdicts[k].abstained for k in una), len(una)),
            "false_abstention": _share(sum(verdicts[k].abstained for k in ans), len(ans)),
        })
    return rows


def _share(count: int, n: int) -> float | None:
    return round(count / n, 4) if n else None


def answer_similarity(settings: Settings) -> Similarity:
    from assistant.chat.answer_modes import similarity_of
    from assistant.documents.embedding import Embedder

    return similarity_of(Embedder(settings.retrieval.embedding_model))


# -- answer generation (the seam: both versions answer the same prompts) --------------------------
def answers(models: VersionAnswers, candidate: str, baseline: str, prompts: list[Messages],
            o: EvalOptions) -> tuple[list[str], list[str]]:
    """Each version's greedy answers to ``prompts``, in order."""
    cand = models.generate(candidate, prompts, o.max_new_tokens, o.batch_size, f"{candidate} answers")
    base = models.generate(baseline, prompts, o.max_new_tokens, o.batch_size, f"{baseline} answers")
    return cand, base


__all__ = ["EvalOptions", "evaluate", "summarize", "table"]
