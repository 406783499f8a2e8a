"""The OpenAI-compatible engine against real servers on 127.0.0.1: llama-cpp-python's own
``llama_cpp.server``, serving the embedded GGUF and one trained version under its name, and,
for the behaviours every server shares (``any_generator``), vLLM's CPU build as well (more
of vLLM in test_engine_vllm.py)."""

from __future__ import annotations

import threading
from dataclasses import replace

import pytest

from assistant.errors import AdapterError, EngineUnavailable
from assistant.engines.generation import GenerationParams
from tests.llama_server import BASE, embedded_server, free_port

pytestmark = pytest.mark.slow

SYSTEM = "You are a helpful assistant. Answer concisely and truthfully."  # the chat's default
GREEDY = GenerationParams(temperature=0.0, top_p=1.0, max_new_tokens=24, system_prompt=SYSTEM)


@pytest.fixture(scope="module")
def server(embedded_checkpoint, embedded_adapters, tmp_path_factory):
    from tests.engines import require_llama

    require_llama()
    from assistant.engines.conversion import convert_adapter

    lora = convert_adapter(embedded_adapters["v1"], embedded_checkpoint)
    srv = embedded_server(tmp_path_factory.mktemp("server"),
                          {"model_alias": "v1", "lora_path": str(lora)})
    yield srv
    srv.stop()


@pytest.fixture
def generator(server):
    from assistant.engines.llamacpp import GGUFVocab
    from assistant.engines.openai_server import OpenAIGenerator
    from assistant.engines.model_files import embedded_gguf

    vocab = GGUFVocab.open(embedded_gguf())
    return OpenAIGenerator(server.url, model=BASE, prompt_ids=vocab.prompt_ids,
                           specials=vocab.template.specials, workers=2,
                           prompt_text=vocab.template.prompt)


@pytest.fixture(params=["llama_cpp.server", "vllm"])
def any_generator(request):
    """The engine with the local tokenizer and template (as the product builds it when the
    model's files are here), on llama_cpp.server or on vLLM."""
    if request.param == "llama_cpp.server":
        return request.getfixturevalue("generator")
    from assistant.engines.llamacpp import GGUFVocab
    from assistant.engines.openai_server import OpenAIGenerator
    from assistant.engines.model_files import embedded_gguf
    from tests.vllm_server import BASE as VLLM_BASE

    vllm = request.getfixturevalue("vllm_server")
    vocab = GGUFVocab.open(embedded_gguf())
    return OpenAIGenerator(vllm.url, model=VLLM_BASE, prompt_ids=vocab.prompt_ids,
                           specials=vocab.template.specials, workers=2,
                           prompt_text=vocab.template.prompt)


def ask(text: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": text}]


def test_streams_an_answer_from_the_server(any_generator):
    generator = any_generator
    assert generator.engine in ("OpenAI-compatible server", "vLLM server")
    stream = generator.stream(ask("What is the capital of France?"), GREEDY)
    chunks = list(stream)
    assert "Paris" in "".join(chunks) and len(chunks) >= 3
    assert stream.stats.completion_tokens > 0 and stream.stats.ttft_ms is not None


def test_our_prompt_rendering_matches_the_servers(any_generator):
    """The server renders the chat template itself: it must count the tokens we count."""
    from openai import OpenAI

    generator = any_generator
    client = OpenAI(base_url=generator.base_url, api_key="x")
    conversations = [
        ask("What is the capital of France?"),
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
         {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "Name a fruit."}],
    ]
    for messages in conversations:
        done = client.chat.completions.create(model=generator.base_model, messages=messages, max_tokens=1,
                                              temperature=0)
        assert done.usage.prompt_tokens == generator.count_prompt_tokens(messages)


def test_the_token_limit_and_the_repetition_penalty_reach_the_server(any_generator):
    generator = any_generator
    story = ask("Write a very long story about a dragon.")
    cut = generator.stream(story, GREEDY)
    plain = "".join(cut)
    assert cut.stats.finish_reason == "length"
    penalised = "".join(generator.stream(story, replace(GREEDY, repetition_penalty=1.3)))
    assert penalised != plain  # the server's repeat_penalty
    done = generator.stream(ask("What is the capital of France?"), GREEDY)
    "".join(done)
    assert done.stats.finish_reason == "stop"


