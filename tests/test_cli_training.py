"""`assistant train | eval | models` end to end on the tiny model, and a training run in a
background process as the Models page starts it."""

from __future__ import annotations

import time

import pytest
from click.testing import CliRunner

from alignment import runs
from assistant.bootstrap import open_registry
from assistant.cli import main

QUICK = ["--steps", "2", "--lora-r", "4", "--max-length", "96", "--batch-size", "2", "--grad-accum", "1",
         "--lr", "1e-3"]
QUICK_RL = ["--steps", "2", "--lora-r", "4", "--max-completion-length", "8", "--batch-size", "2",
            "--num-generations", "2"]


def cli(*args: str, ok: bool = True):
    result = CliRunner().invoke(main, list(args))
    if ok:
        assert result.exit_code == 0, result.output + repr(result.exception)
    return result


def test_the_cpu_preset_fills_only_what_is_not_given():
    from alignment.training_kinds import KINDS

    got = KINDS["dpo"].with_preset("cpu", {"max_steps": 10, "learning_rate": None, "beta": 0.2})
    assert got == {**KINDS["dpo"].presets["cpu"], "max_steps": 10, "beta": 0.2}
    assert got["learning_rate"] == 5e-4 and got["max_length"] == 256
    with pytest.raises(KeyError):
        KINDS["reward"].with_preset("cpu", {})


def test_train_eval_activate_rollback(tiny_settings, feedback_db):
    out = cli("train", "sft", *QUICK, "--eval-rows", "1").output
    assert "Registered v1: sft from base, 2 steps" in out and "curve: " in out
    # Each phase in order, the estimate once the first step has run, both times at the end.
    order = ["[1/4] Loading the data and the model", "[2/4] Training: 2 steps of 2 rows",
             "Estimate from the first step", "[3/4] Evaluating on the held-out rows: 1 held-out row ",
             "[4/4] Saving and registering the version", "Registered v1", "held-out rows: 1 given",
             "training time ", "total time "]
    assert all(x in out for x in order), out
    assert [out.index(x) for x in order] == sorted(out.index(x) for x in order), out
    out = cli("train", "dpo", *QUICK, "--set", "beta=0.3", "--preset", "cpu").output
    assert "Registered v2: dpo from base" in out
    # The options given win over the preset's.
    assert "Preset cpu: learning_rate=0.001, max_steps=2, max_length=96," in out, out
    registry = open_registry(tiny_settings, feedback_db)
    assert registry.get("v2").config["beta"] == 0.3
    assert registry.get("v2").config["learning_rate"] == 1e-3

    listing = cli("models", "list").output.splitlines()
    assert listing[1].startswith("* base") and any(line.startswith("  v2") for line in listing)

    refused = cli("models", "activate", "v2", ok=False)
    assert refused.exit_code == 1 and "has not been evaluated" in refused.output
    assert registry.active() == "base"

    out = cli("eval", "v2", "--prompts", "2", "--qa", "2", "--max-new-tokens", "4").output
    assert "v2 against base" in out and "QA accuracy" in out and "no reward model" in out
    # Without a reward model nothing judged the answers: no "judges", no "passes".
    assert "win rate not measured" in out and "judges" not in out and "passes" not in out, out
    assert "gate could not check: the win rate" in out and "gate checked: QA accuracy" in out
    refused = cli("models", "activate", "v2", ok=False)
    assert "win rate against base was not measured" in refused.output
    out = cli("models", "activate", "v2", "--force").output
    assert "The chat now uses v2 (was base) despite the eval gate (--force)" in out
    assert registry.active() == "v2"

    show = cli("models", "show", "v2").output
    assert "lineage:  v2 <- base" in show and "[active]" in show and "beta=0.3" in show
    assert "sha256" in show and "eval " in show

    assert "now uses base (was v2)" in cli("models", "rollback").output
    assert registry.active() == "base"


