"""ChatService: validate -> fit the history -> store the question -> stream the answer -> store it.

Nothing half-written: a rejected message stores nothing; the question is committed before
generation starts; the answer is committed in one transaction when it ends (or, when the
user stops it, what was produced so far, marked ``stopped``).
"""

from __future__ import annotations

import copy
import logging
import random
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import fields, replace
from typing import TYPE_CHECKING

from assistant.config import Settings
from assistant.errors import (
    AnswerTooLong,
    AssistantError,
    EmptyMessage,
    IncompleteComparison,
    MessageTooLong,
    NotAnAnswer,
    NotAQuestion,
)
from assistant.engines.generation import GenerationParams, Generator, TokenStream, engine_label
from assistant.chat.answer_modes import (
    ComposedStream, abstain_threshold, compose, engine_without_model, evidence_of, similarity_of)
from assistant.chat.answerability import HeadSlot
from assistant.chat.citations import cite
from assistant.chat.prompting import FittedPrompt, Turn, fit_history, trim_notice
from assistant.documents.retrieval import Hit, Retriever
from assistant.storage import ConversationStore, StoredMessage
from assistant.storage.comparisons import ComparisonStore, StoredComparison
from assistant.storage.conversations import RETRIEVAL, AnswerRecord, DocumentChoice, SourceRecord

if TYPE_CHECKING:
    from assistant.chat.answer_modes import Composed
    from assistant.engines.messages import Messages
    from assistant.registry import Registry
    from assistant.storage.ownership import Owner

log = logging.getLogger(__name__)
#: Retrieval outcomes an answer announces: documents were searched, and none is in the prompt.
SAYS_NO_DOCUMENT = ("none relevant", "none fit")
#: A version that failed to load is tried again after this long (its files may be restored).
RETRY_FAILED_S = 30.0


class Reply:
    """An answer being generated. Iterate it for text chunks; ``message`` is the stored
    answer once iteration ends.

    ``close()`` stops generation and stores what was produced (marked ``stopped``). It is
    idempotent and may be called from another thread than the one iterating (a UI rerun
    does that); ``done`` is set once the answer is stored.
    """

    def __init__(
        self,
        service: ChatService,
        conversation_id: int,
        question: StoredMessage,
        fitted: FittedPrompt,
        params: GenerationParams,
        stream: TokenStream,
        sources: list[Hit] | None = None,
        retrieval: str = "off",
        continues: StoredMessage | None = None,
    ) -> None:
        self.conversation_id = conversation_id
        #: The answer this reply continues (its text is appended there), or None.
        self.continues = continues
        #: The chunks shown to the model, in [n] order.
        self.sources = list(sources or [])
        #: What retrieval gave this answer (a key of storage.conversations.RETRIEVAL).
        self.retrieval = retrieval
        self.question = question
        self.params = params
        self.dropped_turns = fitted.dropped_turns
        self.notices: list[str] = []
        if fitted.dropped_turns:
            self.notices.append(trim_notice(fitted.dropped_turns, service.generator.context_window))
        if retrieval in SAYS_NO_DOCUMENT:
            self.notices.append(RETRIEVAL[retrieval])
        self.message: StoredMessage | None = None
        self.done = threading.Event()
        self._service = service
        self._stream = stream
        self._chunks: Iterator[str] | None = None
        self._parts: list[str] = []
        self._lock = threading.Lock()
        self._finalized = False

    @property
    def text(self) -> str:
        return "".join(self._parts)

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        if self._finalized:
            raise StopIteration
        if self._chunks is None:
            self._chunks = iter(self._stream)
        try:
            chunk = next(self._chunks)
        except StopIteration:
            # A stream that ended because close() stopped it (from another thread) is not
            # complete: close() may lose the race to store it, and must store the same.
            self._finalize(complete=not self._stream.stats.stopped)
            raise
        except BaseException:
            self._stream.stop()
            self._finalize(complete=False)
            raise
        self._parts.append(chunk)
        return chunk

    def close(self) -> None:
        """Stop generating (if still running) and store the partial answer."""
        if self._finalized:
            return
        self._stream.stop()
        self._finalize(complete=False)

    def _finalize(self, complete: bool) -> None:
        with self._lock:
            if self._finalized:
                return
            self._finalized = True
        try:
            # An answer stopped before its first word is not worth a row.
            composed = getattr(self._stream, "composed", None)  # answer_modes.ComposedStream
            text = composed.text if composed is not None else self.text
            if self.continues is not None:
                self.message = self._service._store_continuation(self, text)
            elif complete or text:
                self.message = self._service._store_answer(self, text)
        finally:
            self.done.set()


