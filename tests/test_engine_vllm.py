"""The product on a real vLLM (its CPU build, on 127.0.0.1; tests/vllm_server.py): a version
trained here pushed at runtime when it is activated and unloaded when no longer needed, the
server killed mid-answer and back, and the bad input a vLLM deployment meets (an adapter
above ``--max-lora-rank`` or for another model, more versions than ``--max-loras``, a prompt
over ``--max-model-len``, runtime loading off). The engine's shared behaviours (stream, stop,
limits, token counts through ``/tokenize``, adapters) run in test_engine_contract.py and
test_engine_openai.py; this module runs after them and stops the server."""

from __future__ import annotations

import threading
import time
from dataclasses import replace

import pytest

from assistant.errors import AdapterError, EngineUnavailable, GenerationFailed
from assistant.engines.generation import GenerationParams
from tests.vllm_server import BASE

pytestmark = pytest.mark.slow

SYSTEM = "You are a helpful assistant. Answer concisely and truthfully."
GREEDY = GenerationParams(temperature=0.0, top_p=1.0, max_new_tokens=24, system_prompt=SYSTEM)
LONG = GenerationParams(temperature=0.0, top_p=1.0, max_new_tokens=300, system_prompt=SYSTEM)
QUESTION = "What is the capital of France?"
STORY = "Write a long story about a dragon and a knight."


@pytest.fixture(scope="module", autouse=True)
def stop_vllm_after(vllm_session):
    """The last module that uses the run's vLLM: stop it afterwards (its memory back)."""
    yield
    vllm_session.stop()