@pytest.mark.parametrize("args, message", [
    (["train", "rl", *QUICK_RL], "Online RL needs a trained reward model"),
    (["train", "rl", *QUICK], "use --max-completion-length"),
    (["train", "dpo", *QUICK, "--parent", "v42"], "no model version 'v42'"),
    (["train", "dpo", *QUICK, "--limit", "2"], "needs at least 8 preference pairs"),
    (["train", "dpo", *QUICK, "--set", "no_such_field=1"],
     "Unknown training option 'no_such_field': not a field of TRL's DPOConfig"),
    (["train", "dpo", *QUICK, "--set", "beta"], "FIELD=VALUE"),
    (["models", "activate", "v9"], "no model version 'v9'"),
    (["models", "rollback"], "Nothing to roll back"),
    (["eval", "v3"], "no model version 'v3'"),
])
def test_errors_are_one_line(args, message, tiny_settings, feedback_db):
    result = cli(*args, ok=False)
    assert result.exit_code != 0
    assert message in result.output, result.output
    assert "Traceback" not in result.output
    assert open_registry(tiny_settings, feedback_db).list() == []


def test_background_run_trains_while_this_process_goes_on(tiny_settings, feedback_db):
    run = runs.start(tiny_settings, ["train", "sft", *QUICK], "sft")
    assert run.status == "running"
    deadline = time.time() + 240
    while (run := runs.load(run.path)).status == "running" and time.time() < deadline:
        time.sleep(0.5)
    assert run.status == "done", run.log_tail(40)
    assert run.version == "v1" and run.progress["step"] == run.progress["max_steps"] == 2
    assert run.fraction == 1.0
    assert "Registered v1" in run.log_tail()
    assert open_registry(tiny_settings, feedback_db).get("v1").kind == "sft"
    assert [r.id for r in runs.list_runs(tiny_settings)] == [run.id]


def test_a_cancelled_background_run_registers_nothing(tiny_settings, feedback_db):
    run = runs.start(tiny_settings, ["train", "dpo", *QUICK[:-2], "--steps", "500"], "dpo")
    deadline = time.time() + 120
    while not runs.load(run.path).progress.get("step") and time.time() < deadline:
        time.sleep(0.3)  # until it trains
    runs.cancel(runs.load(run.path))
    run = runs.load(run.path)
    assert run.status == "cancelled", run.log_tail(40)
    registry = open_registry(tiny_settings, feedback_db)
    assert registry.list() == [] and registry.stray_folders() == []


def test_a_kind_added_to_the_table_trains_from_its_generated_command(tiny_settings, feedback_db):
    """ORPO is one entry in alignment.training_kinds: its command trains and registers it."""
    out = cli("train", "orpo", *QUICK, "--eval-rows", "2").output
    assert "Registered v1: orpo from base, 2 steps" in out
    assert "Next: `assistant eval v1`" in out
    assert open_registry(tiny_settings, feedback_db).get("v1").config["trl_config"] == "ORPOConfig"


def test_a_run_too_big_for_the_free_memory_is_warned_with_the_batch_that_fits(tiny_settings, feedback_db,
                                                                              monkeypatch):
    """Before the model loads: the estimate against the free memory, and the batch size that
    fits (the kernel would kill the run part-way: a grounded run at batch 4 needs ~10 GB)."""
    from alignment import memory

    estimate = memory.run_estimate(tiny_settings, "sft", {"per_device_train_batch_size": 2, "max_length": 96})
    monkeypatch.setattr(memory, "available", lambda: estimate.fixed + estimate.per_token * 96 + 1)
    out = cli("train", "sft", *QUICK[:-2], "--steps", "1", "--eval-rows", "0").output
    assert f"Memory: about {estimate.need / 2**30:.1f} GB (" in out and "192 tokens" in out, out
    assert "This run may not fit" in out and "`--batch-size 1 --grad-accum 2`" in out, out
    assert "Registered v1" in out  # a warning: the user decides (an estimate can be wrong)
    monkeypatch.setattr(memory, "available", lambda: 64 * 2**30)
    out = cli("train", "sft", *QUICK[:-2], "--steps", "1", "--eval-rows", "0").output
    assert "GB free." in out and "may not fit" not in out
