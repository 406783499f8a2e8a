"""The memory estimate of a run (alignment/memory.py): the rule against the peaks measured
on the embedded model, and what each kind of run counts."""

from __future__ import annotations

import pytest

from alignment import machine_defaults, memory
from tests.test_runs import fake_checkpoint

GiB = 2**30


@pytest.fixture
def embedded_shape(settings, tmp_path, monkeypatch):
    """Settings whose model has the embedded SmolLM2-135M's shape, trained on a CPU."""
    monkeypatch.setattr(machine_defaults, "has_gpu", lambda: False)
    model = fake_checkpoint(tmp_path / "model", 134_515_008)
    return settings.model_copy(update={"model": str(model)})


@pytest.mark.parametrize(("max_length", "measured_gib"), [(256, 3.43), (512, 5.82), (1024, 9.95)])
def test_the_rule_covers_the_measured_peaks_of_sft_runs(embedded_shape, max_length, measured_gib):
    # Peak RSS (/usr/bin/time -v) of SFT runs of the embedded model, batch 4, bf16 compute on
    # an AMD EPYC (Zen 4): the estimate is at or a little over each, never under.
    estimate = memory.run_estimate(embedded_shape, "sft", {"per_device_train_batch_size": 4,
                                                           "max_length": max_length})
    assert estimate.tokens == 4 * max_length
    assert measured_gib * GiB <= estimate.need <= measured_gib * 1.15 * GiB


def test_a_grounded_run_counts_its_growth(embedded_shape):
    # The same host: `bench/grounded.py --quote --no-dpo --sft-steps 40` (batch 4, rows of
    # 600-1,024 tokens) peaked at 9.9 GiB at its first step and 15.7 GiB by its 40th.
    sizes = {"per_device_train_batch_size": 4, "max_length": 1024}
    grounded = memory.run_estimate(embedded_shape, "sft", sizes, varied=True)
    first_step = memory.run_estimate(embedded_shape, "sft", sizes)
    assert 15.7 * GiB <= grounded.need <= 15.7 * 1.15 * GiB
    assert grounded.need - grounded.fixed == int((first_step.need - first_step.fixed) * memory.VARIED_GROWTH)
    assert "tokens x1.7, the growth of a long run of rows of varied lengths" in grounded.parts()
    assert grounded.batch_that_fits(12 * GiB) == 2 < first_step.batch_that_fits(12 * GiB)


def test_what_each_kind_counts(embedded_shape):
    def estimate(kind, **sizes):
        return memory.run_estimate(embedded_shape, kind, {"max_length": 256, **sizes})

    sft, dpo, orpo = estimate("sft"), estimate("dpo"), estimate("orpo")
    assert dpo.tokens == orpo.tokens == 2 * sft.tokens  # chosen and rejected, both with gradients
    # TRL's fused LM head: no (rows, length, vocabulary) logits, but ORPO builds them.
    assert dpo.per_token == sft.per_token == estimate("reward").per_token
    assert orpo.per_token == sft.per_token + 4 * memory.LOGIT_COPIES * 49_152
    assert estimate("sft", per_device_train_batch_size=1).need < sft.need
    rl = memory.run_estimate(embedded_shape, "rl", {"max_completion_length": 32})
    assert rl.tokens == 4 * (32 + memory.PROMPT_TOKENS) and rl.fixed > sft.fixed  # and its judge
    evaluation = memory.run_estimate(embedded_shape, "eval")
    assert evaluation.tokens == 0 and evaluation.need == evaluation.fixed


def test_the_batch_that_fits(embedded_shape, monkeypatch):
    grounded = memory.run_estimate(embedded_shape, "sft", {"per_device_train_batch_size": 4,
                                                           "max_length": 1024,
                                                           "gradient_accumulation_steps": 2})
    assert grounded.batch_that_fits(grounded.need) == 4
    assert grounded.batch_that_fits(grounded.need - 1) == 3
    assert grounded.batch_that_fits(grounded.fixed) == 0
    assert grounded.advice(grounded.need) == ""
    assert "`--batch-size 2 --grad-accum 4`" in grounded.advice(int(grounded.fixed + grounded.need) // 2)
    assert grounded.advice(grounded.fixed) == ""  # no batch fits: nothing to offer
    # With a GPU the batch is in its memory: only the model's part is counted here.
    monkeypatch.setattr(machine_defaults, "has_gpu", lambda: True)
    on_gpu = memory.run_estimate(embedded_shape, "sft", {"max_length": 1024})
    assert on_gpu.need == grounded.fixed


def test_no_local_checkpoint_no_estimate(settings, tmp_path):
    assert memory.run_estimate(settings.model_copy(update={"model": "org/some-hub-model"}), "sft") is None
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "model.safetensors").write_bytes(b"\xff" * 16)
    assert memory.run_estimate(settings.model_copy(update={"model": str(broken)}), "sft") is None