def test_stop_interrupts_the_answer(any_generator):
    generator = any_generator
    stream = generator.stream(ask("Write a very long story about a dragon."),
                              GenerationParams(temperature=0.0, max_new_tokens=300))
    it = iter(stream)
    next(it)
    stream.stop()
    assert stream.stats.stopped and stream.stats.completion_tokens < 300


def test_continue_carries_on_from_the_last_word(any_generator, store, settings):
    """Continue (llama_cpp.server has no continue_final_message): the prompt text, ending
    inside the cut answer, goes to /v1/completions. Greedy, the answer cut at 8 tokens and
    continued is what one 16-token answer says."""
    from assistant.chat.service import ChatService

    generator = any_generator
    story = "Write a very long story about a dragon."
    service = ChatService(store, generator, settings)
    reply = service.send(None, story, replace(GREEDY, max_new_tokens=8))
    first = "".join(reply)
    assert reply.message.record.cut_at_limit
    more = service.continue_answer(reply.message.id)
    added = "".join(more)
    assert added.strip() and more.message.content == first + added
    whole = "".join(generator.stream(ask(story), replace(GREEDY, max_new_tokens=16)))
    assert more.message.content == whole


def test_an_answer_the_server_cuts_short_is_an_error_that_keeps_its_text(tmp_path):
    """llama_cpp.server with its default interrupt_requests ends a streaming answer with
    [DONE] and no finish reason when another request arrives: not a finished answer."""
    from assistant.engines.llamacpp import GGUFVocab
    from assistant.engines.openai_server import OpenAIGenerator
    from assistant.errors import GenerationFailed
    from assistant.engines.model_files import embedded_gguf

    srv = embedded_server(tmp_path, interrupt_requests=True)
    try:
        vocab = GGUFVocab.open(embedded_gguf())
        gen = OpenAIGenerator(srv.url, model=BASE, prompt_ids=vocab.prompt_ids,
                              specials=vocab.template.specials, workers=2)
        long = GenerationParams(temperature=0.0, max_new_tokens=400, system_prompt=SYSTEM)
        first = gen.stream(ask("Write a very long story about a dragon."), long)
        it = iter(first)
        parts = [next(it), next(it)]
        second = gen.stream(ask("What is the capital of France?"), GREEDY)
        with pytest.raises(GenerationFailed, match="ended the answer before it was finished"):
            parts.extend(it)
        assert "".join(parts).strip() and first.stats.finish_reason is None
        assert "Paris" in "".join(second) and second.stats.finish_reason == "stop"
    finally:
        srv.stop()


def test_a_version_the_server_serves_is_chosen_by_the_model_name(generator):
    base = "".join(generator.stream(ask("Name three colours."), GREEDY))
    generator.load_adapter("v1", "/anywhere/the/server/has/it")
    assert generator.loaded_versions() == ["base", "v1"]
    tuned = "".join(generator.stream(ask("Name three colours."), GREEDY, version="v1"))
    assert tuned != base, "the server's v1 has the adapter applied"


def test_a_server_that_cannot_load_adapters_refuses_activation(generator, embedded_adapters):
    with pytest.raises(AdapterError, match="cannot load adapters at runtime"):
        generator.load_adapter("v2", embedded_adapters["v2"])
    assert generator.loaded_versions() == ["base"] and generator.model_version == "base"


def test_unreachable_server_is_a_clear_error():
    from assistant.engines.openai_server import OpenAIGenerator

    with pytest.raises(EngineUnavailable, match="unreachable"):
        OpenAIGenerator(f"http://127.0.0.1:{free_port()}/v1", timeout_s=2)


def test_server_down_mid_session_keeps_the_question_and_retry_works(server, tmp_path, model_cache):
    from assistant.bootstrap import build_chat_service
    from assistant.config import OpenAISettings, Settings

    settings = Settings(data_dir=tmp_path / "data", model_cache_dir=model_cache, engine="openai",
                        openai=OpenAISettings(base_url=server.url, model=BASE, timeout_s=10))
    service = build_chat_service(settings)
    first = service.send(None, "What is the capital of France?", GREEDY)
    assert "Paris" in "".join(first)
    assert first.message.record.engine == "OpenAI-compatible server (as served)"

    server.stop()
    try:
        reply = service.send(first.conversation_id, "And of Italy?", GREEDY)
        with pytest.raises(EngineUnavailable, match="unreachable"):
            "".join(reply)
        question = reply.question
        messages = service.store.messages(first.conversation_id)
        assert messages[-1].id == question.id and messages[-1].content == "And of Italy?"
    finally:
        server.start()
    again = service.answer_again(question.id, GREEDY)
    assert "".join(again) and again.message.reply_to_id == question.id


