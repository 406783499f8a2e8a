"""Evidence sentences and the answer modes (assistant.chat.evidence, assistant.chat.answer_modes), on
plain text, the real embedding model, and the project's SQuAD articles."""

from __future__ import annotations

import pytest

from alignment.grounded import judge
from assistant.chat.answer_modes import (
    ABSTENTION,
    REPLACED,
    ComposedStream,
    compose,
    first_sentence,
    quotes,
    sentence_done,
    similarity_of,
    unverified_quotes,
)
from assistant.chat.evidence import MAX_WORDS, best_for_question, sentences, supporting, verbatim
from assistant.engines.generation import GenerationStats

NORMANS = (
    "The Normans were the people who in the 10th and 11th centuries gave their name to "
    "Normandy, a region in France. They were descended from Norse raiders and pirates from "
    "Denmark, Iceland and Norway. Their leader Rollo agreed to swear fealty to King Charles "
    "III of West Francia."
)
BREAD = (
    "Sourdough is leavened with a starter of wild yeast and lactic acid bacteria. "
    "The dough ferments for many hours before it is baked."
)


@pytest.fixture(scope="module")
def similarity():
    from assistant.config import Settings
    from assistant.documents.embedding import Embedder

    return similarity_of(Embedder(Settings().retrieval.embedding_model))


def test_sentences_are_verbatim_slices_and_cut_where_there_is_no_end():
    spans = sentences(NORMANS)
    assert [NORMANS[a:b][:12] for a, b in spans] == ["The Normans ", "They were de", "Their leader"]
    # A table, code or a one-line file with no sentence end: lines, then windows of words.
    table = "name | year\nRollo | 911\n" + " ".join(f"w{i}" for i in range(150))
    units = [table[a:b] for a, b in sentences(table)]
    assert units[:2] == ["name | year", "Rollo | 911"]
    assert all(len(u.split()) <= MAX_WORDS for u in units) and len(units) == 5
    assert sentences("--- | ---\n\n   \n") == []  # nothing with a word in it


def test_best_sentence_for_a_question_by_words_and_by_meaning(similarity):
    e = best_for_question("From which countries did the Norse originate?", [BREAD, NORMANS])
    assert e.source == 2 and e.text.startswith("They were descended")
    assert NORMANS[e.start:e.end] == e.text
    # Meaning breaks what words cannot: no word of the question is in the right sentence.
    q = "Which ruler received an oath of allegiance?"
    assert not best_for_question(q, [NORMANS]).text.startswith("Their leader Rollo")
    e = best_for_question(q, [NORMANS], similarity)
    assert e.text.startswith("Their leader Rollo") and e.similarity is not None
    # Another language: the quote is still a slice of the source.
    german = "Die Normannen gaben der Normandie ihren Namen. Sie stammten von Wikingern ab."
    e = best_for_question("Wem verdankt die Normandie ihren Namen?", [german], similarity)
    assert verbatim(e.text, german) and e.text.startswith("Die Normannen")


def test_supporting_sentence_holds_the_answers_own_words():
    q = "Where is Normandy?"
    e = supporting("Normandy is a region in France.", [BREAD, NORMANS], q)
    assert (e.source, e.text[:12]) == (2, "The Normans ")
    # An invented answer (no source holds "Spain") and an echo of the question: no support.
    assert supporting("Normandy is in Spain.", [BREAD, NORMANS], q) is None
    assert supporting("Normandy is where?", [NORMANS], q) is None
    # Only the cited source counts when the answer names one.
    assert supporting("Normandy is a region in France [1].", [BREAD, NORMANS], q, among=[1]) is None


def test_first_sentence_and_when_the_stream_has_it():
    assert first_sentence("It is in France [2]. More words follow.") == "It is in France [2]."
    assert first_sentence("No end here\nsecond line") == "No end here"
    assert not sentence_done("It is in France")
    assert not sentence_done("It is in France.")  # a marker may still come
    assert not sentence_done("It is in France. [")
    assert sentence_done("It is in France [1]. The")
    assert sentence_done("A list\n- one")


