"""``ASSISTANT_DTYPE=auto`` per host: bf16 where the CPU computes it natively (AMX,
AVX512_BF16), fp32 elsewhere; training keeps fp32 weights and computes in bf16 there. And bf16
is still the same model: on the real embedded model it picks fp32's greedy tokens."""

from __future__ import annotations

import pytest
import torch

from assistant import cpu as cpu_module
from assistant.cpu import CpuInfo
from assistant.engines.models import dtype_choice

XEON = CpuInfo("Intel(R) Xeon(R) Platinum 8481C", frozenset("avx2 avx512f avx512_bf16 amx_bf16 amx_int8".split()), 2)
EPYC = CpuInfo("AMD EPYC", frozenset("avx2 avx512f avx512_bf16 avx512_vnni".split()), 2)
SKYLAKE = CpuInfo("Intel(R) Xeon(R) Gold 6148", frozenset("avx2 avx512f avx512_vnni".split()), 2)
AVX2 = CpuInfo("Intel(R) Xeon(R) CPU @ 2.20GHz", frozenset("avx avx2 fma".split()), 2)
CPU = torch.device("cpu")


@pytest.mark.parametrize("host, expected", [(XEON, torch.bfloat16), (EPYC, torch.bfloat16),
                                            (SKYLAKE, torch.float32), (AVX2, torch.float32)])
def test_auto_is_bf16_only_where_the_cpu_computes_it(monkeypatch, host, expected):
    from alignment.training.config import device_defaults, make_config, precision_reason

    monkeypatch.setattr(cpu_module, "cpu_info", lambda: host)
    dtype, reason = dtype_choice("auto", CPU)
    assert dtype == expected
    assert reason == "auto: bf16 is " + ("fast (AMX)" if host is XEON else "fast (AVX512_BF16)"
                                         if host is EPYC else "slow (no AVX512_BF16 or AMX)") + " on this CPU"
    # training: fp32 weights always, bf16 compute where it is fast
    assert dtype_choice("auto", CPU, "training") == (torch.float32, "auto: fp32 weights for training")
    if not torch.cuda.is_available():
        assert device_defaults()["bf16"] == (expected == torch.bfloat16)
        config = make_config("sft", "/tmp/unused")
        assert precision_reason(config).startswith("bf16 (auto: bf16 is fast" if expected == torch.bfloat16
                                                   else "fp32 (auto: bf16 is slow")


def test_a_set_dtype_wins_over_the_cpu(monkeypatch):
    from alignment.training.config import device_defaults, make_config, precision_reason

    monkeypatch.setattr(cpu_module, "cpu_info", lambda: XEON)
    assert dtype_choice("float32", CPU) == (torch.float32, "ASSISTANT_DTYPE=float32")
    assert dtype_choice("float32", CPU, "training")[0] == torch.float32
    if not torch.cuda.is_available():
        assert device_defaults("float32")["bf16"] is False
        assert precision_reason(make_config("dpo", "/tmp/unused", precision="float32"),
                                "float32") == "fp32 (ASSISTANT_DTYPE=float32)"
    monkeypatch.setattr(cpu_module, "cpu_info", lambda: AVX2)
    assert dtype_choice("bfloat16", CPU) == (torch.bfloat16, "ASSISTANT_DTYPE=bfloat16")


@pytest.mark.slow
def test_bf16_picks_the_same_greedy_tokens_as_fp32(embedded_checkpoint):
    """Five prompts through the chat template, 24 greedy fp32 tokens each, then both dtypes
    score that answer: measured 89 of 90 tokens agree, mean |log-prob difference| 0.019 nats
    (max 0.16) on AMD EPYC (AVX512_BF16)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(embedded_checkpoint)
    fp32 = AutoModelForCausalLM.from_pretrained(embedded_checkpoint, dtype=torch.float32).eval()
    bf16 = AutoModelForCausalLM.from_pretrained(embedded_checkpoint, dtype=torch.bfloat16).eval()
    prompts = ["What is the capital of France?", "Give me three tips for sleeping well.",
               "Explain what a LoRA adapter is.", "Who wrote Hamlet?",
               "Summarise: The bakery opens at seven and closes at six; on Sundays it is closed."]
    agree, total, diffs = 0, 0, []
    for prompt in prompts:
        text = tokenizer.apply_chat_template(
            [{"role": "system", "content": "You are a helpful assistant. Answer concisely and truthfully."},
             {"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True)
        ids = tokenizer(text, return_tensors="pt", add_special_tokens=False)["input_ids"]
        with torch.inference_mode():
            out = fp32.generate(ids, max_new_tokens=24, do_sample=False)
            n = ids.shape[1]
            chosen = out[0, n:, None]
            a = torch.log_softmax(fp32(out).logits[0, n - 1:-1].float(), -1)
            b = torch.log_softmax(bf16(out).logits[0, n - 1:-1].float(), -1)
        diffs += (a.gather(1, chosen) - b.gather(1, chosen)).abs().squeeze(1).tolist()
        agree += int((b.argmax(-1) == chosen.squeeze(1)).sum())
        total += chosen.shape[0]
    assert total >= 60
    assert agree / total >= 0.9
    assert sum(diffs) / len(diffs) < 0.1


def test_bf16_forced_on_a_cpu_without_it_says_it_will_be_slow(monkeypatch, tmp_path, tiny_model_dir):
    from assistant.config import Settings
    from assistant.engines.models import load_model

    monkeypatch.setattr(cpu_module, "cpu_info", lambda: AVX2)
    loaded = load_model(Settings(data_dir=tmp_path, model=str(tiny_model_dir), dtype="bfloat16"))
    assert loaded.dtype == torch.bfloat16
    assert any(n.startswith("ASSISTANT_DTYPE=bfloat16 on a CPU without native bf16 (Intel(R) Xeon(R) "
                            "CPU @ 2.20GHz, 2 cores: AVX2 (no AMX))") for n in loaded.notices)
    monkeypatch.setattr(cpu_module, "cpu_info", lambda: EPYC)
    assert load_model(Settings(data_dir=tmp_path, model=str(tiny_model_dir), dtype="bfloat16")).notices == []
