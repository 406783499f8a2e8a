"""LoRA adapters switched live on one loaded base model (the tiny random Llama, so seconds)."""

from __future__ import annotations

import threading

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import (
    AutoModelForCausalLM, AutoTokenizer, GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM,
)

from assistant.config import Settings
from assistant.errors import AdapterError
from assistant.engines.transformers import TransformersGenerator
from assistant.engines.generation import GenerationParams
from assistant.engines.models import load_model

GREEDY = GenerationParams(temperature=0.0, top_p=1.0, max_new_tokens=12)
ASK = [{"role": "user", "content": "What is the capital of France?"}]
TARGETS = ["q_proj", "v_proj", "down_proj"]


def make_adapter(model, out, seed: int, targets=TARGETS):
    """A LoRA adapter with random (non-zero) weights, so that it changes the answers.
    lora_dropout > 0: answering must not apply it (peft's new modules start in train mode)."""
    torch.manual_seed(seed)
    config = LoraConfig(r=4, lora_alpha=16, lora_dropout=0.3, target_modules=targets,
                        init_lora_weights=False, task_type="CAUSAL_LM")
    get_peft_model(model, config).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def adapters(tiny_model_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("adapters")
    return {
        name: make_adapter(AutoModelForCausalLM.from_pretrained(tiny_model_dir), root / name, seed)
        for name, seed in (("one", 1), ("two", 2))
    }


@pytest.fixture
def generator(tiny_model_dir, tmp_path):
    gen = TransformersGenerator(load_model(Settings(model=str(tiny_model_dir), data_dir=tmp_path)),
                                workers=2)
    yield gen
    gen.close()


def answer(gen, version=None, messages=ASK) -> str:
    stream = gen.stream(messages, GREEDY, version=version)
    text = "".join(stream)
    assert stream.stats.completion_tokens == GREEDY.max_new_tokens  # random model: no EOS
    return text


def reference(tiny_model_dir, adapter_dir=None, messages=ASK) -> str:
    """The same answer from a freshly built model, without the generator."""
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    if adapter_dir is not None:
        model = PeftModel.from_pretrained(model, adapter_dir)
    model.eval()
    enc = tok.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                  return_dict=True)
    with torch.inference_mode():
        out = model.generate(**enc, max_new_tokens=GREEDY.max_new_tokens, do_sample=False,
                             temperature=None, top_p=None, top_k=None,
                             pad_token_id=tok.pad_token_id)
    return tok.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)


def base_weights(gen) -> dict[str, torch.Tensor]:
    """The base model's own tensors, named as before peft wrapped its layers."""
    return {k.replace(".base_layer", ""): v.clone()
            for k, v in gen._base.state_dict().items() if "lora_" not in k}


def test_adapter_changes_answers_and_base_comes_back_bit_identical(generator, adapters):
    before = base_weights(generator)
    base = answer(generator)
    generator.load_adapter("one", adapters["one"])
    assert generator.loaded_versions() == ["base", "one"]
    assert generator.model_version == "base" and answer(generator) == base  # loaded, not active

    generator.activate("one")
    assert generator.model_version == "one"
    stream = generator.stream(ASK, GREEDY)
    adapted = "".join(stream)
    assert stream.version == "one" and adapted != base
    assert not generator.loaded.model.training, "the model must stay in eval mode"

    generator.activate("base")
    stream = generator.stream(ASK, GREEDY)
    assert "".join(stream) == base and stream.version == "base"
    assert answer(generator, "one") == adapted  # switching back and forth is stable

    after = base_weights(generator)
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_generator_answer_equals_a_fresh_peft_model(generator, adapters, tiny_model_dir):
    generator.load_adapter("one", adapters["one"])
    generator.load_adapter("one", adapters["one"])  # idempotent
    generator.load_adapter("two", adapters["two"])
    expected_one = reference(tiny_model_dir, adapters["one"])
    expected_two = reference(tiny_model_dir, adapters["two"])
    assert expected_one != expected_two
    assert answer(generator, "one") == expected_one
    assert answer(generator, "two") == expected_two
    assert answer(generator, "base") == reference(tiny_model_dir)


