"""`assistant models import`: a version trained in one data folder registered in another
(the tiny model on both sides), and the folders it refuses."""

from __future__ import annotations

import json
import shutil

import pytest

from assistant.bootstrap import open_database, open_registry
from assistant.config import get_settings
from assistant.registry import VERSION_FILE
from tests.test_cli_training import QUICK, cli


@pytest.fixture
def trained(tiny_settings, feedback_db, tmp_path, monkeypatch):
    """v1 (sft) and v2 (reward) trained in the tiny settings' data folder; then the
    environment points at a second, empty installation on the same base model."""
    cli("train", "sft", *QUICK, "--eval-rows", "1")
    cli("train", "reward", *QUICK, "--eval-rows", "1")
    source = tiny_settings.data_dir / "versions"
    monkeypatch.setenv("ASSISTANT_DATA_DIR", str(tmp_path / "elsewhere"))
    monkeypatch.delenv("ASSISTANT_DATABASE_URL", raising=False)
    return source


def _registry():
    settings = get_settings()
    return open_registry(settings, open_database(settings))


def test_a_version_moves_to_another_installation(trained, tmp_path):
    meta = json.loads((trained / "v1" / VERSION_FILE).read_text())
    assert meta["name"] == "v1" and meta["kind"] == "sft" and meta["parent"] == "base"
    assert meta["config"]["lora_r"] == 4 and meta["data"]["train_rows"] > 0

    # Kind and data come from version.json; the lineage starts on base here.
    out = cli("models", "import", str(trained / "v2")).output
    assert "Imported" in out and "as v1 (reward on base); it was v2 there." in out, out
    out = cli("models", "import", str(trained / "v1")).output
    assert "as v2 (sft on base); it was v1 there." in out, out
    registry = _registry()
    v2 = registry.get("v2")
    assert v2.kind == "sft" and v2.parent == "base" and v2.config["lora_r"] == 4
    assert v2.data["train_rows"] == meta["data"]["train_rows"]
    assert v2.data["imported_from"]["name"] == "v1"
    assert v2.data["imported_from"]["folder"] == str((trained / "v1").resolve())
    assert (v2.adapter_dir / "adapter_model.safetensors").is_file() and v2.curve.is_file()
    # Served like a trained one: the evaluation and the gate take it.
    assert "lineage:  v2 <- base" in cli("models", "show", "v2").output
    assert "v2 against base" in cli("eval", "v2", "--reward", "v1", "--prompts", "2", "--pairs", "2",
                                    "--qa", "0", "--grounded", "0", "--max-new-tokens", "4").output

    # A bare adapter folder (no version.json): --kind says what it is.
    bare = tmp_path / "bare"
    shutil.copytree(trained / "v1" / "adapter", bare)
    refused = cli("models", "import", str(bare), ok=False)
    assert "does not say what kind of version it is: pass --kind" in refused.output
    out = cli("models", "import", str(bare), "--kind", "dpo", "--parent", "v2").output
    assert "as v3 (dpo on v2)." in out, out
    assert registry.lineage("v3") == ["v3", "v2", "base"]


def test_refused_folders_register_nothing(trained, tmp_path):
    (tmp_path / "empty").mkdir()
    cases = [
        ([str(tmp_path / "missing")], "is not a folder"),
        ([str(tmp_path / "empty")], "holds no LoRA adapter"),
        ([str(trained / "v1"), "--kind", "reward"], "is a sft version, not reward"),
        ([str(trained / "v2"), "--kind", "sft"], "is a reward version, not sft"),
        ([str(trained / "v1"), "--parent", "v7"], "no model version 'v7'"),
    ]
    bare_reward = tmp_path / "bare-reward"
    shutil.copytree(trained / "v2" / "adapter", bare_reward)
    cases.append(([str(bare_reward), "--kind", "sft"], "holds a reward model's adapter"))
    bare_policy = tmp_path / "bare-policy"
    shutil.copytree(trained / "v1" / "adapter", bare_policy)
    cases.append(([str(bare_policy), "--kind", "reward"], "holds a policy adapter"))
    # Trained on another base model: version.json's fingerprint says so.
    other = tmp_path / "other-base"
    shutil.copytree(trained / "v1", other)
    meta = json.loads((other / VERSION_FILE).read_text())
    (other / VERSION_FILE).write_text(json.dumps({**meta, "base_fingerprint": "0" * 32}))
    cases.append(([str(other)], "was trained on another base model"))
    # Weights whose shapes do not fit this base (peft refuses them).
    wrong = tmp_path / "wrong-shapes"
    shutil.copytree(trained / "v1" / "adapter", wrong)
    from safetensors.torch import load_file, save_file

    weights = load_file(wrong / "adapter_model.safetensors")
    save_file({k: v[:, :3].contiguous() if v.dim() == 2 else v for k, v in weights.items()},
              wrong / "adapter_model.safetensors")
    cases.append(([str(wrong), "--kind", "sft"], "does not fit the base model"))

    for args, message in cases:
        result = cli("models", "import", *args, ok=False)
        assert result.exit_code == 1 and message in result.output, (args, result.output)
        assert "Traceback" not in result.output
    registry = _registry()
    assert registry.list() == [] and registry.stray_folders() == []
