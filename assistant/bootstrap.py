"""Wire the parts together from settings: the one place the UI and the CLI build services."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from assistant.config import Settings
from assistant.storage import Database
from assistant.storage.migrate import ensure_current

log = logging.getLogger(__name__)

# The model-side modules import torch, transformers and FAISS (seconds): they are
# imported where used, so that `assistant db ...` and `assistant data ...` start fast.
if TYPE_CHECKING:
    from assistant.chat import ChatService
    from assistant.embedding import Embedder
    from assistant.engines.llamacpp_check import CheckResult
    from assistant.generation import Generator
    from assistant.index import SyncReport, VectorIndex
    from assistant.ingest import Ingestor
    from assistant.models import LoadedModel
    from assistant.retrieval import Retriever
    from assistant.storage.documents import DocumentStore


def open_database(settings: Settings) -> Database:
    db = Database(settings.resolved_database_url, settings.db_busy_timeout_s)
    ensure_current(db)
    return db


@dataclass
class Library:
    """The documents side: storage, embedding model, vector index, ingest and search."""

    store: DocumentStore
    embedder: Embedder
    index: VectorIndex
    ingestor: Ingestor
    retriever: Retriever
    sync: SyncReport
    notices: list[str] = field(default_factory=list)


def open_library(settings: Settings, db: Database, repair: bool = True) -> Library:
    """Load the embedding model and the index, and check the index against the database
    (rebuilding it from the stored vectors when they disagree, unless ``repair`` is off)."""
    from assistant.embedding import Embedder
    from assistant.index import VectorIndex
    from assistant.index_sync import sync_index
    from assistant.ingest import Ingestor
    from assistant.retrieval import Retriever
    from assistant.storage.documents import DocumentStore

    store = DocumentStore(db)
    embedder = Embedder(settings.retrieval.embedding_model)
    index = VectorIndex(settings.index_dir, embedder.dim, settings.retrieval.index_type, embedder.name)
    if repair:
        report = sync_index(store, index, embedder)
    else:
        report = index.check(store.chunk_ids(), store.embed_models())
    notices = []
    if not report.ok and repair:
        notices.append(
            f"The search index disagreed with the database ({report.missing} chunks missing, "
            f"{report.stale} stale{', other embedding model' if report.model_mismatch else ''}); "
            "it was rebuilt from the database."
        )
    r = settings.retrieval
    return Library(
        store, embedder, index, Ingestor(store, embedder, index, r),
        Retriever(store, embedder, index, r), report, notices,
    )


def open_registry(settings: Settings, db: Database):  # noqa: ANN201 - Registry
    from assistant.registry import Registry

    return Registry(db, settings.versions_dir)


@dataclass
class Engine:
    """A generator and what the service needs to know about its base model."""

    generator: Generator
    #: The base model's fingerprint (``models.fingerprint``), computed when first needed:
    #: adapters are checked against it before they are served.
    fingerprint: Callable[[], str]
    notices: list[str] = field(default_factory=list)


def _once(compute: Callable[[], str]) -> Callable[[], str]:
    value: list[str] = []

    def get() -> str:
        if not value:
            value.append(compute())
        return value[0]

    return get


def _transformers_engine(settings: Settings, loaded: LoadedModel | None = None) -> Engine:
    from assistant.engines.transformers import TransformersGenerator
    from assistant.models import load_model

    loaded = loaded or load_model(settings)
    generator = TransformersGenerator(loaded, workers=settings.generation_workers)
    return Engine(generator, lambda: loaded.fingerprint, list(loaded.notices))


def _llamacpp_engine(settings: Settings, loaded: LoadedModel | None = None) -> Engine:
    from assistant.engines import llamacpp

    if not llamacpp.available():
        engine = _transformers_engine(settings, loaded)
        engine.notices.insert(0, (
            "llama-cpp-python is not installed (`make setup` builds it; it needs a C++ compiler "
            "and cmake), so the chat runs on the slower transformers engine."))
        return engine
    original, model_id, checkpoint = _gguf_for(settings)
    c = settings.llamacpp
    threads = c.threads or llamacpp.default_threads()
    notices: list[str] = []
    gguf, weights = original, None
    if not Path(settings.model).expanduser().is_dir():  # a folder is converted to its format directly
        gguf, weights = _served_copy(original, c.weights, settings.resolved_model_cache_dir, notices)
    layout, setup = c.layout, None
    if c.check:
        from assistant.engines.llamacpp_check import check

        cache = settings.resolved_model_cache_dir
        result = check(gguf, c.layout, threads, cache)
        if result.layout is None and gguf != original:  # the copy failed: try the file itself
            notices.append(_failed(gguf, result, "The file itself is served instead."))
            gguf, weights = original, None
            result = check(gguf, c.layout, threads, cache)
        if result.layout is None:
            engine = _transformers_engine(settings, loaded)
            engine.notices[:0] = [_failed(gguf, result, (
                "The chat runs on the slower transformers engine instead. Rebuild llama.cpp "
                "(`make clean setup`) or set ASSISTANT_ENGINE=transformers to skip this check.")),
                *notices]
            return engine
        if result.failures():
            notices.append(_failed(gguf, result, f"It serves in the {result.layout} layout "
                                                 "instead (prompts are read more slowly)."))
        layout = result.layout
        when = (f"checked on this CPU in {result.seconds:.1f} s" if result.seconds
                else "checked on this CPU before")
        setup = f"{layout} weight layout, {when}"
    generator = llamacpp.LlamaCppGenerator(
        gguf, model_id, settings.context_window, threads, checkpoint, layout=layout)
    if weights:
        generator.weights = weights
    if setup:
        generator.setup = setup
    return Engine(generator, _once(lambda: _checkpoint_fingerprint(checkpoint())), notices)


def _failed(gguf: Path, result: CheckResult, then: str) -> str:
    """A notice: what failed when llama.cpp was tried with ``gguf`` here, and what now."""
    from assistant.cpu import cpu_info

    verb = "could not answer a test question with" if result.layout is None else "failed with"
    return f"llama.cpp {verb} {gguf.name} on this CPU ({cpu_info().line()}): {result.failures()}. {then}"


def _served_copy(gguf: Path, setting: str, cache: Path, notices: list[str]) -> tuple[Path, str | None]:
    """The file llama.cpp serves for ``gguf`` (a copy in another weight format, made once, when
    the ``weights`` setting asks for one), and its label for people ("Q4_1 as BF16"; None:
    the file's own)."""
    from assistant.conversion import requantize
    from assistant.engines import llamacpp
    from assistant.errors import ConversionFailed

    served = llamacpp.served_weights(gguf, setting)
    if served == "file":
        return gguf, None
    try:
        copy = requantize(gguf, cache / f"{gguf.stem}.{served}.gguf", served)
    except (ConversionFailed, OSError) as err:
        notices.append(f"Could not make a {served} copy of {gguf.name} ({err}): serving the "
                       "file as it is.")
        return gguf, None
    return copy, f"{llamacpp.file_type(gguf)} as {served.upper()}"


def _openai_engine(settings: Settings, loaded: LoadedModel | None = None) -> Engine:
    from assistant.engines.openai_server import OpenAIGenerator

    o = settings.openai
    prompt_ids, specials, checkpoint, prompt_text = None, None, None, None
    try:  # the base model's own tokenizer, when its files are here
        local = _llamacpp_vocab(settings)
        prompt_ids, specials, checkpoint = local.prompt_ids, local.template.specials, local.checkpoint
        prompt_text = local.template.prompt
    except Exception as err:  # noqa: BLE001 - no local model: the server counts tokens
        log.info("No local tokenizer for %s (%s): prompt tokens are counted by the server",
                 settings.model, err)
    generator = OpenAIGenerator(o.base_url, o.api_key, o.model, o.timeout_s,
                                settings.context_window, prompt_ids, specials, o.workers,
                                prompt_text)

    def fingerprint() -> str:
        if checkpoint is None:
            from assistant.errors import ModelNotFound

            raise ModelNotFound(
                f"ASSISTANT_MODEL ({settings.model}) is not here, so adapters cannot be checked "
                "against the served base model. Point it at the same model's files.")
        return _checkpoint_fingerprint(checkpoint())

    return Engine(generator, _once(fingerprint))


#: engine setting -> builder. A new engine: its module in assistant/engines, a builder here,
#: and its name in ``Settings.engine``.
ENGINES: dict[str, Callable[..., Engine]] = {
    "transformers": _transformers_engine,
    "llamacpp": _llamacpp_engine,
    "openai": _openai_engine,
}


def build_engine(settings: Settings, loaded: LoadedModel | None = None) -> Engine:
    """The generator the ``engine`` setting names. ``loaded`` (a transformers model already
    in memory) is reused by the transformers engine."""
    return ENGINES[settings.engine](settings, loaded)


def _gguf_for(settings: Settings) -> tuple[Path, str, Callable[[], Path]]:
    """The GGUF file llama.cpp serves for ``ASSISTANT_MODEL``, the model's name, and how to
    get the matching transformers checkpoint (what adapters are converted against)."""
    from assistant.config import EMBEDDED_MODEL
    from assistant.errors import ModelNotFound
    from assistant.model_files import EMBEDDED_FILE, EMBEDDED_NAME, embedded_gguf, is_hub_id

    cache = settings.resolved_model_cache_dir

    def dequantized(gguf: Path) -> Callable[[], Path]:
        def checkpoint() -> Path:
            from assistant.models import checkpoint_for_gguf

            return checkpoint_for_gguf(gguf, cache)
        return checkpoint

    spec = settings.model
    if spec == EMBEDDED_MODEL:
        gguf = embedded_gguf()
        return gguf, f"{EMBEDDED_NAME} (embedded {EMBEDDED_FILE})", dequantized(gguf)
    path = Path(spec).expanduser()
    if path.is_file():
        return path, spec, dequantized(path)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelNotFound(
                f"{path} has no config.json: ASSISTANT_MODEL must point at a transformers "
                "checkpoint folder (config.json, weights, tokenizer) or at a .gguf file.")
        from assistant.conversion import convert_checkpoint

        fmt = _conversion_format(path, settings.llamacpp.convert_to)
        gguf = convert_checkpoint(path, cache / f"{path.resolve().name}.{fmt}.gguf", fmt)
        return gguf, spec, lambda: path
    if is_hub_id(spec):
        raise ModelNotFound(
            f"The llama.cpp engine serves local files, and {spec!r} is a hub id. Download it "
            "and set ASSISTANT_MODEL to its folder or .gguf file, or use "
            "ASSISTANT_ENGINE=transformers (which can fetch it with network).")
    raise ModelNotFound(
        f"Model path '{spec}' does not exist. Set ASSISTANT_MODEL to a checkpoint folder, a "
        ".gguf file, or 'embedded' (the default).")


def _conversion_format(folder: Path, setting: str) -> str:
    """``convert_to``, with auto resolved: bf16 where the CPU multiplies it natively and the
    checkpoint is small (llama.cpp reads prompts fastest from bf16 there: docs/engines.md),
    q8_0 elsewhere (and for large models, whose decoding is bound by the bytes read)."""
    if setting != "auto":
        return setting
    from assistant.cpu import bf16_fast

    size = sum(p.stat().st_size for p in folder.glob("*.safetensors")) or sum(
        p.stat().st_size for p in folder.glob("*.bin"))
    return "bf16" if bf16_fast() and size <= 2 * 2**30 else "q8_0"


@dataclass
class _Vocab:
    prompt_ids: Callable
    template: object
    checkpoint: Callable[[], Path]


def _llamacpp_vocab(settings: Settings) -> _Vocab:
    """The base model's tokenizer and chat template from its GGUF file, read by llama.cpp
    without its weights (``vocab_only``): fast, and no torch."""
    from assistant.engines.llamacpp import GGUFVocab

    gguf, _, checkpoint = _gguf_for(settings)
    vocab = GGUFVocab.open(gguf)
    return _Vocab(vocab.prompt_ids, vocab.template, checkpoint)


def _checkpoint_fingerprint(folder: Path) -> str:
    from assistant.models import checkpoint_fingerprint

    return checkpoint_fingerprint(folder)


def build_chat_service(
    settings: Settings,
    db: Database | None = None,
    loaded: LoadedModel | None = None,
    library: Library | None = None,
) -> ChatService:
    from assistant.chat import ChatService
    from assistant.storage import ConversationStore

    db = db or open_database(settings)
    engine = build_engine(settings, loaded)
    library = library or open_library(settings, db)
    service = ChatService(
        ConversationStore(db), engine.generator, settings,
        notices=engine.notices + library.notices, retriever=library.retriever,
        registry=open_registry(settings, db), base_fingerprint=engine.fingerprint,
    )
    service.sync_version()  # start on the active version
    return service
