"""Rows longer than max_length: the prompt is shortened from the left and the answers kept
whole by default, dropped on request, and counted either way (real tokenizer)."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from alignment.training.lengths import CUT, fit_rows


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    return AutoTokenizer.from_pretrained(tiny_model_dir)


def length(tokenizer, messages) -> int:
    return len(tokenizer.apply_chat_template(messages, tokenize=True, return_dict=False))


def pair(question: str, chosen: str = "Yes, here it is.", rejected: str = "No.", history: int = 0) -> dict:
    prompt = []
    for i in range(history):
        prompt += [{"role": "user", "content": f"Earlier question {i} " * 10},
                   {"role": "assistant", "content": f"Earlier answer {i} " * 10}]
    prompt.append({"role": "user", "content": question})
    return {"prompt": prompt, "chosen": [{"role": "assistant", "content": chosen}],
            "rejected": [{"role": "assistant", "content": rejected}]}


def test_short_rows_are_kept_as_they_are(tokenizer):
    rows = [pair("What is the capital of France?")]
    out, report = fit_rows(rows, tokenizer, 256)
    assert out == rows and (report.given, report.kept, report.truncated, report.dropped_too_long) == (1, 1, 0, 0)


def test_a_long_prompt_is_cut_from_the_left_and_the_answers_kept(tokenizer):
    long_answer = "This is the part the row teaches, and it stays whole. " * 3
    rows = [pair("Tell me more. " * 80 + "THE LAST WORDS", chosen=long_answer, history=3),
            pair("Short question?")]
    out, report = fit_rows(rows, tokenizer, 160)
    assert (report.given, report.used, report.truncated, report.kept) == (2, 2, 1, 1)
    fitted = out[0]
    assert fitted["chosen"] == rows[0]["chosen"] and fitted["rejected"] == rows[0]["rejected"]
    assert len(fitted["prompt"]) == 1  # the oldest turns went first
    assert fitted["prompt"][0]["content"].startswith(CUT.strip())
    assert fitted["prompt"][0]["content"].endswith("THE LAST WORDS")
    for answer in ("chosen", "rejected"):
        assert length(tokenizer, fitted["prompt"] + fitted[answer]) <= 160


def test_drop_mode_and_answers_that_cannot_fit(tokenizer):
    rows = [pair("Tell me more. " * 80), pair("Hi?", chosen="word " * 300), pair("Hi?")]
    out, report = fit_rows(rows, tokenizer, 128, drop=True)
    assert len(out) == 1 and report.dropped_too_long == 2 and report.mode == "drop"
    out, report = fit_rows(rows, tokenizer, 128)
    # the answer alone is longer than the limit: dropped even when truncating
    assert len(out) == 2 and report.truncated == 1 and report.dropped_too_long == 1


def test_kto_rows_and_no_limit(tokenizer):
    row = {"prompt": [{"role": "user", "content": "Tell me more. " * 80}],
           "completion": [{"role": "assistant", "content": "Sure."}], "label": True}
    out, report = fit_rows([row], tokenizer, 100)
    assert report.truncated == 1 and out[0]["completion"] == row["completion"] and out[0]["label"] is True
    out, report = fit_rows([row], tokenizer, None)
    assert out == [row] and report.used == 1
