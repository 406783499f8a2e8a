"""A running ChatService switches model versions live: the base stays loaded, trained adapters
are loaded with peft, every answer records the version that wrote it, and a version that
cannot be loaded never takes the chat down."""

from __future__ import annotations

import random

import pytest
import torch

from alignment.training import make_config, train
from assistant.bootstrap import build_chat_service, open_registry
from assistant.engines.generation import GenerationParams

# The tiny random model's greedy answer is a run of newlines whatever the adapter; sampling
# with a fixed seed shows its whole distribution instead: same version, same text.
SAMPLED = GenerationParams(temperature=1.0, top_p=1.0, max_new_tokens=12, system_prompt="")
QUESTION = "What is the capital of France?"


@pytest.fixture
def trained(tiny_settings, feedback_db, tmp_path):
    """An SFT version trained hard enough (lr 5e-2) that its answers differ."""
    config = make_config("sft", str(tmp_path / "sft"), max_steps=4, per_device_train_batch_size=4,
                         gradient_accumulation_steps=1, lora_r=8, max_length=96, learning_rate=5e-2, eval_rows=0)
    return train(tiny_settings, "sft", config, db=feedback_db).version


def answer(service, conversation_id=None, version=None):
    service.sync_version()  # loading an adapter draws random numbers (peft's init): before the seed
    torch.manual_seed(0)
    reply = service.send(conversation_id, QUESTION, SAMPLED, version=version)
    text = "".join(reply)
    return text, reply.message


def test_switching_versions_on_a_live_service(tiny_settings, feedback_db, trained):
    service = build_chat_service(tiny_settings, feedback_db)
    registry = open_registry(tiny_settings, feedback_db)
    base_text, first = answer(service)
    assert first.record.model_version == "base" and base_text

    # Activated elsewhere (the CLI, another session): the next answer uses it.
    registry.activate(trained.name)
    tuned_text, second = answer(service)
    assert second.record.model_version == trained.name == service.version
    assert tuned_text != base_text, "the trained adapter must change the answer"

    registry.rollback()
    again, third = answer(service)
    assert third.record.model_version == "base" and again == base_text  # bit-for-bit the base

    # Compare mode pits two versions; sides are shuffled, versions recorded per answer.
    a, b = service.compare(None, QUESTION, SAMPLED, versions=("base", trained.name), rng=random.Random(1))
    texts = {r.message.record.model_version: t for r, t in ((a, "".join(a)), (b, "".join(b)))}
    assert set(texts) == {"base", trained.name}
    assert service.version == "base"  # comparing does not switch the chat


def test_a_version_that_cannot_load_leaves_the_chat_as_it_was(tiny_settings, feedback_db, trained):
    service = build_chat_service(tiny_settings, feedback_db)
    registry = open_registry(tiny_settings, feedback_db)
    registry.activate(trained.name)
    good_text, _ = answer(service)
    assert service.version == trained.name

    # A second version whose adapter file is damaged (a disk error, a crash while copying)
    # gets activated directly in the database.
    config = make_config("sft", str(tiny_settings.data_dir / "x"), max_steps=1, lora_r=8,
                         max_length=96, per_device_train_batch_size=4, gradient_accumulation_steps=1,
                         eval_rows=0)
    broken = train(tiny_settings, "sft", config, db=feedback_db).version
    weights = broken.adapter_dir / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    registry.activate(broken.name)

    assert service.sync_version() == trained.name  # what each answer does first: it fails
    text, message = answer(service)
    assert message.record.model_version == trained.name and text == good_text
    assert any(broken.name in n and "could not be loaded" in n for n in service.notices)
