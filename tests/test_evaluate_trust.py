"""`assistant eval` on real small data (tiny model, real hh-rlhf pairs, a trained reward
model): two identical versions are never "better", too few prompts say so, and a reward
model trained on another base is a clear error."""

from __future__ import annotations

import shutil

import pytest

from alignment.errors import IncompatibleVersion
from alignment.evaluate import EvalOptions, evaluate, summarize
from alignment.training import make_config, train
from assistant.bootstrap import open_registry
from assistant.gate import gate_report
from assistant.significance import UNDECIDED


def quick(kind, tmp_path):
    return make_config(kind, str(tmp_path / f"out-{kind}"), max_steps=2, per_device_train_batch_size=2,
                       gradient_accumulation_steps=1, lora_r=4, eval_rows=4, learning_rate=1e-3, max_length=96)


def copy_of(registry, version, fingerprint=None):
    """Another version with exactly the same adapter weights."""
    staging = registry.staging_dir()
    shutil.copytree(version.adapter_dir, staging / "adapter")
    return registry.register(
        staging, kind=version.kind, base_model=version.base_model,
        base_fingerprint=fingerprint or version.base_fingerprint, parent=version.parent,
        data=version.data, config=version.config, metrics={},
    )


def test_identical_versions_are_not_enough_evidence_never_better(tiny_settings, feedback_db, tmp_path):
    registry = open_registry(tiny_settings, feedback_db)
    reward = train(tiny_settings, "reward", quick("reward", tmp_path), db=feedback_db).version
    dpo = train(tiny_settings, "dpo", quick("dpo", tmp_path), db=feedback_db).version
    twin = copy_of(registry, dpo)
    registry.activate(dpo.name)

    options = EvalOptions(prompts=8, pairs=8, qa=2, max_new_tokens=8, test_fraction=0.3)
    record = evaluate(tiny_settings, twin.name, options, db=feedback_db)
    m = record.metrics
    assert record.reward_model == reward.name and record.baseline == dpo.name
    assert m["prompts"] == 8 and m["identical_answers"] == 8
    assert (m["wins"], m["ties"], m["losses"]) == (0, 8, 0)
    assert m["verdict"] == UNDECIDED and m["prompts_needed"] is None
    report = gate_report(registry, twin.name)
    assert report.verdict == UNDECIDED and not report.passes
    # The reward model's accuracy comes with both length baselines on the same pairs.
    assert m["pairs"] > 0 and {"shorter_wins", "longer_wins", "reward_accuracy_low"} <= set(m)
    assert abs(m["shorter_wins"] + m["longer_wins"] - 1) < 1e-9
    text = "\n".join(summarize(record))
    assert "not enough evidence" in text and "better" not in text.split("win rate")[1].split("\n")[0]
    assert "8 of 8 identical" in text and "shorter wins" in text
    # Judged as served: the chat's repetition penalty, said beside the figures.
    assert m["repetition_penalty"] == tiny_settings.generation.repetition_penalty > 1.0
    assert f"repetition penalty {tiny_settings.generation.repetition_penalty:g}" in text

    # Fewer prompts than the sign test needs: said, not passed.
    few = evaluate(tiny_settings, twin.name, EvalOptions(prompts=3, pairs=4, qa=0, max_new_tokens=4,
                                                         test_fraction=0.3), db=feedback_db)
    assert any("3 prompts cannot show a difference at 95%" in n for n in few.metrics["notes"])
    assert not gate_report(registry, twin.name).passes


class _Recorder:
    """A generator that records the parameters it is asked with (the test is about them)."""

    def __init__(self):
        self.params = []

    def loaded_versions(self):
        return []

    def stream(self, messages, params, version):
        from tests.fakes import FakeStream

        self.params.append((version, params))
        return FakeStream("ok", 0, 0.0, None, version)


@pytest.mark.parametrize(("option", "expected"), [(None, "chat"), (1.0, 1.0), (1.3, 1.3)])
def test_answers_are_generated_greedy_with_the_chats_repetition_penalty_unless_told(
        tiny_settings, option, expected):
    from alignment.answering import VersionAnswers, penalty_of

    penalty = penalty_of(tiny_settings, EvalOptions(repetition_penalty=option).repetition_penalty)
    want = tiny_settings.generation.repetition_penalty if expected == "chat" else expected
    assert penalty == want
    recorder = _Recorder()
    models = VersionAnswers(recorder, None, "fp", {"base"}, repetition_penalty=penalty)
    assert models.generate("base", [[{"role": "user", "content": "hi"}]] * 3, 7) == ["ok"] * 3
    assert {(v, p.temperature, p.max_new_tokens, p.repetition_penalty) for v, p in recorder.params} == {
        ("base", 0.0, 7, want)}


def test_a_reward_model_trained_on_another_base_is_a_clear_error(tiny_settings, feedback_db, tmp_path):
    registry = open_registry(tiny_settings, feedback_db)
    reward = train(tiny_settings, "reward", quick("reward", tmp_path), db=feedback_db).version
    foreign = copy_of(registry, reward, fingerprint="0" * 32)
    with pytest.raises(IncompatibleVersion, match=f"Reward model {foreign.name} was trained on another base"):
        evaluate(tiny_settings, "base", EvalOptions(baseline="base", reward=foreign.name, prompts=2, qa=0),
                 db=feedback_db)
    assert registry.evaluations() == []