def test_concurrent_streams_each_get_their_version(generator, adapters, tiny_model_dir):
    generator.load_adapter("one", adapters["one"])
    generator.load_adapter("two", adapters["two"])
    expected = {v: reference(tiny_model_dir, adapters.get(v)) for v in ("base", "one", "two")}
    assert len(set(expected.values())) == 3

    # two workers, six answers alternating versions, all submitted at once
    versions = ["one", "two", "base", "two", "one", "base"]
    streams = [generator.stream(ASK, GREEDY, version=v) for v in versions]
    texts: dict[int, str] = {}
    threads = [threading.Thread(target=lambda i=i, s=s: texts.__setitem__(i, "".join(s)))
               for i, s in enumerate(streams)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert [texts[i] for i in range(len(versions))] == [expected[v] for v in versions]
    assert [s.version for s in streams] == versions


def test_same_version_answers_overlap(generator, adapters):
    """The gate lets two answers of one version share the model at once (workers=2)."""
    generator.load_adapter("one", adapters["one"])
    inside, both = [], threading.Event()

    def generating(version):
        with generator._gate.use(version):
            inside.append(version)
            if len(inside) == 2:
                both.set()
            both.wait(timeout=5)

    threads = [threading.Thread(target=generating, args=("one",)) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert both.is_set()


@pytest.fixture(scope="module")
def broken(tmp_path_factory, adapters, tiny_model_dir):
    """Adapter folders that must be refused, by what is wrong with them."""
    root = tmp_path_factory.mktemp("broken")
    no_config = root / "no-config"
    no_config.mkdir()
    (no_config / "adapter_model.safetensors").write_bytes(
        (adapters["one"] / "adapter_model.safetensors").read_bytes())
    truncated = root / "truncated"
    truncated.mkdir()
    (truncated / "adapter_config.json").write_bytes(
        (adapters["one"] / "adapter_config.json").read_bytes())
    data = (adapters["one"] / "adapter_model.safetensors").read_bytes()
    (truncated / "adapter_model.safetensors").write_bytes(data[: len(data) // 2])

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    wider = LlamaForCausalLM(LlamaConfig(
        hidden_size=48, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, vocab_size=len(tok)))
    deeper = LlamaForCausalLM(LlamaConfig(  # same widths, two layers more than the base
        hidden_size=32, intermediate_size=64, num_hidden_layers=4, num_attention_heads=4,
        num_key_value_heads=2, vocab_size=len(tok)))
    gpt2 = GPT2LMHeadModel(GPT2Config(n_embd=32, n_layer=2, n_head=4, vocab_size=len(tok)))
    return {
        "missing": (root / "nowhere", "does not exist"),
        "no-config": (no_config, "no adapter_config.json"),
        "truncated": (truncated, "truncated or corrupt"),
        "other-width": (make_adapter(wider, root / "wider", 3), "does not fit the base model"),
        "other-depth": (make_adapter(deeper, root / "deeper", 4), "does not fit the base model"),
        "other-modules": (make_adapter(gpt2, root / "gpt2", 5, ["c_attn"]), "does not fit"),
    }


@pytest.mark.parametrize(
    "case", ["missing", "no-config", "truncated", "other-width", "other-depth", "other-modules"]
)
@pytest.mark.parametrize("first", [True, False], ids=["first-load", "after-one"])
def test_bad_adapter_is_refused_and_nothing_changes(generator, adapters, broken, case, first):
    if not first:
        generator.load_adapter("one", adapters["one"])
        generator.activate("one")
    before_text = answer(generator)
    before_model = generator.loaded.model
    before_modules = [(n, type(m)) for n, m in before_model.named_modules()]
    grads = [p.requires_grad for p in generator._base.parameters()]

    folder, reason = broken[case]
    with pytest.raises(AdapterError, match=reason) as info:
        generator.load_adapter("bad", folder)
    assert str(folder) in str(info.value)

    assert generator.loaded_versions() == (["base"] if first else ["base", "one"])
    assert generator.loaded.model is before_model
    assert [(n, type(m)) for n, m in generator.loaded.model.named_modules()] == before_modules
    assert [p.requires_grad for p in generator._base.parameters()] == grads
    assert answer(generator) == before_text
    if not first:
        assert answer(generator, "base") != before_text  # "one" really is still in use


def test_unknown_and_reserved_names(generator, adapters):
    with pytest.raises(AdapterError, match='No adapter named "nope"'):
        generator.activate("nope")
    with pytest.raises(AdapterError, match='No adapter named "nope"'):
        generator.stream(ASK, GREEDY, version="nope")
    with pytest.raises(AdapterError, match="reserved|means the model without"):
        generator.load_adapter("base", adapters["one"])
    generator.load_adapter("one", adapters["one"])
    with pytest.raises(AdapterError, match="already loaded"):
        generator.load_adapter("one", adapters["two"])


def test_unload_active_adapter_falls_back_to_base(generator, adapters):
    base = answer(generator)
    base_model = generator.loaded.model
    generator.load_adapter("dpo-v1.2", adapters["one"])  # a '.' peft itself would refuse
    generator.load_adapter("two", adapters["two"])
    generator.activate("dpo-v1.2")
    adapted = answer(generator)
    assert adapted != base

    generator.unload_adapter("dpo-v1.2")
    assert generator.model_version == "base" and generator.loaded_versions() == ["base", "two"]
    assert answer(generator) == base
    with pytest.raises(AdapterError):
        generator.stream(ASK, GREEDY, version="dpo-v1.2")

    generator.unload_adapter("two")  # the last one: the plain model again, no peft left
    assert generator.loaded.model is base_model
    assert not any("lora" in n for n, _ in base_model.named_modules())
    assert answer(generator) == base
    generator.load_adapter("again", adapters["one"])  # wraps anew
    assert answer(generator, "again") == adapted
