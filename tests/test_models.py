"""Loading the base model: the embedded GGUF, its cache, and bad model settings."""

from __future__ import annotations

import shutil

import pytest
import torch

from assistant.config import Settings
from assistant.cpu import bf16_fast
from assistant.errors import CorruptCheckpoint, ModelNotFound
from assistant.engines.models import cache_dir_for, embedded_gguf, load_model, select_dtype

pytestmark = pytest.mark.slow


def test_embedded_model_loads_in_this_cpus_dtype(embedded):
    """bf16 where the CPU computes it natively, fp32 elsewhere (tests/test_dtype.py has the
    rule on each kind of host); training loads fp32 weights everywhere."""
    expected = torch.bfloat16 if bf16_fast() else torch.float32
    assert embedded.device.type == "cpu" and embedded.dtype == expected
    assert next(embedded.model.parameters()).dtype == expected
    assert embedded.dtype_reason.startswith("auto: bf16 is ")
    assert embedded.context_window == 8192
    assert "SmolLM2-135M-Instruct" in embedded.model_id and embedded.version == "base"
    assert embedded.tokenizer.chat_template


def test_second_load_comes_from_the_safetensors_cache(embedded, settings):
    again = load_model(settings)
    assert again.source == "cache" and again.notices == []
    a, b = embedded.model.state_dict(), again.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in ("model.embed_tokens.weight", "model.norm.weight"))


def test_corrupt_cache_is_rebuilt_with_a_notice(settings, tmp_path, model_cache):
    cache_root = tmp_path / "models"
    src = cache_dir_for(embedded_gguf(), model_cache)
    dst = cache_dir_for(embedded_gguf(), cache_root)
    shutil.copytree(src, dst)
    weights = dst / "model.safetensors"
    with weights.open("r+b") as f:  # a crash or a full disk cut the file short
        f.truncate(weights.stat().st_size // 3)

    loaded = load_model(Settings(data_dir=tmp_path, model_cache_dir=cache_root))
    assert loaded.source == "gguf"
    assert len(loaded.notices) == 1 and "could not be read" in loaded.notices[0]
    assert "rebuilt" in loaded.notices[0]
    assert weights.stat().st_size > 100_000_000
    assert not [p for p in cache_root.iterdir() if p.name.startswith(".")], "temp dirs left"


def test_missing_model_path_is_a_clear_error(tmp_path):
    with pytest.raises(ModelNotFound, match="does not exist.*ASSISTANT_MODEL"):
        load_model(Settings(data_dir=tmp_path, model=str(tmp_path / "no-such-model")))


def test_folder_without_checkpoint_is_a_clear_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelNotFound, match="no config.json"):
        load_model(Settings(data_dir=tmp_path, model=str(tmp_path / "empty")))


def test_corrupt_user_checkpoint_is_a_clear_error(tmp_path, model_cache):
    bad = tmp_path / "bad"
    shutil.copytree(cache_dir_for(embedded_gguf(), model_cache), bad)
    (bad / "model.safetensors").write_bytes(b"\x00garbage" * 10)
    with pytest.raises(CorruptCheckpoint, match="incomplete or corrupt"):
        load_model(Settings(data_dir=tmp_path, model=str(bad)))


def test_hub_id_without_network_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(ModelNotFound, match="could not be fetched from the hub"):
        load_model(Settings(data_dir=tmp_path, model="someone/some-model"))


def test_dtype_choice():
    assert select_dtype("auto", torch.device("cpu")) == (torch.bfloat16 if bf16_fast() else torch.float32)
    assert select_dtype("auto", torch.device("cpu"), "training") == torch.float32
    assert select_dtype("bfloat16", torch.device("cpu")) == torch.bfloat16
