"""Fixtures for the engine tests (registered in conftest.py): the real llama.cpp build, the
embedded model as shipped and converted, and LoRA adapters on it."""

from __future__ import annotations

from pathlib import Path

import pytest

from assistant.config import Settings
from tests.needs import missing


def require_llama() -> None:
    """llama-cpp-python is built by `make setup`; in CI its absence is a failure, not a skip."""
    from assistant.engines import llamacpp

    if not llamacpp.available():
        missing("llama-cpp-python is not installed (make setup builds it)")


@pytest.fixture(scope="session")
def embedded_checkpoint(model_cache) -> Path:
    """The transformers checkpoint dequantized from the embedded GGUF (what training uses)."""
    from assistant.engines.model_files import embedded_gguf
    from assistant.engines.models import checkpoint_for_gguf

    return checkpoint_for_gguf(embedded_gguf(), model_cache)


@pytest.fixture(scope="session")
def embedded_llama(embedded_checkpoint):
    """The embedded GGUF as shipped (Q4_1), on the llama.cpp engine."""
    require_llama()
    from assistant.engines.llamacpp import LlamaCppGenerator
    from assistant.engines.model_files import embedded_gguf

    return LlamaCppGenerator(embedded_gguf(), "embedded", 4096,
                             base_checkpoint=lambda: embedded_checkpoint)


@pytest.fixture(scope="session")
def embedded_f32_gguf(embedded_checkpoint, tmp_path_factory) -> Path:
    """The embedded model's checkpoint converted to an f32 GGUF: the same weights the
    transformers engine runs, for exact parity."""
    require_llama()
    from assistant.engines.conversion import convert_checkpoint

    out = tmp_path_factory.mktemp("gguf") / "smollm2-135m.f32.gguf"
    return convert_checkpoint(embedded_checkpoint, out, "f32")


def make_lora(checkpoint: Path, out: Path, seed: int, scale: float = 0.06, r: int = 8) -> Path:
    """A LoRA adapter on ``checkpoint`` with small random weights: it changes the answers
    without turning the model into noise."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(checkpoint, dtype=torch.float32)
    config = LoraConfig(r=r, lora_alpha=2 * r, target_modules=["q_proj", "v_proj", "down_proj"],
                        init_lora_weights=False, task_type="CAUSAL_LM")
    peft_model = get_peft_model(model, config)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_" in name:
                param.copy_(torch.randn_like(param) * scale)
    peft_model.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def embedded_adapters(embedded_checkpoint, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("embedded-adapters")
    return {name: make_lora(embedded_checkpoint, root / name, seed)
            for name, seed in (("v1", 1), ("v2", 2))}


@pytest.fixture
def llama_settings(tmp_path, model_cache) -> Settings:
    """Settings on the default engine (llama.cpp) and the embedded model."""
    require_llama()
    return Settings(data_dir=tmp_path / "data", model_cache_dir=model_cache,
                    db_busy_timeout_s=2, engine="llamacpp")
