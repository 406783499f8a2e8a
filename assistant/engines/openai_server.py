"""The OpenAI-compatible engine: the chat talks to a serving engine over its HTTP API.

vLLM first, and any server that speaks the OpenAI API (llama.cpp's servers included), through
the ``openai`` client. A version (LoRA adapter) is chosen by the request's ``model``, as vLLM
and llama-cpp-python's multi-model server do:

* a version the server already serves under its name (``GET /v1/models``: vLLM started with
  ``--lora-modules v3=/path``, or a llama-cpp-python config file with ``model_alias: v3``
  and ``lora_path``) is used as it is;
* otherwise it is pushed with vLLM's runtime API, ``POST /v1/load_lora_adapter`` (vLLM
  started with ``--enable-lora`` and ``VLLM_ALLOW_RUNTIME_LORA_UPDATING=True``); the server
  reads the peft folder from its own disk, so the versions folder must be shared with it.
  A server without that API refuses, and the chat stays on the version it had.

Prompt tokens (for fitting the context window) are counted with the base model's own
tokenizer when it is local (``ASSISTANT_MODEL``), else with vLLM's ``/tokenize``. Message
text is defused before it is sent: the server renders the chat template, and text holding a
special token's string must not become that token there either.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from assistant.errors import AdapterError, EngineUnavailable, GenerationFailed
from assistant.engines.generation import GenerationParams, QueuedTokenStream, VersionNames
from assistant.versions import BASE_VERSION
from assistant.engines.messages import Messages, defuse_special_tokens

if TYPE_CHECKING:
    from openai import APIStatusError, Stream
    from openai.types import Completion
    from openai.types.chat import ChatCompletionChunk

    from assistant.config import Settings
    from assistant.engines.registry import Engine
    from assistant.engines.models import LoadedModel

log = logging.getLogger(__name__)
_T = TypeVar("_T")

#: Special-token strings of common chat templates, defused when no local tokenizer says which.
COMMON_SPECIALS = ("<|im_start|>", "<|im_end|>", "<|endoftext|>", "<|eot_id|>",
                   "<|start_header_id|>", "<|end_header_id|>", "<|begin_of_text|>", "<s>", "</s>",
                   "[INST]", "[/INST]", "<start_of_turn>", "<end_of_turn>")


class OpenAIGenerator(VersionNames):
    """Answers from an OpenAI-compatible server at ``base_url`` (e.g. http://127.0.0.1:8000/v1).

    ``model``: the served base model's name (default: the first one the server lists).
    ``prompt_ids``: the local tokenizer's rendering of a message list, when there is one.
    ``prompt_text``: the local chat template's prompt text for a message list (ending inside
    the last answer when the list ends with one): Continue sends it to ``/v1/completions``,
    which every such server has, rather than rely on the chat endpoint's
    ``continue_final_message`` (vLLM's; llama_cpp.server would answer anew).
    ``max_adapters``: versions pushed to the server at once; pushing one more first unloads
    the least recently used one that is not active (it is pushed again when asked for).
    """

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        model: str | None = None,
        timeout_s: float = 60.0,
        context_window: int | None = None,
        prompt_ids: Callable[[Messages], list[int]] | None = None,
        specials: frozenset[str] | None = None,
        workers: int = 8,
        prompt_text: Callable[[Messages], str] | None = None,
        max_adapters: int = 8,
    ) -> None:
        try:
            from openai import OpenAI
        except ImportError as err:
            raise EngineUnavailable(
                "The openai package is not installed: run `make setup`."
            ) from err
        self.base_url = base_url.rstrip("/")
        self._client = OpenAI(base_url=self.base_url, api_key=api_key or "not-needed",
                              timeout=timeout_s, max_retries=0)
        served = self._served_models()
        if not served:
            raise EngineUnavailable(f"The server at {self.base_url} serves no model.")
        if model and model not in served:
            raise EngineUnavailable(
                f"The server at {self.base_url} does not serve a model named {model!r} (it "
                f"serves: {', '.join(served)}). Set ASSISTANT_OPENAI__MODEL to one of those."
            )
        self.base_model = model or next(iter(served))
        info = served[self.base_model]
        self.server = "vLLM" if info.get("owned_by") == "vllm" else "OpenAI-compatible"
        self.engine = f"{self.server} server"
        self.weights = "as served"
        self.model_id = f"{self.base_model} at {self.base_url}"
        self.model_version = BASE_VERSION
        self.context_window = int(context_window or info.get("max_model_len") or 2048)
        self._prompt_ids = prompt_ids
        self._prompt_text = prompt_text
        self._specials = specials if specials is not None else frozenset(COMMON_SPECIALS)
        if prompt_ids is None:  # the server must count for us: fail now, not at the first answer
            self._check_tokenize()
        self.workers = workers
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="openai")
        #: version name -> the adapter folder it was loaded from (None: served by the server),
        #: least recently used first
        self._adapters: dict[str, Path | None] = {}
        #: version name -> the adapter folder it was asked to load from (to push it again to a
        #: server that restarted, even one another process had pushed it to)
        self._folders: dict[str, Path] = {}
        self.max_adapters = max_adapters

    # -- server calls --------------------------------------------------------------------------
    def _call(self, what: str, fn: Callable[[], _T]) -> _T:
        import openai

        try:
            return fn()
        except openai.APIConnectionError as err:
            raise EngineUnavailable(
                f"The model server at {self.base_url} is unreachable ({what}: {err}). The engine "
                "setting is ASSISTANT_ENGINE=openai with ASSISTANT_OPENAI__BASE_URL="
                f"{self.base_url}: start the server (vLLM: `make vllm-serve`), or point the "
                "setting at it; your question is kept, ask again once it is back."
            ) from err
        except openai.AuthenticationError as err:
            raise EngineUnavailable(
                f"The model server at {self.base_url} refused the API key ({what}). Set "
                "ASSISTANT_OPENAI__API_KEY to a key it accepts."
            ) from err

    def _served_models(self) -> dict[str, dict]:
        page = self._call("listing models", self._client.models.list)
        return {m.id: (m.model_extra or {}) | {"owned_by": m.owned_by} for m in page.data}

    def _post(self, path: str, body: dict, cast_to: type = str) -> Any:
        """A POST through the client (its auth, timeouts and errors): vLLM's adapter endpoints
        answer plain text (``str``), ``/tokenize`` JSON (``object``)."""
        return self._call(path, lambda: self._client.post(path, body=body, cast_to=cast_to))

    # -- prompt --------------------------------------------------------------------------------
    def _defused(self, messages: Messages) -> Messages:
        return defuse_special_tokens(messages, self._specials)

    def count_prompt_tokens(self, messages: Messages) -> int:
        if self._prompt_ids is not None:
            return len(self._prompt_ids(messages))
        # vLLM's /tokenize lives at the server's root, beside /v1.
        root = self.base_url.removesuffix("/v1")
        response = self._post(f"{root}/tokenize", {
            "model": self.base_model, "messages": self._defused(messages),
            "add_generation_prompt": True}, cast_to=object)
        return int(response["count"])

    def _check_tokenize(self) -> None:
        import openai

        try:
            self.count_prompt_tokens([{"role": "user", "content": "hi"}])
        except openai.APIStatusError as err:
            raise EngineUnavailable(
                f"The server at {self.base_url} cannot count prompt tokens (no /tokenize: "
                f"{err.status_code}) and the base model's files are not here. Set "
                "ASSISTANT_MODEL to the served model's GGUF file or folder, so that tokens are "
                "counted with its own tokenizer."
            ) from err

    def close(self) -> None:
        """Finish the answer being generated, then stop the worker; nothing more is served."""
        self._executor.shutdown(wait=True, cancel_futures=True)

    def concurrent_streams(self) -> int:
        """The requests sent at once (``workers``). Whether the server batches them is its
        business: vLLM does; llama_cpp.server answers them one after the other."""
        return self.workers

    # -- answers -------------------------------------------------------------------------------
    def stream(
        self, messages: Messages, params: GenerationParams, version: str | None = None
    ) -> QueuedTokenStream:

        version = self.model_version if version is None else version
        self._check_known(version)
        if version in self._adapters:  # most recently used last
            self._adapters[version] = self._adapters.pop(version)
        model = self.base_model if version == BASE_VERSION else version
        sent = self._defused(messages)
        prompt_tokens = self.count_prompt_tokens(messages)

        continuing = bool(sent) and sent[-1]["role"] == "assistant"
        # Continue an answer: the prompt text as the model reads it, ending inside the answer.
        raw = self._prompt_text(messages) if continuing and self._prompt_text else None
        logprobs = params.logprobs and raw is None and self.server == "vLLM"  # see _chunk_logprob

        def job(out: QueuedTokenStream) -> None:
            import openai

            kwargs = dict(model=model, stream=True,
                          max_tokens=params.max_new_tokens, temperature=params.temperature,
                          top_p=params.top_p if params.temperature > 0 else 1.0)
            extra = {}
            if params.repetition_penalty != 1.0:
                # The servers' own multiplicative penalty: llama.cpp's name, and vLLM's.
                extra.update(repeat_penalty=params.repetition_penalty,
                             repetition_penalty=params.repetition_penalty)
            if raw is not None:
                kwargs["prompt"] = raw
                create = self._client.completions.create
            else:
                kwargs["messages"] = sent
                create = self._client.chat.completions.create
                if logprobs:
                    kwargs["logprobs"] = True
                if continuing:
                    # No local template: vLLM's (and transformers') names for continuing the
                    # last message; a server without them answers anew, and that is appended.
                    extra.update(continue_final_message=True, add_generation_prompt=False)
            if extra:
                kwargs["extra_body"] = extra
            chunks = self._open(create, kwargs, version)
            usage = None
            try:
                with chunks:
                    for chunk in chunks:
                        if chunk.usage is not None:
                            usage = chunk.usage
                        for choice in chunk.choices:
                            text = (choice.text if raw is not None else choice.delta.content) or ""
                            # A chunk with no text (the role, the finish reason) is no token;
                            # the server's usage, when it sends one, replaces this count.
                            out.emit(text, tokens=1 if text else 0, logprob=_chunk_logprob(choice))
                            if choice.finish_reason:
                                out.stats.finish_reason = choice.finish_reason
                        if out.stopping():
                            break
            except (openai.APIConnectionError, openai.APIError) as err:
                # The connection dropped mid-answer: the server died or was restarted.
                raise GenerationFailed(
                    f"The model server at {self.base_url} stopped answering mid-answer "
                    f"({type(err).__name__}: {err}). The text so far is kept; ask again (answer "
                    "again) once the server is back.") from err
            if out.stats.finish_reason is None and not out.stopping():
                # The stream ended without saying why: cut short by the server (llama_cpp.server
                # does so when another request arrives, unless interrupt_requests is off) or by
                # a proxy. The text so far is kept as an unfinished answer.
                raise GenerationFailed(
                    f"The model server at {self.base_url} ended the answer before it was "
                    "finished (no finish reason; llama_cpp.server does this when another request "
                    "arrives: start it with interrupt_requests off). The text so far is kept; "
                    "Regenerate asks again.")
            if usage is not None:
                out.stats.completion_tokens = usage.completion_tokens
                out.stats.prompt_tokens = usage.prompt_tokens

        return QueuedTokenStream(self._executor, job, version, prompt_tokens=prompt_tokens,
                                 logprobs=logprobs)

    def _open(self, create: Callable, kwargs: dict, version: str) -> Stream[ChatCompletionChunk] | Stream[Completion]:
        """The server's answer stream; a version the server has lost (restarted since it was
        pushed) is pushed again, once. A refusal is :class:`GenerationFailed` with the
        server's reason (a prompt over its ``--max-model-len``, ...)."""
        import openai

        def send() -> Stream[ChatCompletionChunk] | Stream[Completion]:
            try:
                return self._call("answering", lambda: create(
                    **kwargs, stream_options={"include_usage": True}))
            except openai.BadRequestError as err:
                if "stream_options" not in str(err):
                    raise
                # a server that does not know stream_options
                return self._call("answering", lambda: create(**kwargs))

        try:
            try:
                return send()
            except openai.NotFoundError:
                path = self._folders.get(version)
                if version == BASE_VERSION or path is None:
                    raise
                log.warning("The server at %s no longer serves %s (restarted?): pushing it "
                            "again", self.base_url, version)
                try:
                    self._post("/load_lora_adapter", {"lora_name": version, "lora_path": str(path)})
                except openai.APIStatusError as err:
                    raise GenerationFailed(
                        f"The model server at {self.base_url} no longer serves version "
                        f"{version} (it restarted?) and refused to load it again "
                        f"({err.status_code}: {_detail(err)}). Start it with runtime adapter "
                        "loading (vLLM: VLLM_ALLOW_RUNTIME_LORA_UPDATING=True), or switch "
                        "to another version.") from err
                self._adapters[version] = path  # pushed by us now: ours to unload
                return send()
        except openai.APIStatusError as err:
            raise GenerationFailed(
                f"The model server at {self.base_url} refused the request "
                f"({err.status_code}: {_detail(err)})."
            ) from err

    # -- versions ------------------------------------------------------------------------------


    def load_adapter(self, name: str, path: str | Path) -> None:
        """Make ``name`` servable: already served under that name, or pushed to the server
        with vLLM's runtime LoRA API. Raises :class:`AdapterError` (nothing changes) when
        the server can do neither."""
        import openai

        if name == BASE_VERSION or not name:
            raise AdapterError(f'"{name}" cannot name an adapter. Pick another name.')
        if name in self._adapters:
            return
        path = Path(path).expanduser().resolve()
        self._folders[name] = path
        if name in self._served_models():
            self._adapters[name] = None
            return
        self._make_room()
        started = time.perf_counter()
        try:
            self._post("/load_lora_adapter", {"lora_name": name, "lora_path": str(path)})
        except openai.NotFoundError as err:
            raise AdapterError(
                f"The server at {self.base_url} does not serve {name} and cannot load adapters "
                "at runtime (no /v1/load_lora_adapter). Start vLLM with --enable-lora and "
                "VLLM_ALLOW_RUNTIME_LORA_UPDATING=True, or start the server with this "
                f"adapter ({path}) under the name {name}."
            ) from err
        except openai.APIStatusError as err:
            raise AdapterError(
                f"The server at {self.base_url} refused to load {name} from {path} "
                f"({err.status_code}: {_detail(err)}). It reads the folder from its own disk: "
                "the versions folder must be shared with it, and the adapter must fit the "
                "model it serves (--max-lora-rank at least the adapter's rank)."
            ) from err
        self._adapters[name] = path
        log.info("The server loaded adapter %s in %.1f s", name, time.perf_counter() - started)

    def _make_room(self) -> None:
        """Unload the least recently used pushed versions (not the active one) until one more
        fits in ``max_adapters``."""
        pushed = [n for n, p in self._adapters.items() if p is not None]
        for name in list(pushed):
            if len(pushed) < self.max_adapters:
                return
            if name != self.model_version:
                log.info("Unloading version %s from the server (least recently used)", name)
                self.unload_adapter(name)
                pushed.remove(name)

    def unload_adapter(self, name: str) -> None:
        if name == BASE_VERSION:
            raise AdapterError(f'"{BASE_VERSION}" is the model itself and cannot be unloaded.')
        self._check_known(name)
        if self._adapters[name] is not None:  # only what we pushed is ours to remove
            self._post("/unload_lora_adapter", {"lora_name": name})
        del self._adapters[name]
        if self.model_version == name:
            self.model_version = BASE_VERSION



