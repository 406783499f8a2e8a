"""The Models page's train form and runs panel (AppTest, FakeGenerator): the data a run needs
is checked before it starts, and heavy runs queue."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest
import streamlit as st

from alignment import machine_defaults, memory, runs
from alignment.importers import import_hh_rlhf
from assistant.bootstrap import open_database
from alignment.run_estimate import duration
from tests.fake_app import run_ok, models_page, fake_app
from tests.shared_data import HH_FILE, shared_file


@pytest.fixture
def service(env_settings, monkeypatch):
    # Runs are refused when this host lacks free memory (tests/test_runs.py tests that); the
    # form's tests must not depend on what else the machine runs.
    monkeypatch.setattr(memory, "available", lambda: 64 * 2**30)
    monkeypatch.setattr(memory, "total", lambda: 64 * 2**30)
    st.cache_data.clear()
    with fake_app(env_settings, monkeypatch, fingerprint="fake-fingerprint") as svc:
        yield svc


def import_pairs(settings, tmp_path: Path, n: int) -> None:
    lines = shared_file(HH_FILE).read_text(encoding="utf-8").splitlines()
    short = tmp_path / "pairs.jsonl"
    short.write_text("\n".join([line for line in lines if len(line) < 700][:n]) + "\n")
    db = open_database(settings)
    try:
        import_hh_rlhf(db, short)
    finally:
        db.dispose()


def test_the_form_says_what_data_is_missing_before_anything_starts(service, env_settings, tmp_path):
    at = models_page()
    warning = " ".join(w.value for w in at.warning)
    assert "No preference data in the database" in warning
    assert "`assistant data import hh-rlhf FILE`" in warning  # shown as code, not escaped
    assert at.button(key="train_start").disabled
    at.selectbox(key="train_kind").set_value("kto")
    run_ok(at)
    assert "No kto data" in " ".join(w.value for w in at.warning)
    assert ":material/thumb_up:" in " ".join(w.value for w in at.warning)  # not an emoji
    assert at.button(key="train_start").disabled
    assert not env_settings.runs_dir.exists()

    import_pairs(env_settings, tmp_path, 40)
    st.cache_data.clear()  # the form re-checks every 10 s (the click always does)
    at.selectbox(key="train_kind").set_value("dpo")
    run_ok(at)
    assert not [w for w in at.warning if "preference" in w.value]
    assert not at.button(key="train_start").disabled


def test_too_few_rows_are_refused_with_the_count_and_the_way_to_get_more(service, env_settings, tmp_path):
    import_pairs(env_settings, tmp_path, 6)
    at = models_page()
    warning = " ".join(w.value for w in at.warning)
    assert "needs at least 8 preference pairs" in warning and "the feedback export has" in warning
    assert at.button(key="train_start").disabled


def test_a_second_run_is_queued_and_shown_waiting(service, env_settings, tmp_path, monkeypatch):
    import_pairs(env_settings, tmp_path, 40)
    monkeypatch.setattr(runs, "_argv", lambda command, path: [
        sys.executable, "-c", "import time; time.sleep(30)", str(path)])
    at = models_page()
    at.button(key="train_start").click()
    run_ok(at)
    assert "Started dpo training" in " ".join(i.value for i in at.info)
    at.button(key="train_start").click()
    run_ok(at)
    assert "Queued dpo training" in " ".join(i.value for i in at.info)
    listed = runs.list_runs(env_settings)
    assert [r.status for r in listed] == ["queued", "running"]
    eval_rows = machine_defaults.size_defaults()["eval_rows"]  # the form's default, sized for the machine
    assert listed[0].args[listed[0].args.index("--eval-rows") + 1] == str(eval_rows)
    assert any("Waits for the running run to end" in c.value for c in at.caption)
    at.button(key=f"cancel_run_{listed[0].id}").click()
    run_ok(at)
    at.button(key=f"cancel_run_{listed[1].id}").click()
    run_ok(at)
    time.sleep(0.5)
    assert [r.status for r in runs.list_runs(env_settings)] == ["cancelled", "cancelled"]


def test_held_out_rows_and_the_estimate_before_a_run_starts(service, env_settings, tmp_path, monkeypatch):
    from tests.test_ui_models import add_version

    monkeypatch.setattr(machine_defaults, "has_gpu", lambda: False)
    import_pairs(env_settings, tmp_path, 40)
    at = models_page()
    assert at.number_input(key="train_eval_rows").value == 48  # the CPU's default
    assert "No estimate yet" in " ".join(c.value for c in at.caption)
    # A run of the same kind measured its pace: 100 s per training row, 10 s per held-out row.
    add_version(service.registry, metrics={"steps": 10, "final_loss": 0.5, "train_seconds_per_row": 100.0,
                                           "eval_seconds_per_row": 10.0})
    at.number_input(key="train_eval_rows").set_value(6)
    run_ok(at)
    captions = " ".join(c.value for c in at.caption)
    rows = min(50 * 4 * 2, _train_rows(env_settings))
    assert (f"Estimate: training about {duration(rows * 100.0)} ({rows} rows), held-out evaluation "
            "about 1 min 00 s; at the pace of v1") in captions
    warning = " ".join(w.value for w in at.warning)
    assert "That is long for this machine" in warning and "Steps 2 " in warning  # 1800 s / (100 s x 8 rows)
    assert "--eval-rows 6" in at.button(key="train_start").help


def _train_rows(settings) -> int:
    from alignment.readiness import check_data

    db = open_database(settings)
    try:
        return check_data(db, "dpo")
    finally:
        db.dispose()


def test_the_memory_a_run_needs_is_shown_and_a_smaller_batch_offered(service, env_settings, tmp_path,
                                                                     monkeypatch):
    monkeypatch.setattr(machine_defaults, "has_gpu", lambda: False)
    monkeypatch.setattr(memory, "model_shape", lambda settings: memory.ModelShape(
        parameters=134_515_008, vocabulary=49_152, layers=30, hidden=576))  # the embedded model's
    import_pairs(env_settings, tmp_path, 40)
    at = models_page()
    captions = " ".join(c.value for c in at.caption)
    assert "Memory: about 6.0 GB (1.5 GB for the model, 4.5 GB for a batch of 2,048 tokens)" in captions
    assert "64.0 GB free now" in captions
    monkeypatch.setattr(memory, "available", lambda: 4 * 2**30)
    at.number_input(key="train_batch_size").set_value(8)
    run_ok(at)
    warning = " ".join(w.value for w in at.warning)
    assert "Memory: about 10.5 GB" in warning and "It would not start" in warning, warning
    assert "A batch size of 2 fits (`--batch-size 2 --grad-accum 8`" in warning, warning
    at.button(key="train_start").click()
    run_ok(at)
    assert "Could not start training: This run needs about 10.5 GB" in " ".join(e.value for e in at.error)
    assert not env_settings.runs_dir.exists() or not list(env_settings.runs_dir.iterdir())
