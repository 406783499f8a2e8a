"""The model registry on the real SQLite file: registration is all-or-nothing, activation is a
log with rollback, and the eval gate refuses regressions unless forced."""

from __future__ import annotations

import json
import os

import pytest

from assistant.registry import (
    ActivationRefused, NothingToRollBack, Registry, VersionNotFound,
)
from assistant.gate import activate_version, gate, gate_report
from assistant.versions import BASE_VERSION as BASE

pytestmark = pytest.mark.both_databases  # SQLite and PostgreSQL (tests/conftest.py)

FP = "f" * 32


@pytest.fixture
def registry(db, settings) -> Registry:
    return Registry(db, settings.versions_dir)


def make_version(registry: Registry, kind: str = "dpo", parent: str = BASE, fingerprint: str = FP):
    staging = registry.staging_dir()
    (staging / "adapter").mkdir()
    (staging / "adapter" / "adapter_config.json").write_text(json.dumps({"r": 4}))
    (staging / "adapter" / "adapter_model.safetensors").write_bytes(b"weights")
    return registry.register(
        staging, kind=kind, base_model="tiny", base_fingerprint=fingerprint, parent=parent,
        data={"kind": "preference", "train_rows": 10, "test_rows": 2, "sha256": "ab"},
        config={"lora_r": 4}, metrics={"final_loss": 0.5},
    )


def test_register_names_versions_and_moves_the_folder(registry):
    v1 = make_version(registry)
    v2 = make_version(registry, "sft", parent=v1.name)
    assert (v1.name, v2.name) == ("v1", "v2")
    assert v2.path == registry.root / "v2" and (v2.adapter_dir / "adapter_config.json").is_file()
    assert [v.name for v in registry.list()] == ["v1", "v2"]
    assert registry.get("v2").parent == "v1" and registry.lineage("v2") == ["v2", "v1", "base"]
    assert registry.newest("sft").name == "v2" and registry.newest("reward") is None
    assert registry.stray_folders() == []


def test_any_kind_training_names_registers_and_a_malformed_one_is_refused(registry):
    """The kinds of training are training's table, not a database CHECK: a kind added
    there registers on both databases without a migration; a kind that is no short
    lowercase name is refused before anything is written."""
    assert make_version(registry, "orpo").kind == "orpo"
    assert make_version(registry, "a_new_kind").kind == "a_new_kind"
    for bad in ("", "DPO", "x" * 17, "dpo; drop"):
        with pytest.raises(ValueError, match="short lowercase name"):
            make_version(registry, bad)
    assert [v.kind for v in registry.list()] == ["orpo", "a_new_kind"]


def test_a_failed_registration_leaves_no_row(registry, monkeypatch):
    staging = registry.staging_dir()
    (staging / "adapter").mkdir()

    def fail(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError):
        registry.register(staging, kind="dpo", base_model="t", base_fingerprint=FP, parent=BASE,
                          data={}, config={}, metrics={})
    monkeypatch.undo()
    assert registry.list() == []
    assert registry.stray_folders() == [staging]  # left for `assistant doctor`, never served


def test_a_folder_left_by_a_crash_before_commit_is_set_aside(registry):
    # A crash between the rename and the commit leaves v1/ without a row; the next
    # registration gets the name v1 again and must not mix the two.
    crashed = registry.root / "v1"
    (crashed / "adapter").mkdir(parents=True)
    (crashed / "adapter" / "marker").write_text("old")
    v = make_version(registry)
    assert v.name == "v1" and not (v.adapter_dir / "marker").exists()
    assert any(p.name.startswith(".orphaned-v1") for p in registry.stray_folders())


def test_unknown_version_lists_the_known_ones(registry):
    make_version(registry)
    with pytest.raises(VersionNotFound, match="no model version 'v7'.*base, v1"):
        registry.get("v7")
    assert registry.get(BASE).is_base


def test_activation_log_and_rollback(registry):
    v1, v2 = make_version(registry), make_version(registry)
    assert registry.active() == BASE
    with pytest.raises(NothingToRollBack):
        registry.rollback()
    registry.activate(v1.name)
    registry.activate(v2.name)
    assert registry.active() == "v2"
    assert registry.rollback() == "v1" and registry.active() == "v1"
    assert registry.rollback() == BASE and registry.active() == BASE
    with pytest.raises(NothingToRollBack):
        registry.rollback()
    assert [(r.version, r.reason) for r in registry.history()] == [
        ("v1", "activate"), ("v2", "activate"), ("v1", "rollback"), ("base", "rollback"),
    ]


def test_servable_checks(registry):
    reward = make_version(registry, "reward")
    other = make_version(registry, fingerprint="0" * 32)
    broken = make_version(registry)
    (broken.adapter_dir / "adapter_config.json").unlink()
    no_weights = make_version(registry)
    (no_weights.adapter_dir / "adapter_model.safetensors").write_bytes(b"")
    with pytest.raises(ActivationRefused, match="reward model"):
        activate_version(registry, reward.name, FP)
    with pytest.raises(ActivationRefused, match="trained on another base model"):
        activate_version(registry, other.name, FP)
    with pytest.raises(ActivationRefused, match="adapter files are missing"):
        activate_version(registry, broken.name, FP, force=True)
    with pytest.raises(ActivationRefused, match="adapter files are missing"):
        activate_version(registry, no_weights.name, FP, force=True)
    assert registry.active() == BASE and registry.history() == []