def _detail(err: APIStatusError) -> str:
    body = getattr(err, "body", None)
    if isinstance(body, dict):
        body = body.get("message") or body.get("detail") or body
    return str(body or err)[:300]


# -- built from the settings (assistant.engines.registry) --------------------------------------
def build(settings: Settings, loaded: LoadedModel | None = None) -> Engine:
    """The OpenAI-compatible engine for ``settings.openai`` (``loaded`` is not used)."""
    from assistant.engines.llamacpp_setup import checkpoint_fingerprint, local_vocab, once
    from assistant.engines.registry import Engine

    o = settings.openai
    prompt_ids, specials, checkpoint, prompt_text = None, None, None, None
    try:  # the base model's own tokenizer, when its files are here
        local = local_vocab(settings)
        prompt_ids, specials, checkpoint = local.prompt_ids, local.template.specials, local.checkpoint
        prompt_text = local.template.prompt
    except Exception as err:  # noqa: BLE001 - no local model: the server counts tokens
        log.info("No local tokenizer for %s (%s): prompt tokens are counted by the server",
                 settings.model, err)
    generator = OpenAIGenerator(o.base_url, o.api_key, o.model, o.timeout_s,
                                settings.context_window, prompt_ids, specials, o.workers,
                                prompt_text, o.max_adapters)

    def fingerprint() -> str:
        if checkpoint is None:
            from assistant.errors import ModelNotFound

            raise ModelNotFound(
                f"ASSISTANT_MODEL ({settings.model}) is not here, so adapters cannot be checked "
                "against the served base model. Point it at the same model's files.")
        return checkpoint_fingerprint(checkpoint())

    return Engine(generator, once(fingerprint))


def _chunk_logprob(choice: object) -> float | None:
    """The summed log-probability of the tokens of a streamed chat chunk, when it has them.
    Asked of vLLM only: llama_cpp.server refuses them unless its model was loaded with
    ``logits_all`` (slower for every answer)."""
    content = getattr(getattr(choice, "logprobs", None), "content", None)
    return sum(t.logprob for t in content) if content else None
