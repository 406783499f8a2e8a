"""The whole loop on the real parts, on the default engine: a few TRL steps on the real
embedded model (real hh-rlhf rows), registered as a version, made servable for llama.cpp
while training (its adapter converted to GGUF), activated, and answering in the chat through
llama.cpp in-process, differently from base; rolled back, the chat answers as base again."""

from __future__ import annotations

import pytest

from assistant.engines.generation import GenerationParams

pytestmark = pytest.mark.slow

GREEDY = GenerationParams(temperature=0.0, top_p=1.0, max_new_tokens=24,
                          system_prompt="You are a helpful assistant.")
STORY = "Write a long story about a dragon and a knight."


def test_a_version_trained_on_the_embedded_model_serves_on_llamacpp(llama_settings, tmp_path):
    from alignment.importers import import_hh_rlhf
    from alignment.training import make_config, train
    from assistant.bootstrap import build_chat_service, open_database, open_registry
    from assistant.storage import Database, upgrade
    from tests.shared_data import HH_FILE, shared_file

    settings = llama_settings
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    upgrade(Database(settings.resolved_database_url))
    db = open_database(settings)
    lines = shared_file(HH_FILE).read_text(encoding="utf-8").splitlines()
    short = tmp_path / "hh-short.jsonl"
    short.write_text("\n".join([line for line in lines if len(line) < 700][:40]) + "\n")
    assert import_hh_rlhf(db, short).imported > 30
    config = make_config("sft", str(tmp_path / "sft"), max_steps=3, per_device_train_batch_size=4,
                         gradient_accumulation_steps=1, lora_r=8, max_length=96,
                         learning_rate=5e-2, eval_rows=0)
    version = train(settings, "sft", config, db=db).version
    # Made servable for the engine while training: the adapter as GGUF beside the peft files.
    assert list(version.adapter_dir.glob("*.gguf")), sorted(p.name for p in version.adapter_dir.iterdir())

    service = build_chat_service(settings, db)
    registry = open_registry(settings, db)
    base = service.send(None, STORY, GREEDY)
    base_text = "".join(base)
    assert base.message.record.engine.startswith("llama.cpp") and base_text

    registry.activate(version.name)
    tuned = service.send(None, STORY, GREEDY)
    tuned_text = "".join(tuned)
    assert tuned.message.record.model_version == version.name == service.version
    assert tuned.message.record.engine.startswith("llama.cpp")
    assert tuned_text and tuned_text != base_text, "the trained version answers differently"

    registry.rollback()
    again = service.send(None, STORY, GREEDY)
    assert "".join(again) == base_text and again.message.record.model_version == "base"
    service.generator.close()