class ChatService:
    def __init__(
        self,
        store: ConversationStore,
        generator: Generator,
        settings: Settings,
        notices: list[str] | None = None,
        retriever: Retriever | None = None,
        registry: Registry | None = None,
        base_fingerprint: str | Callable[[], str] = "",
    ) -> None:
        self.store = store
        self.comparisons = ComparisonStore(store.db)
        self.generator = generator
        self.settings = settings
        self.retriever = retriever
        #: Trained versions; the chat follows the registry's active one (None: base only).
        self.registry = registry
        #: The base model's fingerprint, or how to compute it when first needed (engines that
        #: do not run torch compute it from the matching checkpoint).
        self._base_fingerprint = base_fingerprint
        #: Things the user should know about start-up (e.g. a corrupt cache was rebuilt).
        self.notices = list(notices or [])
        self._switch_lock = threading.Lock()
        #: Versions that failed to load -> when; retried after RETRY_FAILED_S (files restored?).
        self._failed_versions: dict[str, float] = {}
        self.heads = HeadSlot(settings, registry)  # quoted mode's answerability head

    def for_owner(self, owner: Owner | None) -> ChatService:
        """The same service (model, retriever, version state) seeing only ``owner``'s
        conversations (login on; see ``storage.ownership``). Cheap: one per page run."""
        scoped = copy.copy(self)
        scoped.store = self.store.for_owner(owner)
        scoped.comparisons = ComparisonStore(self.store.db, owner)
        return scoped

    # -- model versions ------------------------------------------------------------------------
    @property
    def base_fingerprint(self) -> str:
        if callable(self._base_fingerprint):
            self._base_fingerprint = self._base_fingerprint()
        return self._base_fingerprint

    @property
    def version(self) -> str:
        return self.generator.model_version

    def sync_version(self) -> str:
        """Follow the registry's active version: another session, the Models page or
        ``assistant models activate`` may have switched it since the last answer. A version
        that cannot be loaded leaves the chat on the one it was using, with a notice."""
        if self.registry is None:
            return self.generator.model_version
        active = self.registry.active()
        with self._switch_lock:
            failed_at = self._failed_versions.get(active)
            retry = failed_at is None or time.monotonic() - failed_at > RETRY_FAILED_S
            if active != self.generator.model_version and retry:
                try:
                    self.load_version(active)
                    self.generator.activate(active)
                    self._failed_versions.pop(active, None)
                    log.info("The chat now answers with version %s", active)
                except AssistantError as err:
                    self._failed_versions[active] = time.monotonic()
                    notice = (
                        f"Version {active} is active but could not be loaded ({err}); the chat "
                        f"keeps answering with {self.generator.model_version}."
                    )
                    if notice not in self.notices:
                        self.notices.append(notice)
                    log.warning(notice)
        return self.generator.model_version

    def load_version(self, name: str) -> None:
        """Load ``name``'s adapter onto the base model (once); "base" needs nothing."""
        if name in self.generator.loaded_versions():
            return
        if self.registry is None:
            from assistant.registry import VersionNotFound

            raise VersionNotFound(name, [])
        version = self.registry.check_servable(name, self.base_fingerprint)
        self.generator.load_adapter(name, version.adapter_dir)

    def default_params(self) -> GenerationParams:
        g = self.settings.generation
        return GenerationParams(g.temperature, g.top_p, g.max_new_tokens, g.system_prompt,
                                g.repetition_penalty)

    def history(self, conversation_id: int) -> list[Turn]:
        return _turns(self.store.messages(conversation_id))

    def send(
        self,
        conversation_id: int | None,
        text: str,
        params: GenerationParams | None = None,
        documents: DocumentChoice | None = None,
        version: str | None = None,
    ) -> Reply:
        """Store ``text`` as the next user turn and start answering it.

        ``documents`` (stored on the conversation when given) says whether to search the
        documents and which; otherwise the conversation's stored choice applies. Raises
        before anything is stored when the message is empty or cannot fit. ``version``
        (loaded with :meth:`load_version`) answers instead of the active one.
        """
        params = params or self.default_params()
        self.sync_version()
        if not text or not text.strip():
            raise EmptyMessage()
        if len(text) > self.settings.max_message_chars:
            raise MessageTooLong(len(text), self.settings.max_message_chars, unit="characters")

        history: list[Turn] = []
        choice = documents
        if conversation_id is not None:
            history = self.history(conversation_id)
            choice = choice or self.store.get_conversation(conversation_id).documents
        choice = choice or DocumentChoice()
        hits, retrieval = self.retrieval(text, choice)
        fitted, hits, retrieval = self._fit(params, history, text, hits, retrieval)
        question = self.store.add_user_message(conversation_id, text, documents)
        stream = self._answer_stream(fitted.messages, params, version, text, hits)
        return Reply(self, question.conversation_id, question, fitted, params, stream, hits,
                     retrieval)

    def regenerate(self, answer_id: int, params: GenerationParams | None = None) -> Reply:
        """Answer an answered question again. The new answer is stored as another
        alternative of that question and shown; the earlier ones are kept."""
        answer = self.store.get_message(answer_id)
        if answer.role != "assistant" or answer.reply_to_id is None:
            raise NotAnAnswer(answer_id, "only an answer to a question can be regenerated")
        return self.answer_again(answer.reply_to_id, params)

    def compare(
        self,
        conversation_id: int | None,
        text: str,
        params: GenerationParams | None = None,
        documents: DocumentChoice | None = None,
        versions: tuple[str, str] | None = None,
        rng: random.Random | None = None,
    ) -> tuple[Reply, Reply]:
        """Compare mode: two answers to one question, to be shown side by side as A and B.

        ``versions`` pits two model versions against each other (in random order, so that
        the side does not give the version away); without it, or with one version twice,
        the two are samples of the active version, and since greedy decoding would make
        them identical they are sampled at a temperature of at least 0.7.
        """
        params = params or self.default_params()
        self.sync_version()
        a, b = versions or (self.version, self.version)
        if a == b and params.temperature < 0.7:
            params = replace(params, temperature=0.7)
        for name in {a, b}:
            self.load_version(name)
        if (rng or random).random() < 0.5:
            a, b = b, a
        # Both streams start now: an engine that generates one answer at a time queues B.
        first = self.send(conversation_id, text, params, documents, version=a)
        second = self.answer_again(first.question.id, params, version=b)
        return first, second

    def compare_at_once(self) -> bool:
        """Whether compare mode's A and B are generated (and shown) at once: the engine can
        (``Generator.concurrent_streams``); otherwise B follows A. Read them with
        :func:`assistant.chat.side_by_side.interleave`."""
        return self.generator.concurrent_streams() > 1

    def record_comparison(self, a: Reply, b: Reply) -> StoredComparison:
        """Store A/B once both answers are complete (an interrupted pair, or one whose side
        failed halfway, is not compared)."""
        if any(r.message is None or (r.message.record and r.message.record.stopped)
               for r in (a, b)):
            raise IncompleteComparison()
        return self.comparisons.create(a.question.id, a.message.id, b.message.id)

    def answer_again(
        self, question_id: int, params: GenerationParams | None = None, version: str | None = None
    ) -> Reply:
        params = params or self.default_params()
        self.sync_version()
        question = self.store.get_message(question_id)
        if question.role != "user":
            raise NotAQuestion(question_id, "only a question can be answered again")
        history = _turns(self.store.history_before(question.id))
        choice = self.store.get_conversation(question.conversation_id).documents
        hits, retrieval = self.retrieval(question.content, choice)
        fitted, hits, retrieval = self._fit(params, history, question.content, hits, retrieval)
        stream = self._answer_stream(fitted.messages, params, version, question.content, hits)
        return Reply(self, question.conversation_id, question, fitted, params, stream, hits,
                     retrieval)

    def continue_answer(self, answer_id: int, params: GenerationParams | None = None) -> Reply:
        """Go on with an answer the token limit cut: the model reads the same prompt (the
        same sources) with the answer so far as the start of its turn, and writes on from
        its last word; the new text is appended to that answer (``Reply.continues``)."""
        answer = self.store.get_message(answer_id)
        if answer.role != "assistant" or answer.reply_to_id is None or answer.record is None:
            raise NotAnAnswer(answer_id, "only an answer to a question can be continued")
        record = answer.record
        if not record.cut_at_limit:
            raise NotAnAnswer(answer_id, "only an answer cut at the token limit can be continued")
        if params is None:
            known = {f.name for f in fields(GenerationParams)}
            params = GenerationParams(**{k: v for k, v in record.params.items() if k in known})
        self.sync_version()
        question = self.store.get_message(answer.reply_to_id)
        history = _turns(self.store.history_before(question.id))
        sources = list(answer.sources)
        fitted, sources, retrieval = self._fit(params, history, question.content, sources,
                                               record.retrieval or "used")
        messages = [*fitted.messages, {"role": "assistant", "content": answer.content}]
        stream = self._stream(messages, params, record.model_version)
        return Reply(self, question.conversation_id, question, fitted, params, stream, sources,
                     retrieval, continues=answer)

    def answer_mode(self) -> str:
        return self.settings.answers.mode

    def _answer_stream(self, messages: Messages, params: GenerationParams, version: str | None,
                       question: str, hits: list[Hit]) -> TokenStream:
        """The answer's stream: the model's (``free`` mode, or no sources), or the answer
        composed with its quoted evidence (:mod:`assistant.chat.answer_modes`)."""
        mode = self.answer_mode()
        if mode == "free" or not hits:
            return self._stream(messages, params, version)
        texts = [hit.text for hit in hits]
        similarity = similarity_of(self.retriever.embedder) if self.retriever is not None else None
        answers, version = self.settings.answers, version or self.generator.model_version
        # Only quoted mode weighs the model's abstention (the version's threshold: one query).
        threshold = abstain_threshold(answers.min_abstain_probability, self.registry.abstain_threshold(
            version) if self.registry and mode == "quoted" else None)
        started = time.perf_counter()  # the answerability head's question is part of the wait
        unanswerable = mode == "quoted" and self.heads.unanswerable(question, texts)

        def form(said: str, probability: float | None) -> Composed:
            return compose(mode, said, question, texts, similarity, answers.min_similarity,
                           probability, threshold, unanswerable)

        inner = (None if mode == "extractive" or unanswerable
                 else self._stream(messages, replace(params, logprobs=True), version))
        return ComposedStream(form, inner, version, started)

    def _stream(self, messages: Messages, params: GenerationParams, version: str | None) -> TokenStream:
        if version is None or version == self.generator.model_version:
            return self.generator.stream(messages, params)
        self.load_version(version)
        return self.generator.stream(messages, params, version=version)

    def retrieve(self, text: str, choice: DocumentChoice) -> list[Hit]:
        """The chunks the chat shows the model for ``text``: only relevant ones."""
        return self.retrieval(text, choice)[0]

    def retrieval(self, text: str, choice: DocumentChoice) -> tuple[list[Hit], str]:
        """The relevant chunks for ``text`` (the retriever's gate: ``min_similarity``), and
        what retrieval gave (a key of storage.conversations.RETRIEVAL)."""
        if self.retriever is None or not choice.use_documents:
            return [], "off"
        ids = list(choice.document_ids) if choice.document_ids is not None else None
        found = self.retriever.relevant(text, document_ids=ids)
        if found.hits:
            return found.hits, "used"
        if found.rejected:
            log.info("No source for this question: best similarity %.3f < %.3f",
                     found.best_similarity, self.retriever.settings.min_similarity)
            return [], "none relevant"
        return [], "nothing to search"

    def _fit(
        self, params: GenerationParams, history: list[Turn], text: str, hits: list[Hit],
        retrieval: str = "used",
    ) -> tuple[FittedPrompt, list[Hit], str]:
        """Fit history and sources into the window: old history goes first, then the
        lowest-ranked sources; the question itself always stays."""
        budget = self.generator.context_window - params.max_new_tokens
        if budget <= 0:
            raise AnswerTooLong(params.max_new_tokens, self.generator.context_window)
        while True:
            try:
                fitted = fit_history(
                    params.system_prompt, history, text,
                    self.generator.count_prompt_tokens, budget, hits,
                )
                return fitted, hits, retrieval
            except MessageTooLong:
                if not hits:
                    raise
                hits = hits[:-1]
                if not hits:
                    retrieval = "none fit"

    def _store_continuation(self, reply: Reply, text: str) -> StoredMessage:
        answer = reply.continues
        stats = reply._stream.stats
        if not text and stats.stopped:  # stopped before its first word: nothing changes
            return self.store.get_message(answer.id)
        record = replace(answer.record, completion_tokens=stats.completion_tokens,
                         latency_ms=stats.latency_ms, stopped=stats.stopped,
                         finish_reason=stats.finish_reason)
        cited = cite(answer.content + text, [src.text for src in answer.sources],
                     reply.question.content).cited
        return self.store.extend_answer(answer.id, text, record, cited)

    def _store_answer(self, reply: Reply, text: str) -> StoredMessage:
        stats = reply._stream.stats
        composed = getattr(reply._stream, "composed", None)
        unmodelled = composed is not None and not reply._stream.uses_model
        record = AnswerRecord(
            model_id=self.generator.model_id,
            model_version=getattr(reply._stream, "version", None) or self.generator.model_version,
            # With sources: how the answer was formed (assistant.chat.answer_modes).
            params={**reply.params.as_dict(),
                    **({"answer_mode": self.answer_mode()} if reply.sources else {}),
                    **({"formed": composed.how, "model_text": reply._stream.model_text}
                       if composed is not None else {})},
            prompt_tokens=stats.prompt_tokens,
            completion_tokens=stats.completion_tokens,
            latency_ms=stats.latency_ms,
            ttft_ms=stats.ttft_ms,
            stopped=stats.stopped,
            trimmed_turns=reply.dropped_turns,
            engine=engine_without_model(composed.how) if unmodelled else engine_label(self.generator),
            retrieval=reply.retrieval,
            finish_reason=None if stats.stopped else stats.finish_reason,
        )
        texts = [hit.text for hit in reply.sources]
        cited = cite(text, texts, reply.question.content).cited
        evidence = composed.evidence if composed is not None else \
            evidence_of(text, texts, reply.question.content, cited)
        sources = tuple(
            SourceRecord(
                rank=n, chunk_id=hit.chunk_id, document_name=hit.document_name,
                location=hit.location, text=hit.text, score=hit.score, cited=n in cited,
                evidence=evidence.get(n, ()),
            )
            for n, hit in enumerate(reply.sources, start=1)
        )
        return self.store.add_assistant_message(
            reply.conversation_id, text, record, sources, reply_to_id=reply.question.id
        )


def _turns(messages: list[StoredMessage]) -> list[Turn]:
    # An answer the user corrected continues the conversation in its corrected form.
    return [Turn(m.role, m.edited or m.content) for m in messages]
