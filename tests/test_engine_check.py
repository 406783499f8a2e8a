"""The llama.cpp engine is tried in a child process before the app serves with it: a crash
there (the AMX layout's segfault, an illegal instruction from a build for another CPU, a hang)
falls back to another weight layout or to the transformers engine, with a notice that says
why, and the app answers. Crashes are injected into the child (tests/crash_probe.py); the
layouts that do not crash run the real probe on the real embedded model."""

from __future__ import annotations

import json

import pytest

from assistant.bootstrap import build_engine
from assistant.cpu import CpuInfo, parse_cpuinfo
from assistant.engines import llamacpp_check
from assistant.engines.llamacpp_check import check, describe_exit, layouts_to_try
from assistant.engines.generation import GenerationParams, setup_of
from assistant.engines.model_files import embedded_gguf
from tests.engines import require_llama

AMX_BUILD = "CPU : AVX2 = 1 | AVX512 = 1 | AVX512_BF16 = 1 | AMX_INT8 = 1 | REPACK = 1 |"
AVX512_BUILD = "CPU : AVX2 = 1 | AVX512 = 1 | AVX512_BF16 = 1 | REPACK = 1 |"
XEON = CpuInfo("Intel(R) Xeon(R) Platinum 8481C", frozenset(
    "avx2 avx512f avx512_bf16 avx512_vnni amx_bf16 amx_int8 amx_tile".split()), 2)
EPYC = CpuInfo("AMD EPYC", frozenset("avx2 avx512f avx512_bf16 avx512_vnni".split()), 2)
AVX2 = CpuInfo("Intel(R) Xeon(R) CPU @ 2.20GHz", frozenset("sse4_2 avx avx2 fma".split()), 2)
QUESTION = [{"role": "system", "content": "You are a helpful assistant. Answer concisely and truthfully."},
            {"role": "user", "content": "What is the capital of France?"}]


def test_the_layouts_tried_follow_the_cpu_and_the_build():
    assert layouts_to_try("auto", XEON, AMX_BUILD) == ["plain"]  # the AMX layout is not tried
    assert layouts_to_try("auto", XEON, AVX512_BUILD) == ["repacked", "plain"]  # built without AMX
    assert layouts_to_try("auto", EPYC, AVX512_BUILD) == ["repacked", "plain"]
    assert layouts_to_try("auto", AVX2, None) == ["repacked", "plain"]
    assert layouts_to_try("repacked", XEON, AMX_BUILD) == ["repacked", "plain"]  # asked: still checked
    assert layouts_to_try("plain", EPYC, AVX512_BUILD) == ["plain"]


def test_cpu_features_are_read_from_cpuinfo():
    text = ("processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) Platinum "
            "8481C CPU @ 2.70GHz\nflags\t\t: fpu sse2 avx avx2 avx512f avx512_bf16 amx_bf16 "
            "amx_tile amx_int8\n\nprocessor\t: 1\nmodel name\t: ignored\n")
    cpu = parse_cpuinfo(text, 2)
    assert cpu.model == "Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz"
    assert cpu.amx and cpu.avx512_bf16 and cpu.avx2
    assert cpu.line().endswith("2 cores: AVX2 AVX-512 AVX512_BF16 AMX")
    plain = parse_cpuinfo("model name : Old\nflags : sse2 avx\n", 1)
    assert not plain.amx and not plain.avx2 and plain.line().endswith("no AVX2 (no AMX)")
    assert parse_cpuinfo("", 1).model  # no /proc/cpuinfo: still a name, and no features


def test_exits_are_described_for_people():
    assert describe_exit(-11, "") == "crashed with SIGSEGV"
    assert "compiled for another CPU" in describe_exit(-4, "")
    assert describe_exit(1, "Traceback...\nValueError: bad file\n") == "failed: ValueError: bad file"


@pytest.fixture
def probe(monkeypatch, request):
    """The check's child process is tests/crash_probe.py; ``crash(layouts, signal)`` arms it.
    Outcomes go to a cache file of this test's own (the model cache is shared by the run)."""
    require_llama()
    monkeypatch.setattr(llamacpp_check, "PROBE_MODULE", "tests.crash_probe")
    monkeypatch.setattr(llamacpp_check, "CACHE_FILE", f"checks-{request.node.name}.json")

    def crash(layouts: str, how: str = "SIGSEGV") -> None:
        monkeypatch.setenv("TEST_CRASH_LAYOUTS", layouts)
        monkeypatch.setenv("TEST_CRASH_SIGNAL", how)
    crash("")
    return crash