def test_quoted_mode_quotes_the_sentence_behind_the_models_answer(similarity):
    q = "In what country is Normandy located?"
    c = compose("quoted", "Normandy is a region in France. It has cows.", q, [BREAD, NORMANS], similarity)
    assert c.how == "model+quote"
    assert c.text.startswith("Normandy is a region in France. [2]\n\n")
    assert quotes(c.text) == [(NORMANS[:NORMANS.index("France.") + 7], 2)]
    assert c.evidence == {2: ((0, NORMANS.index("France.") + 7),)}
    v = judge(c.text, ["France"], [BREAD, NORMANS])
    assert v.correct and v.cites_right and v.quotes_verbatim


def test_an_unsupported_model_answer_is_replaced_by_the_extractive_one(similarity):
    q = "In what country is Normandy located?"
    c = compose("quoted", "Normandy is in Spain, near Madrid.", q, [BREAD, NORMANS], similarity)
    assert c.how == "quote" and "Spain" not in c.text
    assert quotes(c.text)[0][1] == 2 and "France" in c.text
    # Extractive mode answers the same without the model at all.
    assert compose("extractive", "", q, [BREAD, NORMANS], similarity).text == c.text


def test_no_relevant_sentence_abstains_and_free_mode_keeps_the_models_words(similarity):
    q = "What is the boiling point of mercury?"
    c = compose("extractive", "", q, [BREAD, NORMANS], similarity, min_similarity=0.5)
    assert (c.text, c.how, c.evidence) == (ABSTENTION, "abstained", {})
    assert compose("quoted", "The documents do not say.", q, [NORMANS], similarity).text == ABSTENTION
    free = compose("free", "Normandy is a region in France [2].", "Where is Normandy?", [BREAD, NORMANS])
    assert free.text == "Normandy is a region in France [2]." and free.how == "model"
    assert list(free.evidence) == [2]  # the cited source, its sentence as evidence
    assert compose("free", "Normandy is a region in France.", "Where is Normandy?", [NORMANS]).evidence == {}
    assert compose("quoted", "Hello!", "Hi", []).how == "plain"  # no sources: a chat answer
    with pytest.raises(ValueError, match="quoted"):
        compose("poetic", "x", "y", [NORMANS])


def test_altered_quotes_and_missing_sources_are_never_shown_as_verbatim():
    altered = '"The Normans were the people who in the 9th and 11th centuries gave their name to Normandy" [1]'
    assert unverified_quotes(altered, [NORMANS]) == [("The Normans were the people who in the 9th and "
                                                       "11th centuries gave their name to Normandy", 1)]
    v = judge(altered, ["10th and 11th centuries"], [NORMANS])
    assert v.quotes_verbatim is False and not v.correct
    exact = '"They were descended from Norse raiders" [1]'
    assert unverified_quotes(exact, [NORMANS]) == []
    assert unverified_quotes('"They were descended from Norse raiders" [3]', [NORMANS]) != []
    assert judge('"They were descended from Norse raiders" [3]', ["Norse"], [NORMANS]).quotes_verbatim is False


def test_a_question_answered_across_two_sentences_quotes_one_and_abstains_nowhere(similarity):
    two = "Rollo was a Viking. In 911 he received land from the king."
    c = compose("extractive", "", "When did the Viking Rollo receive land?", [two], similarity)
    assert c.how == "quote" and verbatim(quotes(c.text)[0][0], two)


class _Stream:
    """A model's stream; ``logprobs``: each chunk's log-probability (an engine that gives them)."""

    def __init__(self, chunks, logprobs=None):
        self.chunks, self.stats, self.version, self.stopped = chunks, GenerationStats(), "v1", False
        self.logprobs = logprobs
        if logprobs is not None:
            self.stats.logprobs = []

    def __iter__(self):
        for c in self.chunks:
            if self.stopped:
                return
            self.stats.completion_tokens += 1
            if self.logprobs is not None:
                self.stats.logprobs.append((c, self.logprobs[len(self.stats.logprobs)]))
            yield c

    def stop(self):
        self.stopped = True
        self.stats.stopped = True