def test_gate_needs_an_evaluation_and_refuses_regressions(registry):
    v1 = make_version(registry)
    assert "has not been evaluated against the active version base" in gate(registry, v1.name)[0]
    with pytest.raises(ActivationRefused, match="assistant eval v1"):
        activate_version(registry, v1.name, FP)

    registry.record_evaluation(v1.name, BASE, "v9", {"win_rate": 0.2, "wins": 2, "ties": 4, "losses": 14,
                                                     "qa_accuracy": 0.40, "baseline_qa_accuracy": 0.50})
    report = gate_report(registry, v1.name)
    assert report.verdict == "worse" and len(report.reasons) == 2
    assert "worse than base's" in report.reasons[0] and "fell from 50% to 40%" in report.reasons[1]
    with pytest.raises(ActivationRefused, match="Refused to activate v1"):
        activate_version(registry, v1.name, FP)
    assert registry.active() == BASE
    # A looser QA threshold does not let worse answers through; --force does, and is logged.
    assert len(gate(registry, v1.name, threshold=0.25)) == 1
    activate_version(registry, v1.name, FP, force=True)
    assert registry.active() == "v1"
    last = registry.history()[-1]
    assert last.forced and last.reason.startswith("forced: ")

    # An evaluation against another baseline does not count for the new active version.
    v2 = make_version(registry)
    registry.record_evaluation(v2.name, BASE, "v9", {"win_rate": 0.9, "wins": 18, "ties": 0, "losses": 2})
    assert "against the active version v1" in gate(registry, v2.name)[0]
    registry.record_evaluation(v2.name, "v1", "v9", {"win_rate": 0.8, "wins": 15, "ties": 2, "losses": 3,
                                                     "qa_accuracy": 0.5, "baseline_qa_accuracy": 0.5})
    report = gate_report(registry, v2.name)
    assert report.passes and report.verdict == "better" and len(report.checked) == 2
    assert activate_version(registry, v2.name, FP) == "v2"
    assert not registry.history()[-1].forced


def test_gate_has_three_verdicts_and_not_enough_evidence_refuses(registry):
    v1 = make_version(registry)
    # The DPO version: 14 wins, 16 ties, 10 losses: a 55% win rate, p = 0.54.
    registry.record_evaluation(v1.name, BASE, "v9", {"win_rate": 0.55, "wins": 14, "ties": 16, "losses": 10,
                                                     "prompts": 40})
    report = gate_report(registry, v1.name)
    assert report.verdict == "not enough evidence" and not report.passes
    assert "no evidence that it is better than base" in report.reasons[0]
    assert "--prompts" in report.reasons[0] and "p = 0.54" in report.reasons[0]
    with pytest.raises(ActivationRefused, match="no evidence"):
        activate_version(registry, v1.name, FP)
    # Too few prompts to tell, even when all were won: it says so instead of passing.
    registry.record_evaluation(v1.name, BASE, "v9", {"wins": 4, "ties": 0, "losses": 0, "prompts": 4})
    report = gate_report(registry, v1.name)
    assert report.verdict == "not enough evidence"
    assert "needs at least 6 prompts whose answers differ" in report.reasons[0]
    # Two identical versions: every answer ties. Never "better".
    registry.record_evaluation(v1.name, BASE, "v9", {"wins": 0, "ties": 40, "losses": 0, "prompts": 40})
    report = gate_report(registry, v1.name)
    assert report.verdict == "not enough evidence" and "no difference was seen" in report.reasons[0]


def test_gate_without_a_reward_model_says_what_it_could_not_check(registry):
    v1 = make_version(registry)
    registry.record_evaluation(v1.name, BASE, None, {"prompts": 16, "identical_answers": 3,
                                                     "qa_accuracy": 0.5, "baseline_qa_accuracy": 0.5,
                                                     "qa_questions": 24})
    report = gate_report(registry, v1.name)
    assert not report.passes and report.verdict == "not measured"
    assert report.not_checked == ["the win rate: no reward model judged the answers"]
    assert report.checked == ["QA accuracy 50% against 50% on 24 questions"]
    assert "not measured" in report.reasons[0] and "assistant train reward" in report.reasons[0]
    activate_version(registry, v1.name, FP, force=True)  # --force still exists
    assert registry.active() == "v1"


def test_rollback_after_doctor_does_not_return_to_the_broken_version(registry):
    v1, v2 = make_version(registry), make_version(registry)
    registry.activate(v1.name)
    registry.activate(v2.name)  # then v2's files break, and doctor moves the chat back to v1
    registry.activate(v1.name, reason="doctor")
    assert registry.active() == "v1"
    assert registry.rollback() == BASE


def test_compare_mode_pits_the_active_version_against_its_parent_by_default(registry):
    assert registry.default_opponent(BASE) is None  # before any training: nothing to compare
    v1 = make_version(registry).name
    assert registry.default_opponent(BASE) == v1  # the newest trained one
    make_version(registry, kind="reward")
    v3 = make_version(registry, parent=v1).name
    assert registry.default_opponent(v1) == BASE  # its parent
    assert registry.default_opponent(v3) == v1
    registry.activate(v3)
    registry.rollback()  # back on base: the version active before it
    assert registry.default_opponent(BASE) == v3
