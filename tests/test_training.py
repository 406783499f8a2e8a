"""Each trainer, a few steps on the tiny model (real tokenizer, real hh-rlhf pairs, TRL 1.16,
fp32 on CPU): the loss is logged, the adapter changed, the base did not, and the version is
registered with its lineage, data and config. Then the ways a run must fail cleanly."""

from __future__ import annotations

import hashlib
import json
import math

import pytest
import torch
from safetensors.torch import load_file
from transformers import TrainerCallback

from alignment.errors import (
    IncompatibleVersion, NoTrainingData, NotEnoughTrainingData, RewardModelMissing,
    TrainingOutOfMemory,
)
from alignment.training import make_config, train
from alignment.training_kinds import KINDS
from assistant.cpu import bf16_fast
from assistant.bootstrap import open_database, open_registry
from assistant.registry import STAGING_PREFIX, VersionNotFound


def quick(kind, tmp_path, **overrides):
    values = dict(max_steps=2, per_device_train_batch_size=2, gradient_accumulation_steps=1, lora_r=4,
                  eval_rows=4, learning_rate=1e-3)
    if KINDS[kind].online:
        values.update(num_generations=2, max_completion_length=8, per_device_train_batch_size=2)
    else:
        values["max_length"] = 96
    values.update(overrides)
    return make_config(kind, str(tmp_path / f"out-{kind}"), **values)


def base_weights(model_dir) -> dict[str, torch.Tensor]:
    return load_file(str(model_dir / "model.safetensors"))


def assert_base_untouched(trainer, model_dir) -> None:
    """Every base weight the trained model holds equals the checkpoint's on disk."""
    expected = base_weights(model_dir)
    base = trainer.model.get_base_model()
    compared = 0
    for name, param in base.named_parameters():
        if "lora_" in name or "modules_to_save" in name or name.startswith("score"):
            continue
        key = name.replace(".base_layer", "").replace("original_module.", "")
        if key in expected:
            assert torch.equal(param.detach().cpu(), expected[key]), f"{name} changed"
            compared += 1
    assert compared >= 10


def adapter_tensors(version) -> dict[str, torch.Tensor]:
    return load_file(str(version.adapter_dir / "adapter_model.safetensors"))


def assert_registered(result, kind, parent, settings):
    v = result.version
    assert v.kind == kind and v.parent == parent
    losses = [h["loss"] for h in result.log_history if "loss" in h]
    assert len(losses) == 2 and all(math.isfinite(x) for x in losses)
    assert v.metrics["final_loss"] == losses[-1]
    assert (v.adapter_dir / "adapter_config.json").is_file()
    assert not (v.adapter_dir / "ref").exists()  # TRL's frozen reference is not part of it
    assert v.curve.is_file() and v.curve.stat().st_size > 1000
    # The exact data: the files in the version folder hash to the recorded digest.
    digest = hashlib.sha256()
    for name in ("train.jsonl", "test.jsonl"):
        digest.update((v.path / "data" / name).read_bytes())
    assert digest.hexdigest() == v.data["sha256"]
    rows = (v.path / "data" / "train.jsonl").read_text().splitlines()
    assert len(rows) == v.data["train_rows"] > 0
    # fp32 weights; bf16 compute where this CPU has it natively (AMX, AVX512_BF16)
    assert v.config["bf16"] is bf16_fast() and v.config["use_cpu"] is True
    assert v.config["max_steps"] == 2 and v.config["lora_r"] == 4
    # Registered: listed, and nothing left in staging.
    registry = open_registry(settings, open_database(settings))
    assert v.name in [x.name for x in registry.list()]
    assert registry.stray_folders() == []
    return v


OFFLINE = [k.name for k in KINDS.values() if not k.online]


@pytest.mark.parametrize("kind", OFFLINE)
def test_each_trainer_trains_an_adapter_and_registers_it(kind, tiny_settings, feedback_db, tiny_model_dir, tmp_path):
    result = train(tiny_settings, kind, quick(kind, tmp_path), db=feedback_db)
    v = assert_registered(result, kind, "base", tiny_settings)
    assert_base_untouched(result.trainer, tiny_model_dir)
    lora_b = [t for k, t in adapter_tensors(v).items() if "lora_B" in k]
    assert lora_b and any(t.abs().sum() > 0 for t in lora_b), "LoRA B starts at zero: it must have moved"
    if kind == "reward":
        assert 0.0 <= v.metrics["heldout_accuracy"] <= 1.0
        assert any("score" in k for k in adapter_tensors(v)), "the scalar head is saved with the adapter"
    # The chat is untouched by training: activation is a separate, gated step.
    assert open_registry(tiny_settings, feedback_db).active() == "base"


def test_dpo_continues_the_active_version(tiny_settings, feedback_db, tiny_model_dir, tmp_path):
    registry = open_registry(tiny_settings, feedback_db)
    sft = train(tiny_settings, "sft", quick("sft", tmp_path), db=feedback_db).version
    registry.activate(sft.name)
    dpo = train(tiny_settings, "dpo", quick("dpo", tmp_path), db=feedback_db)
    v = assert_registered(dpo, "dpo", sft.name, tiny_settings)
    assert registry.lineage(v.name) == [v.name, sft.name, "base"]
    assert_base_untouched(dpo.trainer, tiny_model_dir)
    before, after = adapter_tensors(sft), adapter_tensors(v)
    assert before.keys() == after.keys()
    assert any(not torch.equal(before[k], after[k]) for k in before), "DPO must move the parent's adapter"