def test_a_server_that_cannot_count_tokens_needs_the_local_model(server):
    """llama_cpp.server has no /tokenize: without the model's files here, the engine says so
    at start instead of failing at the first answer."""
    from assistant.engines.openai_server import OpenAIGenerator

    with pytest.raises(EngineUnavailable, match="cannot count prompt tokens"):
        OpenAIGenerator(server.url, model=BASE)


def test_the_cli_refuses_a_version_the_server_cannot_load(server, tmp_path, model_cache,
                                                          embedded_adapters, monkeypatch):
    """`assistant models activate` loads the version into the chat's engine first, as the
    Models page does: a server without runtime adapters refuses it and nothing changes."""
    import shutil

    from click.testing import CliRunner

    from assistant.bootstrap import open_database, open_registry
    from assistant.cli import main
    from assistant.config import get_settings

    for key, value in {"ASSISTANT_DATA_DIR": str(tmp_path / "data"), "ASSISTANT_ENGINE": "openai",
                       "ASSISTANT_MODEL_CACHE_DIR": str(model_cache),
                       "ASSISTANT_OPENAI__BASE_URL": server.url,
                       "ASSISTANT_OPENAI__MODEL": BASE}.items():
        monkeypatch.setenv(key, value)
    settings = get_settings()
    assert CliRunner().invoke(main, ["db", "upgrade"]).exit_code == 0
    registry = open_registry(settings, open_database(settings))
    from assistant.bootstrap import build_engine

    fingerprint = build_engine(settings).fingerprint()
    for name in ("v1", "v2"):  # the server serves a "v1" of its own, not "v2"
        staging = registry.staging_dir()
        shutil.copytree(embedded_adapters[name], staging / "adapter")
        registry.register(staging, kind="dpo", base_model=BASE, base_fingerprint=fingerprint,
                          parent="base", data={}, config={}, metrics={})

    refused = CliRunner().invoke(main, ["models", "activate", "v2", "--force"])
    assert refused.exit_code == 1, refused.output
    assert "cannot load adapters at runtime" in refused.output
    assert registry.active() == "base"


def test_compare_mode_asks_for_both_answers_at_once(generator, store, settings):
    """Compare mode sends B's request while A's answer is still open, and each answer is the
    one its version gives alone. llama_cpp.server then answers them one after the other (it
    started with interrupt_requests off: on, it would cut A short when B arrives)."""
    import httpx2 as httpx  # the HTTP library of the openai client (openai 3.x)

    from assistant.chat.service import ChatService
    from assistant.chat.side_by_side import interleave

    generator.load_adapter("v1", "/anywhere/the/server/has/it")
    service = ChatService(store, generator, settings)
    question = "Name three colours."
    alone = {}
    for version in ("base", "v1"):
        reply = service.send(None, question, GREEDY, version=version)
        alone[version] = "".join(reply)

    # A's response waits (30 s at most) until B's request has gone out: B must not wait for A.
    sent, overlapped, lock = threading.Event(), [], threading.Lock()
    requests = []

    def on_request(request: httpx.Request) -> None:
        if request.url.path.endswith("/chat/completions"):
            with lock:
                requests.append(request)
                if len(requests) == 2:
                    sent.set()

    def on_response(response: httpx.Response) -> None:
        if response.request is requests[0]:
            overlapped.append(sent.wait(timeout=30))

    hooks = {"request": [on_request], "response": [on_response]}
    generator._client = generator._client.with_options(
        http_client=httpx.Client(event_hooks=hooks, timeout=60))
    assert generator.concurrent_streams() == 2 and service.compare_at_once()
    a, b = service.compare(None, question, GREEDY, versions=("base", "v1"))
    pieces = list(interleave((a, b), at_once=service.compare_at_once()))
    assert overlapped == [True], "B's request went out only after A's answer had ended"
    assert not any(p.error for p in pieces)
    for reply in (a, b):
        record = reply.message.record
        assert reply.message.content == alone[record.model_version]
        assert record.engine == "OpenAI-compatible server (as served)" and not record.stopped
    assert {a.message.record.model_version, b.message.record.model_version} == {"base", "v1"}
    service.record_comparison(a, b)
