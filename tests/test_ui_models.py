"""The Models page and compare mode across versions (AppTest).

The page is the subject here, not the model: the app runs on the real settings, database and
registry, with the FakeGenerator standing in for the model (it "loads" adapters by name), so
registered versions need only an ``adapter/`` with a config and a weights file.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from alignment import runs
from assistant.errors import ModelNotFound
from tests.fake_app import APP, run_ok, models_page, fake_app
from ui import resources

FINGERPRINT = "fake-fingerprint"


@pytest.fixture
def service(env_settings, monkeypatch):
    """The app's chat service, built by the test (FakeGenerator) and handed to the app
    through its resource functions; everything else is the app's own wiring."""
    with fake_app(env_settings, monkeypatch, fingerprint=FINGERPRINT) as svc:
        yield svc


@pytest.fixture
def registry(service):
    return service.registry


def add_version(registry, kind: str = "dpo", parent: str = "base", metrics: dict | None = None,
                curve: bool = False, fingerprint: str = FINGERPRINT):
    staging = registry.staging_dir()
    (staging / "adapter").mkdir()
    (staging / "adapter" / "adapter_config.json").write_text("{}")
    (staging / "adapter" / "adapter_model.safetensors").write_bytes(b"weights")
    if curve:
        Image.new("RGB", (64, 36), "white").save(staging / "curve.png")
    return registry.register(
        staging, kind=kind, base_model="fake-model", base_fingerprint=fingerprint, parent=parent,
        data={"kind": "preference", "train_rows": 12, "test_rows": 2, "sha256": "ab" * 32},
        config={"trl_config": "DPOConfig", "max_steps": 10, "learning_rate": 5e-5, "beta": 0.1,
                "bf16": False, "lora_r": 16, "output_dir": "/tmp/x"},
        metrics=metrics if metrics is not None else {"steps": 10, "first_loss": 0.69, "final_loss": 0.5},
    )


def table_of(at: AppTest):
    """The versions table (AppTest's dataframes carry no key: it is the first one)."""
    table = at.dataframe[0].value
    assert "in use" in table.columns
    return table


def texts(elements) -> str:
    return "\n".join(str(e.value) for e in elements)


def test_empty_state(service):
    at = models_page()
    assert at.title[0].value == "Models"
    assert "No trained versions yet" in at.info[0].value
    assert "assistant train dpo" in at.info[0].value
    assert not at.dataframe
    assert at.button(key="models_rollback").disabled
    assert at.button(key="train_start").disabled  # no data yet: the form says what is missing
    assert "No runs yet" in texts(at.caption)


def test_list_details_and_active_marker(service, registry):
    v1 = add_version(registry, curve=True)
    add_version(registry, kind="reward", metrics={"heldout_accuracy": 0.75, "final_loss": 0.3})
    registry.activate(v1.name)
    at = models_page()
    assert service.version == "v1"  # the page followed the activation (made elsewhere)
    table = table_of(at)
    assert list(table["version"]) == ["v2", "v1", "base"]
    assert list(table["in use"]) == [False, True, False]
    assert list(table["kind"]) == ["reward", "dpo", "base"]
    assert list(table["metric"])[:2] == ["held-out accuracy 0.750", "loss 0.500"]
    assert at.markdown[0].value == "The chat answers with **v1** (dpo, from base)."

    # details: the newest is shown first; pick v1
    at.selectbox(key="models_version").set_value("v1")
    run_ok(at)
    assert "Lineage: v1 ← base" in texts(at.caption)
    config, metrics = [d.value for d in at.dataframe[1:3]]
    assert dict(zip(config["name"], config["value"]))["beta"] == "0.1"
    assert dict(zip(metrics["name"], metrics["value"]))["final_loss"] == "0.5"
    assert any(c.value == "sha256 " + "ab" * 32 for c in at.code)
    assert len(at.image) == 1 and at.image[0].proto.imgs[0].caption == "v1: loss per step"
    assert at.button(key="activate_v1").disabled  # already in use