@pytest.mark.parametrize("algo", ["grpo", "rloo"])
def test_online_rl_against_the_reward_model(algo, tiny_settings, feedback_db, tmp_path):
    reward = train(tiny_settings, "reward", quick("reward", tmp_path), db=feedback_db).version
    config = make_config("rl", str(tmp_path / "rl"), algo=algo, max_steps=2, lora_r=4,
                         num_generations=2, max_completion_length=8, per_device_train_batch_size=2,
                         learning_rate=1e-3)
    result = train(tiny_settings, "rl", config, algo=algo, db=feedback_db)
    v = result.version
    assert v.kind == "rl" and v.parent == "base"
    assert v.config["reward_version"] == reward.name and v.config["algo"] == algo
    assert v.config["trl_config"] == {"grpo": "GRPOConfig", "rloo": "RLOOConfig"}[algo]
    assert "final_reward" in v.metrics and math.isfinite(v.metrics["final_reward"])
    rows = [json.loads(x) for x in (v.path / "data" / "train.jsonl").read_text().splitlines()]
    assert rows and set(rows[0]) == {"prompt"}  # online RL samples its own answers


# -- failures: a clear message, nothing registered, the active version untouched ---------------
def _nothing_left(settings, db) -> None:
    registry = open_registry(settings, db)
    assert registry.list() == [] or all(v.path.is_dir() for v in registry.list())
    assert not any(p.name.startswith(STAGING_PREFIX) for p in settings.versions_dir.glob("*"))


@pytest.mark.parametrize("kind", list(KINDS))
def test_checkpointing_off_unless_asked_and_the_step_bar_on_without_deprecation_warnings(kind, tmp_path):
    import warnings

    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # as the CLI quiets the libraries (assistant.cli_quiet)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", FutureWarning)  # "gradient_checkpointing is deprecated"
            off = make_config(kind, str(tmp_path / "off"))
            on = make_config(kind, str(tmp_path / "on"), gradient_checkpointing=True)
            unset = make_config(kind, str(tmp_path / "unset"), gradient_checkpointing=None)
    finally:
        hf_logging.set_verbosity(level)
    assert (off.activation_checkpointing, off.gradient_checkpointing) == (False, False)  # TRL's default is on
    assert (on.activation_checkpointing, on.gradient_checkpointing) == (True, True)
    assert unset.activation_checkpointing is False
    assert off.disable_tqdm is False  # transformers hides the step bar when its logging is quiet


def test_no_feedback_at_all(tiny_settings, tmp_path):
    db = open_database(tiny_settings)
    with pytest.raises(NoTrainingData, match="No preference data in the database"):
        train(tiny_settings, "dpo", quick("dpo", tmp_path), db=db)
    _nothing_left(tiny_settings, db)


def test_too_little_data_says_how_much_is_needed(tiny_settings, feedback_db, tmp_path):
    with pytest.raises(NotEnoughTrainingData) as err:
        train(tiny_settings, "dpo", quick("dpo", tmp_path, limit=3), db=feedback_db)
    assert "at least 8 preference pairs" in str(err.value) and "has 3" in str(err.value)
    assert "active version is unchanged" in str(err.value)
    _nothing_left(tiny_settings, feedback_db)


def test_rl_without_a_reward_model(tiny_settings, feedback_db, tmp_path):
    with pytest.raises(RewardModelMissing, match="assistant train reward"):
        train(tiny_settings, "rl", quick("rl", tmp_path), db=feedback_db)
    _nothing_left(tiny_settings, feedback_db)


def test_unknown_or_unsuitable_parent(tiny_settings, feedback_db, tmp_path):
    with pytest.raises(VersionNotFound, match="no model version 'v99'"):
        train(tiny_settings, "dpo", quick("dpo", tmp_path, parent="v99"), db=feedback_db)
    reward = train(tiny_settings, "reward", quick("reward", tmp_path), db=feedback_db).version
    with pytest.raises(IncompatibleVersion, match="is a reward model"):
        train(tiny_settings, "dpo", quick("dpo", tmp_path, parent=reward.name), db=feedback_db)
    with pytest.raises(RewardModelMissing, match="not a reward model"):
        train(tiny_settings, "rl", quick("rl", tmp_path, reward_version="base"), db=feedback_db)


def test_parent_trained_on_another_base_model(tiny_settings, feedback_db, tmp_path):
    from sqlalchemy import update

    from assistant.storage.schema import ModelVersion

    sft = train(tiny_settings, "sft", quick("sft", tmp_path), db=feedback_db).version
    with feedback_db.write() as s:  # as if it had been trained on another checkpoint
        s.execute(update(ModelVersion).where(ModelVersion.name == sft.name)
                  .values(base_fingerprint="0" * 32, base_model="other/model"))
    with pytest.raises(IncompatibleVersion, match="trained on another base model \\(other/model\\)"):
        train(tiny_settings, "dpo", quick("dpo", tmp_path, parent=sft.name), db=feedback_db)
    _nothing_left(tiny_settings, feedback_db)