def test_composed_stream_streams_the_first_sentence_then_the_quote():
    inner = _Stream(["Normandy is ", "in France [1]", ". And ", "then ", "more ", "words."])
    got = ComposedStream(lambda said, _p: compose("quoted", said, "Where is Normandy?", [NORMANS]), inner, "v1")
    out = list(got)
    assert out[:2] == ["Normandy is", " in France [1]"]  # as the model wrote them
    assert "".join(out) == got.composed.text and got.composed.text.startswith("Normandy is in France [1].\n\n")
    assert inner.stopped and inner.stats.completion_tokens == 3  # the rest was never generated
    assert not got.stats.stopped and got.stats.finish_reason == "stop" and got.version == "v1"
    assert not got.replaced
    # A sentence the sources do not back: shown as it came, then replaced by the quote.
    wrong = ComposedStream(lambda said, _p: compose("quoted", said, "Where is Normandy?", [NORMANS]),
                           _Stream(["It is in Spain", ". More"]), "v1")
    out = list(wrong)
    assert out[0] == "It is in Spain" and out[-1].startswith(f"\n{REPLACED}\n")
    assert wrong.replaced and "Spain" not in wrong.composed.text
    stopped = ComposedStream(lambda said, _p: compose("quoted", said, "q", [NORMANS]), _Stream(["a"]), "v1")
    stopped.stop()
    assert list(stopped) == [] and stopped.stats.stopped and stopped.composed is None


def test_a_quoted_sentence_is_not_attributed_again():
    """The quote already carries its [n]: attribution adds no marker inside it."""
    from assistant.chat.citations import cite

    composed = compose("extractive", "", "From which countries did the Norse originate?", [BREAD, NORMANS])
    c = cite(composed.text, [BREAD, NORMANS], "From which countries did the Norse originate?")
    assert c.text == composed.text and c.explicit == {2} and c.attributed == set()


ABSTAINING = ["The documents", " do not", " say.", " Really"]


@pytest.mark.parametrize("logprobs, how", [
    ([-0.5, -0.5, -0.5, -9.0], "abstained"),   # e^-1.5 = 0.22: sure enough
    ([-1.5, -0.5, -0.5, -0.1], "quote"),       # e^-2.5 = 0.08: the best sentence instead
    (None, "abstained"),                        # no log-probabilities: kept, as before
])
def test_an_unsure_abstention_is_answered_with_the_best_sentence(similarity, logprobs, how):
    """The probability the model gave its first sentence (the tokens that spell it, not the
    ones after) decides whether its "The documents do not say." stands."""
    question = "From which countries did the Norse come?"
    seen = []

    def form(said, probability):
        seen.append(probability)
        return compose("quoted", said, question, [NORMANS], similarity, 0.0, probability, 0.1)

    stream = ComposedStream(form, _Stream(ABSTAINING, logprobs), "v1")
    text = "".join(stream)
    assert stream.composed.how == how
    if how == "quote":
        assert seen[0] == pytest.approx(0.0821, abs=1e-3)
        assert text.endswith('"They were descended from Norse raiders and pirates from Denmark, '
                             'Iceland and Norway." [1]') and stream.replaced
    else:
        assert text == ABSTENTION
    # A sure or unsure abstention is never kept when no sentence is similar enough.
    assert compose("quoted", "The documents do not say.", question, [NORMANS], similarity, 0.99,
                   0.01, 0.1).how == "abstained"