def test_gate_refuses_then_force_activates(service, registry):
    add_version(registry)
    registry.record_evaluation("v1", "base", "v9", {
        "candidate": "v1", "baseline": "base", "reward_model": "v9", "seconds": 3.0,
        "win_rate": 0.25, "wins": 1, "ties": 0, "losses": 3, "prompts": 4,
        "mean_reward": -0.5, "baseline_mean_reward": 0.4,
        "qa_accuracy": 0.5, "baseline_qa_accuracy": 0.5, "qa_questions": 4,
        "examples": [{"prompt": "Name a *fruit*", "candidate": "<b>A rock</b>", "baseline": "An apple"}],
    })
    at = models_page()
    # the gate's verdict, before any click: four prompts cannot tell, and it says so
    assert "no evidence that it is better than base" in texts(at.caption)
    assert "needs at least 6 prompts whose answers differ" in texts(at.caption)
    assert "checked win rate 25%" in texts(at.caption)
    at.button(key="activate_v1").click()
    run_ok(at)
    assert "Refused to activate v1" in at.error[0].value and "no evidence" in at.error[0].value
    assert registry.active() == "base" and service.version == "base"

    # the evaluation as a table (not CLI text), with its examples shown as text
    evaluation = at.dataframe[-1].value
    rows = dict(zip(evaluation["measure"], evaluation["candidate"]))
    assert rows["win rate (95% CI)"].startswith("25.0% (")
    assert rows["QA accuracy (95% CI)"].startswith("50.0% (")
    assert "**Verdict**: not enough evidence" in texts(at.markdown)
    assert "<b>A rock</b>" in texts(at.text) and "Name a *fruit*" in texts(at.text)

    at.checkbox(key="force_v1").check()
    at.button(key="activate_v1").click()
    run_ok(at)
    assert "The chat now answers with v1 (was base)" in at.success[0].value
    assert registry.active() == "v1" and service.version == "v1"
    assert registry.history()[-1].forced
    assert list(table_of(at)["in use"]) == [True, False]


def test_activation_without_evaluation_is_refused(service, registry):
    add_version(registry)
    at = models_page()
    at.button(key="activate_v1").click()
    run_ok(at)
    assert "has not been evaluated" in at.error[0].value
    assert registry.active() == "base"


def test_rollback(service, registry):
    add_version(registry)
    add_version(registry, parent="v1")
    registry.activate("v1")
    registry.activate("v2")
    at = models_page()
    assert service.version == "v2"
    at.button(key="models_rollback").click()
    run_ok(at)
    assert "Rolled back: the chat now answers with v1 (was v2)" in at.success[0].value
    assert registry.active() == "v1" and service.version == "v1"
    at.button(key="models_rollback").click()
    run_ok(at)
    assert service.version == "base"
    assert at.button(key="models_rollback").disabled  # back at the start: nothing to roll back


def test_reward_model_cannot_be_activated(service, registry):
    add_version(registry, kind="reward", metrics={"heldout_accuracy": 0.6})
    at = models_page()
    assert "force_v1" not in [c.key for c in at.checkbox]
    assert "the chat cannot answer with it" in texts(at.caption)
    assert not [b for b in at.button if b.key == "evaluate_v1"]
    at.button(key="activate_v1").click()
    run_ok(at)
    assert "v1 is a reward model" in at.error[0].value
    assert registry.active() == "base" and service.version == "base"


def test_an_answerability_head_shows_its_threshold_and_cannot_be_activated(service, registry):
    add_version(registry, kind="answerability", metrics={"answerability": {
        "threshold": 0.61, "auc": 0.89, "heldout": 79, "abstention": 0.9, "false_abstention": 0.19}})
    at = models_page()
    assert "An answerability head tells whether the top source answers" in texts(at.caption)
    head = next(m for m in at.metric if m.label == "Head threshold")
    assert head.value == "0.61" and "AUC 0.89 on 79 questions" in head.delta
    registry.calibrate("v1", {"head_threshold": 0.45, "auc": 0.66, "asked": 70})
    head = next(m for m in models_page().metric if m.label == "Head threshold")
    assert head.value == "0.45" and "AUC 0.66 on 70 questions" in head.delta
    at.button(key="activate_v1").click()
    run_ok(at)
    assert "v1 is an answerability head" in at.error[0].value and registry.active() == "base"


def test_missing_adapter_is_an_error_not_a_traceback(service, registry):
    import shutil

    v1 = add_version(registry)
    shutil.rmtree(v1.adapter_dir)
    at = models_page()
    at.checkbox(key="force_v1").check()
    at.button(key="activate_v1").click()
    run_ok(at)
    assert "adapter files are missing" in at.error[0].value
    assert registry.active() == "base"

    # Activated elsewhere (a terminal) while its files are gone: the chat stays where it was.
    registry.activate("v1")
    run_ok(at)
    assert "v1 is the active version, but this app could not load it" in at.warning[0].value
    assert service.version == "base"