class _OutOfMemory(TrainerCallback):
    """Fails like the CUDA allocator does, on the second step."""

    def on_step_begin(self, args, state, control, **kwargs):
        if state.global_step == 1:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")


def test_out_of_memory_is_a_message_and_registers_nothing(tiny_settings, feedback_db, tmp_path):
    registry = open_registry(tiny_settings, feedback_db)
    sft = train(tiny_settings, "sft", quick("sft", tmp_path), db=feedback_db).version
    registry.activate(sft.name)
    with pytest.raises(TrainingOutOfMemory) as err:
        train(tiny_settings, "dpo", quick("dpo", tmp_path), db=feedback_db, callbacks=[_OutOfMemory()])
    assert "ran out of memory on cpu (batch size 2" in str(err.value)
    assert "--batch-size" in str(err.value) and "active version is unchanged" in str(err.value)
    assert [v.name for v in registry.list()] == [sft.name]
    assert registry.active() == sft.name
    _nothing_left(tiny_settings, feedback_db)


def test_kto_needs_both_thumbs(tiny_settings, tmp_path):
    from assistant.storage import ConversationStore
    from assistant.storage.conversations import AnswerRecord

    db = open_database(tiny_settings)
    store = ConversationStore(db)
    rec = AnswerRecord("m", "base", {}, 1, 1, 1.0, 1.0)
    for i in range(10):
        q = store.add_user_message(None, f"Question {i}?")
        a = store.add_assistant_message(q.conversation_id, f"Answer {i}.", rec, reply_to_id=q.id)
        store.rate(a.id, 1)
    with pytest.raises(NotEnoughTrainingData, match="none 👎"):
        train(tiny_settings, "kto", quick("kto", tmp_path, test_fraction=0.0), db=db)


def test_sft_learns_the_answer_only(tiny_model_dir, tmp_path):
    """An SFT row is the chat's messages; the loss must be on the assistant's answer, not on
    the system prompt, the question and its sources (TRL trains on every token of a
    ``messages`` row)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from alignment.training.trainers import build_trainer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    sources = "Sources:\n\n[1] notes.txt\n<source>\n" + "The bakery opens at seven. " * 20 + "</source>\n\n"
    rows = [{"messages": [{"role": "system", "content": "Cite your sources."},
                          {"role": "user", "content": sources + f"When does it open? ({i})"},
                          {"role": "assistant", "content": "At seven [1]."}]} for i in range(2)]
    config = quick("sft", tmp_path, max_length=512, eval_rows=0,
                   train_sampling_strategy="sequential")
    trainer = build_trainer("sft", "grpo", model, config, rows, [], tokenizer)
    answer = len(tokenizer("At seven [1].<|im_end|>", add_special_tokens=False)["input_ids"])
    for row in trainer.train_dataset:
        trained = sum(label != -100 for label in row["labels"])
        assert len(row["input_ids"]) > 100 and answer <= trained <= answer + 2, (trained, answer)


def test_the_fused_head_scores_only_labelled_positions_on_a_cpu(tiny_model_dir, monkeypatch):
    """TRL's fused LM head projects every position on a CPU (it drops the masked ones only
    with Triton); inside ``labelled_positions_only`` it projects the labelled ones, with the
    same log-probabilities, loss and gradients."""
    from transformers import AutoModelForCausalLM
    from trl.kernels import ChunkedLogProbFunction
    from trl.trainer.utils import add_fused_lm_head

    from alignment.training.lm_head import labelled_positions_only

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    add_fused_lm_head(model, outputs=("log_probs", "entropy"))
    ids = torch.randint(0, model.config.vocab_size, (2, 40))
    labels = ids.clone()
    labels[:, :34] = -100  # a long prompt, a 6-token answer
    labels[1, 30:34] = ids[1, 30:34]  # rows differ in how many positions they train
    scored = []
    original = ChunkedLogProbFunction.apply

    def spy(hidden, *args):
        scored.append(hidden.shape[0])
        return original(hidden, *args)

    def run():
        model.zero_grad()
        out = model(input_ids=ids, labels=labels, fused_lm_head=True)
        out.loss.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        return out, grads

    monkeypatch.setattr(ChunkedLogProbFunction, "apply", spy)
    every, every_grads = run()
    with labelled_positions_only() as compact:
        only, only_grads = run()
    run()  # the switch is undone on the way out
    labelled = int((labels[:, 1:] != -100).sum())
    assert compact and scored == [2 * 39, labelled, 2 * 39] and labelled == 6 + 10
    torch.testing.assert_close(only.loss, every.loss)
    torch.testing.assert_close(only.log_probs, every.log_probs)
    torch.testing.assert_close(only.entropy, every.entropy)
    assert only_grads.keys() == every_grads.keys() and every_grads
    for name, grad in every_grads.items():
        torch.testing.assert_close(only_grads[name], grad, msg=name)