def test_evaluation_reports_the_abstention_trade_off(similarity):
    """``assistant eval`` forms the same model answers at each min_abstain_probability and
    reports accuracy, abstention and false abstention at each: the curve behind the
    setting, read off one set of answers (each answer composed once per outcome, the same
    as composing it at each threshold)."""
    from alignment.eval_metrics import _curve_lines
    from alignment.evaluate import ABSTAIN_CURVE, GroundedItem, ModelAnswer, abstention_curve, form, former
    from assistant.config import Settings

    items = [GroundedItem([], ("Denmark",), (NORMANS,), "From which countries did the Norse come?"),
             GroundedItem([], (), (NORMANS,), "From which countries did the Norse sail in 1500?"),
             GroundedItem([], ("Denmark",), (NORMANS,), "Where did the Norse raiders come from?")]
    answered = [ModelAnswer(ABSTENTION, 0.05), ModelAnswer(ABSTENTION, 0.3), ModelAnswer("Denmark [1].", 0.9)]
    assert all(a.abstained for a in answered[:2]) and not answered[2].abstained
    formed = former("quoted", answered, items, Settings(), similarity)
    for t in ABSTAIN_CURVE:
        assert formed(t) == [form("quoted", a, i, Settings(), similarity, t) for a, i in zip(answered, items)]
    rows = abstention_curve(formed, items)
    at = {r["min_abstain_probability"]: (r["accuracy"], r["abstention"], r["false_abstention"])
          for r in rows}
    assert at[0.0] == (0.5, 1.0, 0.5)   # every abstention kept
    assert at[0.1] == (1.0, 1.0, 0.0)   # the unsure one quotes the sentence naming Denmark
    assert at[0.5] == (1.0, 0.0, 0.0)   # none kept
    # Each side's curve stars the threshold that side answered with.
    lines = _curve_lines({"abstention_curve": {"v1": rows, "v2": rows}, "candidate": "v1", "baseline": "v2",
                          "min_abstain_probability": 0.1, "baseline_min_abstain_probability": 0.5})
    assert "0.1* 100.0%/100.0%/0.0%" in lines[1] and lines[1].startswith("      v1: 0 50.0%/100.0%/50.0%")
    assert "0.5* 100.0%/0.0%/0.0%" in lines[2] and "0.1*" not in lines[2]


def test_evaluation_reports_the_answerability_heads_trade_off(similarity):
    """With a head, the same model answers are formed with the head's verdicts: a question it
    judged not answered by its top source is answered "The documents do not say.", at every
    threshold of the head, and the report gives the head's curve (1: the head never abstains)."""
    from alignment.eval_metrics import _curve_lines
    from alignment.evaluate import HEAD_CURVE, GroundedItem, ModelAnswer, curve_rows, former
    from assistant.config import Settings

    items = [GroundedItem([], ("Denmark",), (NORMANS,), "From which countries did the Norse come?"),
             GroundedItem([], (), (NORMANS,), "From which countries did the Norse sail in 1500?")]
    answered = [ModelAnswer("Denmark [1].", 0.9), ModelAnswer("Norway [1].", 0.9)]
    formed = former("quoted", answered, items, Settings(), similarity)
    assert formed(0.2, [False, True])[1] == ABSTENTION and formed(0.2, [False, True])[0] != ABSTENTION
    assert formed(0.2)[1] != ABSTENTION  # no head: the model's answer, quoted
    probabilities = [0.35, 0.65]
    rows = curve_rows(items, lambda t: formed(0.2, [p >= t for p in probabilities]), HEAD_CURVE, "head_threshold")
    at = {r["head_threshold"]: (r["accuracy"], r["abstention"], r["false_abstention"]) for r in rows}
    assert at[0.3] == (0.0, 1.0, 1.0) and at[0.5] == (1.0, 1.0, 0.0) and at[1.0] == (1.0, 0.0, 0.0)
    lines = _curve_lines({"answerability_head": "v3", "head_threshold": 0.5, "head_abstained": 1,
                          "head_seconds_per_question": 0.125, "head_curve": {"v1": rows}})
    assert lines[0].startswith("    answerability head v3 (threshold 0.5) said the top source does not "
                               "answer 1 questions (0.12 s a question)")
    assert lines[1].startswith("      v1: 0.3 0.0%/100.0%/100.0%; 0.4") and lines[1].endswith("1 100.0%/0.0%/0.0%")