def ask(text: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": text}]


def served(server) -> list[str]:
    import json
    import urllib.request

    with urllib.request.urlopen(f"{server.url}/models", timeout=10) as r:
        return [m["id"] for m in json.load(r)["data"]]


def generator(server, workers: int = 4):
    from assistant.engines.openai_server import OpenAIGenerator

    return OpenAIGenerator(server.url, model=BASE, workers=workers, timeout_s=60)


# -- versions trained here ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def product(vllm_session, model_cache, embedded_adapters, tmp_path_factory):
    """Settings on ASSISTANT_ENGINE=openai and the run's vLLM, a database with real hh-rlhf
    rows, a version trained here (a few TRL SFT steps on the real embedded model, registered
    in the registry: v1) and the two random adapters registered as versions (v2, v3)."""
    import shutil

    from alignment.importers import import_hh_rlhf
    from alignment.training import make_config, train
    from assistant.bootstrap import build_engine, open_database, open_registry
    from assistant.config import OpenAISettings, Settings
    from assistant.storage import Database, upgrade
    from tests.shared_data import HH_FILE, shared_file

    server = vllm_session.ensure(runtime_lora=True)
    root = tmp_path_factory.mktemp("vllm-product")
    settings = Settings(data_dir=root / "data", model_cache_dir=model_cache, engine="openai",
                        openai=OpenAISettings(base_url=server.url, model=BASE, timeout_s=60,
                                              max_adapters=2))
    settings.data_dir.mkdir(parents=True)
    upgrade(Database(settings.resolved_database_url))
    db = open_database(settings)
    lines = shared_file(HH_FILE).read_text(encoding="utf-8").splitlines()
    short = root / "hh-short.jsonl"
    short.write_text("\n".join([line for line in lines if len(line) < 700][:40]) + "\n")
    import_hh_rlhf(db, short)
    config = make_config("sft", str(root / "sft"), max_steps=3, per_device_train_batch_size=4,
                         gradient_accumulation_steps=1, lora_r=8, max_length=96,
                         learning_rate=5e-2, eval_rows=0)
    trained = train(settings, "sft", config, db=db).version
    registry = open_registry(settings, db)
    fingerprint = build_engine(settings).fingerprint()
    others = []
    for name in ("v1", "v2"):
        staging = registry.staging_dir()
        shutil.copytree(embedded_adapters[name], staging / "adapter")
        others.append(registry.register(
            staging, kind="dpo", base_model=BASE, base_fingerprint=fingerprint, parent="base",
            data={}, config={}, metrics={}).name)
    return settings, db, trained.name, others


def test_a_version_trained_here_is_pushed_on_activation_and_unloaded_when_not_needed(product, vllm_server):
    from assistant.bootstrap import build_chat_service, open_registry

    settings, db, trained, others = product
    service = build_chat_service(settings, db)
    registry = open_registry(settings, db)
    assert service.generator.server == "vLLM"
    base = service.send(None, STORY, GREEDY)
    base_text = "".join(base)
    assert base.message.record.model_version == "base" and trained not in served(vllm_server)

    registry.activate(trained)  # as the Models page and `assistant models activate` do
    tuned = service.send(None, STORY, GREEDY)
    tuned_text = "".join(tuned)
    assert tuned.message.record.model_version == trained == service.version
    assert trained in served(vllm_server), "activation pushes the version to vLLM"
    assert tuned_text != base_text, "the trained version answers differently from base"

    # Two more versions, with room for two pushed at once: the least recently used one that
    # is not active (the trained one) is unloaded from the server.
    for name in others:
        registry.activate(name)
        assert "".join(service.send(None, STORY, GREEDY)) and service.version == name
    on_server = served(vllm_server)
    assert set(others) <= set(on_server) and trained not in on_server
    assert service.generator.loaded_versions() == ["base", *others]

    registry.activate(trained)  # asked for again: pushed again, answers as before
    again = service.send(None, STORY, GREEDY)
    assert "".join(again) == tuned_text and trained in served(vllm_server)
    registry.activate("base")
    service.generator.close()


def test_killed_mid_answer_keeps_the_question_and_answer_again_works_once_back(product, vllm_server):
    """SIGKILL mid-answer (a crash, the OOM killer): a clear error, the question and the text
    so far kept; once vLLM is back, the active version (which the new server has never seen)
    is pushed again and "answer again" answers."""
    from assistant.bootstrap import build_chat_service, open_registry

    settings, db, trained, _ = product
    registry = open_registry(settings, db)
    registry.activate(trained)
    service = build_chat_service(settings, db)
    first = service.send(None, QUESTION, GREEDY)
    assert "".join(first) and service.version == trained

    reply = service.send(first.conversation_id, STORY, LONG)
    chunks = iter(reply)
    next(chunks)
    vllm_server.kill()
    with pytest.raises((GenerationFailed, EngineUnavailable)) as err:
        list(chunks)
    assert "model server" in str(err.value)
    messages = service.store.messages(first.conversation_id)
    question = reply.question
    assert any(m.id == question.id and m.content == STORY for m in messages)

    vllm_server.start()
    assert trained not in served(vllm_server)
    again = service.answer_again(question.id, GREEDY)
    assert "".join(again) and again.message.reply_to_id == question.id
    assert again.message.record.model_version == trained and trained in served(vllm_server)
    registry.activate("base")
    service.generator.close()


def test_activation_is_refused_with_the_reason_when_runtime_loading_is_off(product, vllm_session):
    from assistant.bootstrap import build_chat_service, open_registry

    settings, db, trained, _ = product
    vllm_session.ensure(runtime_lora=False)
    registry = open_registry(settings, db)
    registry.activate("base")
    service = build_chat_service(settings, db)
    assert "".join(service.send(None, QUESTION, GREEDY)) and service.version == "base"
    registry.activate(trained)
    reply = service.send(None, QUESTION, GREEDY)
    assert "Paris" in "".join(reply) and reply.message.record.model_version == "base"
    assert service.version == "base"
    assert any("could not be loaded" in n and "VLLM_ALLOW_RUNTIME_LORA_UPDATING" in n
               for n in service.notices), service.notices
    registry.activate("base")
    service.generator.close()


# -- bad input ----------------------------------------------------------------------------------
def test_an_adapter_above_the_max_lora_rank_is_refused_and_nothing_changes(vllm_server, embedded_checkpoint, tmp_path):
    from tests.engines import make_lora

    gen = generator(vllm_server)
    wide = make_lora(embedded_checkpoint, tmp_path / "r32", seed=3, r=32)
    with pytest.raises(AdapterError, match="max-lora-rank") as err:
        gen.load_adapter("wide", wide)
    assert "32" in str(err.value) or "rank" in str(err.value)
    assert gen.loaded_versions() == ["base"] and "wide" not in served(vllm_server)
    assert "Paris" in "".join(gen.stream(ask(QUESTION), GREEDY))


def test_a_version_for_another_model_is_refused_before_it_reaches_the_server(
        product, vllm_server, tiny_model_dir):
    """vLLM 0.32 (CPU) takes a LoRA folder made for another model at /v1/load_lora_adapter
    without a word; the product refuses it first, by the base model's fingerprint that every
    version records, with the reason, and the chat stays on the version it had."""
    import shutil

    from assistant.bootstrap import build_chat_service, open_registry
    from assistant.engines.models import checkpoint_fingerprint
    from tests.engines import make_lora

    settings, db, _, _ = product
    registry = open_registry(settings, db)
    staging = registry.staging_dir()
    shutil.copytree(make_lora(tiny_model_dir, staging.parent / "other", seed=4), staging / "adapter")
    other = registry.register(staging, kind="dpo", base_model="tiny", parent="base",
                              base_fingerprint=checkpoint_fingerprint(tiny_model_dir),
                              data={}, config={}, metrics={}).name
    service = build_chat_service(settings, db)
    registry.activate(other)
    reply = service.send(None, QUESTION, GREEDY)
    assert "Paris" in "".join(reply) and reply.message.record.model_version == "base"
    assert any(other in n and "could not be loaded" in n and "another base model" in n
               for n in service.notices), service.notices
    assert other not in served(vllm_server)
    registry.activate("base")
    service.generator.close()


def test_more_versions_at_once_than_max_loras_all_answer(vllm_server, embedded_adapters,
                                                         embedded_checkpoint, tmp_path):
    """vLLM started with --max-loras 2 and three versions asked at once, with base: vLLM
    schedules them in turns; every answer comes, each its version's."""
    from tests.engines import make_lora

    gen = generator(vllm_server)
    adapters = {"v1": embedded_adapters["v1"], "v2": embedded_adapters["v2"],
                "v3": make_lora(embedded_checkpoint, tmp_path / "v3", seed=5)}
    for name, path in adapters.items():
        gen.load_adapter(name, path)
    versions = ["base", *adapters]
    alone = {v: "".join(gen.stream(ask(STORY), GREEDY, version=v)) for v in versions}
    assert len(set(alone.values())) == len(versions), f"each version answers its own way: {alone}"
    streams = {v: gen.stream(ask(STORY), GREEDY, version=v) for v in versions}
    texts = {v: "".join(s) for v, s in streams.items()}
    for v, s in streams.items():
        assert texts[v] and s.stats.finish_reason in ("stop", "length"), v
    assert len(set(texts.values())) == len(versions)
    gen.close()


def test_a_prompt_over_max_model_len_is_a_clear_error_and_the_chat_fits_its_window(
        vllm_server, tmp_path, model_cache):
    from assistant.bootstrap import build_chat_service
    from assistant.config import OpenAISettings, Settings
    from assistant.errors import MessageTooLong

    gen = generator(vllm_server)
    assert gen.context_window == 2048  # what the server says: --max-model-len
    huge = ask("Summarise this. " + "The cat sat on the mat. " * 500)
    with pytest.raises(GenerationFailed, match="refused the request") as err:
        "".join(gen.stream(huge, GREEDY))
    assert "2048" in str(err.value)  # vLLM's own reason
    gen.close()

    # The chat counts with the server (/tokenize) and keeps within its window: a message too
    # long alone is refused before anything is sent; a long conversation drops its oldest turns.
    settings = Settings(data_dir=tmp_path / "data", model_cache_dir=model_cache, engine="openai",
                        openai=OpenAISettings(base_url=vllm_server.url, model=BASE))
    service = build_chat_service(settings)
    with pytest.raises(MessageTooLong):
        service.send(None, "Summarise this. " + "The cat sat on the mat. " * 400, GREEDY)
    short = replace(GREEDY, max_new_tokens=8)
    conversation = None
    for topic in ("cats", "dogs", "birds"):
        reply = service.send(conversation, f"Tell me about {topic}. " + "Some words here. " * 200, short)
        assert "".join(reply)
        conversation = reply.conversation_id
    record = reply.message.record
    assert record.trimmed_turns > 0 and record.prompt_tokens + 8 <= 2048
    service.generator.close()


def test_compare_mode_answers_a_and_b_at_once(vllm_server, embedded_adapters, tmp_path, model_cache):
    """Compare mode on vLLM: both answers stream together (vLLM batches them), and each is
    the one its version gives alone."""
    from assistant.chat.service import ChatService
    from assistant.config import Settings
    from assistant.chat.side_by_side import interleave
    from assistant.storage import ConversationStore, Database, upgrade

    settings = Settings(data_dir=tmp_path / "data", model_cache_dir=model_cache)
    db = Database(settings.resolved_database_url)
    upgrade(db)
    gen = generator(vllm_server)
    gen.load_adapter("v1", embedded_adapters["v1"])
    service = ChatService(ConversationStore(db), gen, settings)
    alone = {v: "".join(service.send(None, STORY, LONG, version=v)) for v in ("base", "v1")}
    assert service.compare_at_once()
    a, b = service.compare(None, STORY, LONG, versions=("base", "v1"))
    arrivals = []
    started = time.perf_counter()
    for piece in interleave((a, b), at_once=True):
        assert not piece.error
        arrivals.append((piece.side, time.perf_counter() - started))
    sides = [side for side, _ in arrivals]
    # Interleaved: B's text arrives before A's answer is done, not after it.
    last_a = max(i for i, s in enumerate(sides) if s == sides[0])
    first_b = min(i for i, s in enumerate(sides) if s != sides[0])
    assert first_b < last_a, "the second answer waited for the first"
    # Each side is its version's: they differ, as base and v1 do alone. (Not word for word
    # the answer alone: vLLM's batched bf16 arithmetic differs from one at a time, and greedy
    # answers part ways within a few words; the contract test checks v1 alone.)
    assert alone["base"] != alone["v1"] and a.message.content != b.message.content
    assert all(reply.message.content.strip() for reply in (a, b))
    assert {a.message.record.model_version, b.message.record.model_version} == {"base", "v1"}
    gen.close()
    db.engine.dispose()


def test_without_vllm_the_launcher_says_what_to_run(tmp_path):
    from assistant.config import Settings, VllmSettings
    from assistant.engines.vllm_launch import VllmNotInstalled, launch

    settings = Settings(data_dir=tmp_path, vllm=VllmSettings(python=tmp_path / "none/bin/python"))
    with pytest.raises(VllmNotInstalled, match="make vllm") as err:
        launch(settings, model="anything")
    assert "ASSISTANT_VLLM__PYTHON" in str(err.value)


def test_a_server_that_does_not_start_says_why(vllm_server, tmp_path):
    """vLLM given a model folder that is not one: it exits, and the error carries its log."""
    from assistant.config import Settings, VllmSettings
    from assistant.engines.vllm_launch import VllmDidNotStart, start
    from tests.llama_server import free_port
    from tests.vllm_server import PYTHON

    (tmp_path / "not-a-model").mkdir()
    settings = Settings(data_dir=tmp_path, vllm=VllmSettings(python=PYTHON))
    with pytest.raises(VllmDidNotStart, match="exited") as err:
        start(settings, tmp_path / "vllm.log", model=str(tmp_path / "not-a-model"),
              port=free_port())
    assert "not-a-model" in str(err.value)


def test_concurrent_chats_share_the_server(vllm_server):
    """Eight chats at once (the product's workers) all answer."""
    gen = generator(vllm_server, workers=8)
    results: list[str] = []
    lock = threading.Lock()

    def chat() -> None:
        text = "".join(gen.stream(ask(QUESTION), GREEDY))
        with lock:
            results.append(text)

    threads = [threading.Thread(target=chat) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert len(results) == 8 and all("Paris" in r for r in results)
    gen.close()


def test_the_launcher_runs_the_app_command_on_vllm_and_a_stop_stops_both(model_cache, tmp_path):
    """`make run-vllm`'s launcher: vLLM for ASSISTANT_MODEL (the embedded model), then the
    command with the openai engine's settings pointing at it; stopped (SIGTERM: kill, a
    service manager), it stops the command and vLLM, which runs in a session of its own."""
    import json
    import os
    import signal
    import subprocess
    import sys
    import urllib.request

    from tests.llama_server import free_port
    from tests.vllm_server import PYTHON, require_vllm

    require_vllm()
    port = free_port()
    seen = tmp_path / "env.json"
    app = ("import json, os, sys, time; json.dump({k: v for k, v in os.environ.items() "
           "if k.startswith('ASSISTANT_')}, open(sys.argv[1], 'w')); time.sleep(600)")
    env = {**os.environ, "ASSISTANT_DATA_DIR": str(tmp_path / "data"),
           "ASSISTANT_MODEL_CACHE_DIR": str(model_cache), "ASSISTANT_VLLM__PYTHON": str(PYTHON),
           "ASSISTANT_VLLM__PORT": str(port)}
    launcher = subprocess.Popen(
        [sys.executable, "-m", "assistant.engines.vllm_launch", "--", sys.executable, "-c", app,
         str(seen)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 300
        while not seen.exists() or not seen.read_text():
            assert launcher.poll() is None, launcher.stdout.read()
            assert time.monotonic() < deadline, "the command never ran"
            time.sleep(0.5)
        told = json.loads(seen.read_text())
        url = f"http://127.0.0.1:{port}/v1"
        assert told["ASSISTANT_ENGINE"] == "openai" and told["ASSISTANT_OPENAI__BASE_URL"] == url
        assert told["ASSISTANT_OPENAI__MODEL"] == BASE
        with urllib.request.urlopen(f"{url}/models", timeout=10) as r:
            assert [m["id"] for m in json.load(r)["data"]] == [BASE]
        launcher.send_signal(signal.SIGTERM)
        assert launcher.wait(timeout=60) != 0
        out = launcher.stdout.read()
        assert f"vLLM serves {BASE} at {url}" in out
        with pytest.raises(OSError):
            urllib.request.urlopen(f"{url}/models", timeout=5)
    finally:
        if launcher.poll() is None:
            launcher.kill()


def test_a_child_tied_to_the_launcher_dies_with_it_even_of_sigkill(tmp_path):
    """The launcher starts vLLM and the app tied to it (PR_SET_PDEATHSIG): killed outright,
    it cannot stop them itself, and before they lived on, vLLM holding its port."""
    import os
    import signal
    import subprocess
    import sys

    pid_file = tmp_path / "child.pid"
    parent = subprocess.Popen([sys.executable, "-c", (
        "import subprocess, sys, time; from assistant.engines.vllm_launch import die_with_parent; "
        "c = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'], "
        "start_new_session=True, preexec_fn=die_with_parent); "
        f"open({str(pid_file)!r}, 'w').write(str(c.pid)); time.sleep(600)")])
    try:
        deadline = time.monotonic() + 60
        while not (pid_file.exists() and pid_file.read_text()):
            assert time.monotonic() < deadline and parent.poll() is None
            time.sleep(0.1)
        child = int(pid_file.read_text())
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(timeout=10)
        deadline = time.monotonic() + 30
        while os.path.exists(f"/proc/{child}") and "Z" not in open(f"/proc/{child}/stat").read().split()[2]:
            assert time.monotonic() < deadline, "the tied child outlived its killed parent"
            time.sleep(0.1)
    finally:
        if parent.poll() is None:
            parent.kill()