@pytest.mark.slow
def test_a_layout_that_crashes_is_skipped_and_the_outcome_cached(probe, tmp_path):
    probe("repacked")
    first = check(embedded_gguf(), "auto", 2, tmp_path)
    assert first.layout == "plain"
    assert [(a.layout, a.ok, a.cached) for a in first.attempts] == [
        ("repacked", False, False), ("plain", True, False)]
    assert first.failures() == "repacked layout: crashed with SIGSEGV"
    assert first.attempts[1].detail.startswith("answered ")
    assert first.seconds > 0
    # the next start reads both outcomes from the cache: no child process, no crash
    probe("repacked,plain")
    again = check(embedded_gguf(), "auto", 2, tmp_path)
    assert again.layout == "plain" and again.seconds == 0
    assert [a.cached for a in again.attempts] == [True, True]
    # another thread count is another configuration: checked anew
    assert check(embedded_gguf(), "auto", 1, tmp_path).layout is None
    assert len(json.loads((tmp_path / llamacpp_check.CACHE_FILE).read_text())) == 4


@pytest.mark.slow
def test_an_engine_that_crashes_in_one_layout_serves_in_the_other(probe, llama_settings):
    probe("repacked")
    engine = build_engine(llama_settings)
    gen = engine.generator
    try:
        assert gen.layout == "plain"
        assert setup_of(gen).startswith("plain weight layout, checked on this CPU in ")
        assert len(engine.notices) == 1 and "repacked layout: crashed with SIGSEGV" in engine.notices[0]
        answer = "".join(gen.stream(QUESTION, GenerationParams(temperature=0, max_new_tokens=12)))
        assert "Paris" in answer
    finally:
        gen.close()


@pytest.mark.slow
@pytest.mark.parametrize("how, said", [("SIGSEGV", "crashed with SIGSEGV"),
                                       ("SIGILL", "compiled for another CPU")])
def test_an_engine_that_crashes_in_every_layout_falls_back_to_transformers(probe, llama_settings, how, said):
    probe("repacked,plain", how)
    engine = build_engine(llama_settings)
    assert engine.generator.engine == "transformers"
    notice = engine.notices[0]
    assert notice.startswith("llama.cpp could not answer a test question with SmolLM2-135M-Instruct.Q4_1.gguf")
    assert said in notice and "The chat runs on the slower transformers engine instead" in notice
    answer = "".join(engine.generator.stream(QUESTION, GenerationParams(temperature=0, max_new_tokens=12)))
    assert "Paris" in answer


@pytest.mark.slow
def test_a_hung_check_counts_as_a_failure(probe, monkeypatch, tmp_path):
    probe("repacked", "hang")
    # Long enough for the plain layout to answer on a loaded 2-core machine (3 s was not).
    monkeypatch.setattr(llamacpp_check, "TIMEOUT_S", 12.0)
    result = check(embedded_gguf(), "repacked", 2, tmp_path)
    assert result.layout == "plain"
    assert result.failures() == "repacked layout: did not answer within 12 s"
    # a hang may be a loaded machine, not the layout: only the answer is cached
    cached = json.loads((tmp_path / llamacpp_check.CACHE_FILE).read_text())
    assert [v["layout"] for v in cached.values()] == ["plain"]


@pytest.mark.slow
def test_the_check_can_be_turned_off(probe, llama_settings):
    probe("repacked,plain")  # would fall back, but nothing is checked
    llama_settings.llamacpp.check = False
    llama_settings.llamacpp.layout = "plain"
    engine = build_engine(llama_settings)
    try:
        assert engine.generator.engine == "llama.cpp" and engine.generator.layout == "plain"
        assert engine.notices == []
        assert not (llama_settings.resolved_model_cache_dir / llamacpp_check.CACHE_FILE).exists()
    finally:
        engine.generator.close()


@pytest.mark.slow
def test_both_layouts_answer_alike_on_this_cpu(embedded_checkpoint):
    """The plain layout is the same model: greedy answers match the repacked layout's."""
    require_llama()
    from assistant.engines.llamacpp import LlamaCppGenerator

    params = GenerationParams(temperature=0, max_new_tokens=16)
    answers = []
    for layout in ("repacked", "plain"):
        gen = LlamaCppGenerator(embedded_gguf(), "embedded", 1024, layout=layout)
        answers.append("".join(gen.stream(QUESTION, params)))
        gen.close()
    assert answers[0] == answers[1] and "Paris" in answers[0]