def test_model_that_does_not_load_still_lists_versions(service, registry, monkeypatch):
    add_version(registry)

    def broken():
        raise ModelNotFound("The model /nowhere does not exist.")

    at = AppTest.from_file(APP, default_timeout=120)
    monkeypatch.setattr(resources, "_chat_service", broken)
    at.switch_page("views/models.py")
    run_ok(at)
    assert "does not exist" in at.error[0].value
    assert list(table_of(at)["version"]) == ["v1", "base"]
    assert at.button(key="activate_v1").disabled


def write_run(settings, run_id: str, kind: str, args: list[str], pid: int, *,
              progress: dict | None = None, result: dict | None = None, log: str = "") -> Path:
    path = settings.runs_dir / run_id
    path.mkdir(parents=True)
    (path / runs.RUN).write_text(json.dumps(
        {"id": run_id, "kind": kind, "args": args, "pid": pid, "started": time.time() - 60}))
    if progress is not None:
        (path / runs.PROGRESS).write_text(json.dumps(progress))
    if result is not None:
        (path / runs.RESULT).write_text(json.dumps(result))
    (path / runs.LOG).write_text(log)
    return path


def gone_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_runs_panel_done_died_and_running_cancelled(service, registry, env_settings):
    add_version(registry)
    add_version(registry)
    write_run(env_settings, "20250101-000000-dpo-aaaa", "dpo", ["train", "dpo", "--steps", "10"],
              gone_pid(), progress={"step": 10, "max_steps": 10, "loss": 0.5, "phase": "done", "phases": {
                  "loading": {"seconds": 20.0}, "training": {"seconds": 300.0},
                  "evaluating": {"seconds": 60.0}, "saving": {"seconds": 5.0}}},
              result={"status": "done", "version": "v1", "error": None}, log="step 10\rdone\n")
    write_run(env_settings, "20250101-000001-kto-bbbb", "kto", ["train", "kto", "--steps", "5"],
              gone_pid(), progress={"step": 2, "max_steps": 5})
    running_id = "20250101-000002-sft-cccc"
    # A live process whose command line names the run, in its own session (as runs.start does).
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", running_id],
                            start_new_session=True)
    try:
        now = time.time()
        write_run(env_settings, running_id, "sft", ["train", "sft", "--steps", "8"], proc.pid, progress={
            "phase": "training", "label": "Training", "detail": "8 steps of 8 rows", "step": 2,
            "max_steps": 8, "done": 2, "total": 8, "loss": 1.25, "phase_eta_s": 90, "updated": now - 30,
            "phases": {"loading": {"started": now - 60, "seconds": 20.0},
                       "training": {"started": now - 40, "seconds": None}},
            "estimate": {"first_step_s": 12.0, "steps": 8, "rows_per_step": 8, "train_s": 2400.0,
                         "eval_rows": 48, "eval_s": 300.0, "total_s": 2700.0,
                         "smaller": {"steps": 6, "max_length": 256}}})
        at = models_page()
        assert "registered **v1**" in texts(at.markdown)
        assert at.selectbox(key="models_version").value == "v2"  # the newest
        at.button(key="show_run_20250101-000000-dpo-aaaa").click()
        run_ok(at)
        assert at.selectbox(key="models_version").value == "v1"
        assert "ended without a result" in texts(at.error)
        [bar] = at.get("progress")
        assert bar.proto.value == 25
        # The phase's own time and ETA (counted from when progress.json was written), the run's.
        assert re.fullmatch(r"Training: 8 steps of 8 rows · step 2/8 · loss 1\.2500 · 4\d s in this phase"
                            r" · about (1 min 00|5\d) s left · 1 min 0\d s in all", bar.proto.text), bar.proto.text
        captions = texts(at.caption)
        assert "Phases: loading 20 s · training (now)" in captions
        assert ("Estimate from the first step (12.0 s): training about 40 min 00 s (8 steps), held-out "
                "evaluation about 5 min 00 s (48 rows); about 45 min 00 s in all.") in captions
        assert "That is long for this machine" in texts(at.warning) and "Steps 6" in texts(at.warning)
        # An ended run: its training time and its total time, each phase's.
        assert ("Training time 5 min 00 s, total time 6 min 25 s (loading 20 s · training 5 min 00 s · "
                "evaluating 1 min 00 s · saving 5 s)") in captions
        assert "done" in texts(at.code)  # the log tail, carriage returns resolved
        assert [b.key for b in at.button if b.key and b.key.startswith("cancel_run_")] == [
            f"cancel_run_{running_id}"]

        at.button(key=f"cancel_run_{running_id}").click()
        run_ok(at)
        assert proc.wait(timeout=10) == -signal.SIGTERM
        assert "Cancelled by the user" in texts(at.warning)
        assert not at.get("progress")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_compare_mode_versions_are_picked_and_recorded(service, registry):
    add_version(registry)
    at = AppTest.from_file(APP, default_timeout=120)
    run_ok(at)
    assert "compare_version_1" not in [s.key for s in at.sidebar.selectbox]
    at.toggle(key="compare_mode").set_value(True)
    run_ok(at)
    assert at.selectbox(key="compare_version_1").value == "base"  # the active one
    assert at.selectbox(key="compare_version_2").value == "v1"  # against the newest trained
    at.chat_input(key="chat_input").set_value("What is the capital of France?")
    run_ok(at)

    store = service.store
    [conv] = store.list_conversations()
    answers = [m for m in store.messages(conv.id, include_inactive=True) if m.role == "assistant"]
    assert sorted(m.record.model_version for m in answers) == ["base", "v1"]
    [cmp] = service.comparisons.for_conversation(conv.id).values()
    assert not [c for c in at.main.caption if "Compared" in c.value]  # hidden until the vote

    at.button(key=f"vote_a_{cmp.id}").click()
    run_ok(at)
    a = store.get_message(cmp.a_id).record.model_version
    b = store.get_message(cmp.b_id).record.model_version
    assert any(f"A won (A: {a}, B: {b})" in c.value for c in at.main.caption)


