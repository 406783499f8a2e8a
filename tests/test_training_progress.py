"""A run's phases, its estimate and its sizes (tiny model, real TRL): every phase reported in
order, the estimate told after the first step and before the second, the held-out rows
asked for, length-grouped batches, and the CPU's defaults when there is no GPU."""

from __future__ import annotations

import json

from transformers import TrainerCallback
from transformers.trainer_pt_utils import LengthGroupedSampler

from alignment import machine_defaults
from alignment.run_estimate import Estimate, from_first_step, mean_batch_width, smaller_setting
from alignment.training import make_config, train
from alignment.training.progress import PHASES
from alignment.training.trainers import grouped_order, row_lengths


class _Snapshot(TrainerCallback):
    """What had been told when the second step began, and the sampler the trainer used."""

    def __init__(self, lines: list[str]) -> None:
        self.lines, self.before_second = lines, None

    def on_step_begin(self, args, state, control, **kwargs):
        if state.global_step == 1:
            self.before_second = list(self.lines)


def test_phases_in_order_estimate_first_and_held_out_rows(tiny_settings, feedback_db, tmp_path):
    lines: list[str] = []
    snapshot = _Snapshot(lines)
    config = make_config("dpo", str(tmp_path / "out"), max_steps=2, per_device_train_batch_size=2,
                         gradient_accumulation_steps=1, lora_r=4, eval_rows=3, max_length=96,
                         test_fraction=0.3)
    progress = tmp_path / "progress.json"
    result = train(tiny_settings, "dpo", config, db=feedback_db, progress=progress,
                   echo=lines.append, callbacks=[snapshot])

    # The terminal's phase lines, in order, and the estimate before the second step ran.
    heads = [line for line in lines if line.startswith("[")]
    assert [h.split("] ")[1].split(":")[0] for h in heads] == [
        "Loading the data and the model", "Training", "Evaluating on the held-out rows",
        "Saving and registering the version"]
    assert heads[0].startswith("[1/4]") and heads[3].startswith("[4/4]")
    assert any(line.startswith("Estimate from the first step") for line in snapshot.before_second)
    assert not any(line.startswith("[3/4]") for line in snapshot.before_second)
    assert "3 held-out rows" in heads[2]

    # progress.json (what the Models page reads): every phase with its seconds, the estimate.
    p = json.loads(progress.read_text())
    assert list(p["phases"]) == list(PHASES) and p["phase"] == "done"
    assert all(isinstance(x["seconds"], float) for x in p["phases"].values())
    assert p["estimate"]["steps"] == 2 and p["estimate"]["eval_rows"] == 3
    assert p["step"] == p["max_steps"] == 2

    m = result.version.metrics
    assert m["rows"]["heldout_used"] == 3
    assert list(m["phase_seconds"]) == list(PHASES[:-1]) + ["saving"]
    assert m["total_seconds"] >= m["train_seconds"] > 0
    assert m["trained_tokens"] > 0 and 0 <= m["padding_share"] < 1
    assert m["train_seconds_per_row"] > 0 and m["eval_seconds_per_row"] > 0

    # Length grouping: the sampler groups by each row's tokens as the model sees them.
    trainer = result.trainer
    assert trainer.args.train_sampling_strategy == "group_by_length"
    sampler = trainer._get_train_sampler(trainer.train_dataset)
    assert isinstance(sampler, LengthGroupedSampler)
    assert sampler.lengths == row_lengths(trainer.train_dataset) == trainer.train_dataset["length"]
    first = trainer.train_dataset[0]
    assert first["length"] == len(first["prompt_ids"]) + max(len(first["chosen_ids"]), len(first["rejected_ids"]))


def test_cpu_defaults_without_a_gpu(tmp_path, monkeypatch):
    monkeypatch.setattr(machine_defaults, "has_gpu", lambda: False)
    for kind in ("reward", "sft", "dpo", "kto"):
        c = make_config(kind, str(tmp_path))
        assert (c.max_length, c.per_device_train_batch_size, c.gradient_accumulation_steps, c.eval_rows) == (
            256, 4, 2, 48), kind
        assert c.train_sampling_strategy == ("sequential" if kind == "kto" else "group_by_length")
    # LoRA learning rates, not TRL's full fine-tuning ones (SFT 2e-5, DPO 1e-6).
    assert {k: make_config(k, str(tmp_path)).learning_rate for k in ("sft", "dpo", "kto")} == {
        "sft": 2e-4, "dpo": 5e-5, "kto": 5e-5}
    rl = make_config("rl", str(tmp_path))
    assert rl.max_completion_length == 32
    assert make_config("dpo", str(tmp_path), max_length=512, eval_rows=7).eval_rows == 7  # options win
    monkeypatch.setattr(machine_defaults, "has_gpu", lambda: True)
    assert machine_defaults.size_defaults() == machine_defaults.GPU_DEFAULTS
    assert machine_defaults.GPU_DEFAULTS["max_length"] == 512 and machine_defaults.GPU_DEFAULTS["eval_rows"] == 200


def test_the_estimate_scales_the_first_step_and_offers_a_smaller_setting():
    lengths = [40] * 90 + [400] * 10
    # Grouped, the first (longest) batch is 400 wide; the average batch much narrower.
    assert mean_batch_width(lengths, 4, grouped=True) < mean_batch_width(lengths, 4, grouped=False)
    e = from_first_step(first_step_s=10.0, first_width=400, steps=25, rows_per_step=4, lengths=lengths,
                        batch=4, grouped=True, eval_rows=8)
    assert e.train_s < 25 * 10.0 and e.eval_s > 0
    long = Estimate(first_step_s=60, steps=130, rows_per_step=8, train_s=130 * 60, eval_rows=48, eval_s=300)
    assert smaller_setting(long, max_length=512, rows=1000) == {"steps": 30, "limit": 240, "max_length": 256}
    assert smaller_setting(long, max_length=256) == {"steps": 30}
    short = Estimate(first_step_s=6, steps=100, rows_per_step=8, train_s=600, eval_rows=48, eval_s=60)
    assert smaller_setting(short, max_length=512) == {}


def test_kto_rows_are_put_in_a_length_grouped_order():
    # KTO samples in order (its KL term pairs neighbours): the order itself is grouped.
    lengths = [(i * 37) % 101 for i in range(400)]
    order = grouped_order(lengths, batch=4, seed=0, groups_of=25)
    assert sorted(order) == list(range(400)) and order != sorted(order)
    for start in range(0, 400, 100):  # within each group of 25 batches: longest first
        group = [lengths[i] for i in order[start:start + 100]]
        assert group == sorted(group, reverse=True)
    batches = [order[i:i + 4] for i in range(0, 400, 4)]
    grouped_pad = sum(4 * max(lengths[i] for i in b) - sum(lengths[i] for i in b) for b in batches)
    plain = [list(range(i, i + 4)) for i in range(0, 400, 4)]
    plain_pad = sum(4 * max(lengths[i] for i in b) - sum(lengths[i] for i in b) for b in plain)
    assert grouped_pad < plain_pad / 5
