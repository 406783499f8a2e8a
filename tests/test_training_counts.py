"""Counts are the rows used: a run reports rows given, used, shortened, dropped (and why) and
seen, in the registry with the version; over-long rows have their prompt shortened unless
asked to drop them; a split emptied by the length limit is refused naming the limit.
(Tiny model, real tokenizer, real hh-rlhf pairs, TRL 1.16.)"""

from __future__ import annotations

import json

import pytest

from alignment.errors import RowsTooLong
from alignment.training import make_config, train
from alignment.training.data import describe_counts


def quick(kind, tmp_path, **overrides):
    values = dict(max_steps=2, per_device_train_batch_size=2, gradient_accumulation_steps=1, lora_r=4, eval_rows=8,
                  learning_rate=1e-3,
                  max_length=96)
    values.update(overrides)
    return make_config(kind, str(tmp_path / f"out-{kind}"), **values)


@pytest.mark.parametrize("kind", ["reward", "dpo"])
def test_rows_given_used_and_seen_are_recorded(kind, tiny_settings, feedback_db, tmp_path):
    # DPO: enough held-out rows, in batches of 2, for the 2+ batches a margin interval needs.
    extra = {"per_device_eval_batch_size": 2, "test_fraction": 0.3} if kind == "dpo" else {}
    result = train(tiny_settings, kind, quick(kind, tmp_path, **extra), db=feedback_db)
    v = result.version
    rows = v.data["rows"]
    assert rows == v.metrics["rows"]
    # Nothing is lost without a word: given = used + dropped, on both splits.
    assert rows["train_given"] == rows["train_used"] + rows["train_dropped_too_long"]
    assert rows["heldout_given"] == rows["heldout_used"] + rows["heldout_dropped_too_long"]
    assert rows["train_truncated"] > 0  # some hh-rlhf pairs are longer than 96 tokens
    # The trainer used exactly the rows written to the version's folder.
    written = (v.path / "data" / "train.jsonl").read_text().splitlines()
    assert len(written) == rows["train_used"] == v.data["train_rows"] == len(result.trainer.train_dataset)
    assert rows["heldout_used"] == len(result.trainer.eval_dataset) == v.data["test_rows"]
    # 2 steps of 2 rows saw 4 rows, however many were given.
    assert rows["train_seen"] == 4 and rows["long_rows"] == "prompt shortened"
    tok = result.trainer.processing_class
    for row in map(json.loads, written):  # every row the trainer saw fits, answers whole
        for answer in ("chosen", "rejected"):
            ids = tok.apply_chat_template(row["prompt"] + row[answer], tokenize=True, return_dict=False)
            assert len(ids) <= 96
    if kind == "reward":
        m = v.metrics
        assert m["heldout_rows"] == rows["heldout_used"]
        assert m["heldout_accuracy_low"] <= m["heldout_accuracy"] <= m["heldout_accuracy_high"]
    else:  # DPO's held-out margin comes with an interval over the evaluation's batches
        m = v.metrics
        assert m["heldout_margin_batches"] == -(-rows["heldout_used"] // 2) >= 2
        assert m["heldout_margin_low"] <= m["heldout_margin"] <= m["heldout_margin_high"]
        assert m["heldout_margin_low"] < m["heldout_margin_high"]  # batches differ
        if rows["heldout_used"] % 2 == 0:  # equal batches: TRL's mean of batch means
            assert m["heldout_margin"] == pytest.approx(m["eval_rewards/margins"], abs=1e-6)
    lines = describe_counts(rows)
    assert lines[0].startswith(f"training rows: {rows['train_given']} given, {rows['train_used']} used")
    assert "4 seen" in lines[0] and "over 96 tokens" in lines[0]


def test_drop_long_drops_and_says_so(tiny_settings, feedback_db, tmp_path):
    v = train(tiny_settings, "reward", quick("reward", tmp_path, drop_long=True), db=feedback_db).version
    rows = v.data["rows"]
    assert rows["train_truncated"] == 0 and rows["train_dropped_too_long"] > 0
    assert rows["train_used"] == rows["train_given"] - rows["train_dropped_too_long"]
    assert rows["long_rows"] == "dropped"


def test_a_heldout_split_emptied_by_the_length_limit_names_the_limit(tiny_settings, feedback_db, tmp_path):
    config = quick("reward", tmp_path, drop_long=True, max_length=40, min_rows=1)
    with pytest.raises(RowsTooLong, match=r"--max-length 40 tokens leaves 0 of the \d+ held-out rows"):
        train(tiny_settings, "reward", config, db=feedback_db)
    config = quick("dpo", tmp_path, drop_long=True, max_length=40, eval_rows=0)
    with pytest.raises(RowsTooLong, match=r"--max-length 40 tokens leaves \d+ of the \d+ training rows"):
        train(tiny_settings, "dpo", config, db=feedback_db)