def test_rows_used_and_an_evaluation_without_a_reward_model(service, registry):
    rows = {"export_rows_in": 1112, "dropped_empty": 1, "dropped_identical": 2, "dropped_duplicate": 3,
            "train_given": 200, "train_truncated": 31, "train_dropped_too_long": 4, "train_used": 196,
            "train_seen": 180, "train_row_passes": 0.918, "heldout_given": 116, "heldout_truncated": 20,
            "heldout_dropped_too_long": 0, "heldout_used": 116, "max_length": 256,
            "long_rows": "prompt shortened"}
    v = add_version(registry, kind="reward", metrics={"heldout_accuracy": 0.648, "heldout_accuracy_low": 0.558,
                                                      "heldout_accuracy_high": 0.729, "heldout_rows": 116,
                                                      "rows": rows})
    with registry.db.write() as s:  # the data record carries the same counts
        from assistant.storage.schema import ModelVersion

        s.get(ModelVersion, 1).data = {**v.data, "rows": rows}
    policy = add_version(registry, metrics={"heldout_margin": 0.23, "heldout_margin_low": 0.11,
                                            "heldout_margin_high": 0.35, "heldout_margin_batches": 29})
    registry.record_evaluation(policy.name, "base", None, {
        "prompts": 16, "identical_answers": 5, "candidate_words": 12.5, "baseline_words": 30.0,
        "candidate_repetition": 0.4, "baseline_repetition": 0.1, "repetition_ngram": 3,
        "qa_accuracy": 0.5, "baseline_qa_accuracy": 0.5, "qa_questions": 4,
        "notes": ["no reward model: the win rate and the reward model's accuracy were not measured"],
    })
    at = models_page()
    at.selectbox(key="models_version").set_value("v1")
    run_ok(at)
    counts = next(d.value for d in at.dataframe if "seen by the run" in d.value.columns)
    assert list(counts["given"]) == [200, 116] and list(counts["used"]) == [196, 116]
    assert list(counts["dropped (over 256 tokens)"]) == [4, 0] and counts["seen by the run"][0] == 180
    assert "Over-long rows: prompt shortened" in texts(at.caption)
    assert any(m.label == "Held-out accuracy" and "n=116" in str(m.proto.delta) for m in at.metric)

    at.selectbox(key="models_version").set_value("v2")
    run_ok(at)
    assert "could not check the win rate: no reward model judged the answers" in texts(at.caption)
    assert "Passes" not in texts(at.caption)
    assert any(m.label == "Held-out margin" and m.value == "0.230" and "0.110 to 0.350" in str(m.proto.delta)
               for m in at.metric)
    evaluation = at.dataframe[-1].value
    rows = dict(zip(evaluation["measure"], evaluation["candidate"]))
    assert rows["win rate"] == "not measured" and rows["repeated 3-grams"] == "40.0%"
    assert rows["mean answer length (words)"] == "12.5"
    assert "not measured" in texts(at.markdown) and "judges" not in texts(at.markdown)
