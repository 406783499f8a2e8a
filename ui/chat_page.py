"""The chat page: the conversation, streaming answers (one, or A and B in compare mode)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

import streamlit as st

from assistant.chat.service import ChatService
from assistant.errors import AssistantError, ConversationNotFound
from assistant.engines.generation import GenerationParams
from assistant.documents.parsing import SUPPORTED_SUFFIXES
from assistant.chat.side_by_side import interleave
from assistant.storage import StoredMessage
from assistant.storage.conversations import DocumentChoice
from ui import answers, login, resources, sidebar
from ui.state import CONTINUE, CONV, EDIT_ERROR, PAIR_ERROR, PENDING, REGENERATE, guard
from ui.text import error_text, plain, safe_markdown, safe_stream
from ui.uploads import ingest_uploads, upload_cap_mb

if TYPE_CHECKING:
    from assistant.chat.service import Reply

URL_KEY = "conversation"  # ?conversation=ID: reload, back and a shared link reopen it
_URL_SEEN = "_url_conversation"  # the URL's value when this session last read or wrote it
REFUSED = "_refused_message"  # (text, reason) of a message the service refused last run


def render() -> None:
    service = resources.chat_service(login.current_user())
    for notice in service.notices:
        st.info(notice)
    asked = _follow_url()
    params, documents = sidebar.render(service)  # drops a conversation this user cannot see
    if asked is not None and str(st.session_state.get(CONV)) != asked:
        st.error(f"There is no conversation {plain(asked)} that you can open (deleted, or "
                 "another user's): this is a new chat.", icon=":material/link_off:")
    sync_url()
    _conversation(service, params, documents)


def _follow_url() -> str | None:
    """Open the conversation the URL names when the URL changed outside this session (a
    reload, the back button, a shared link); returns what it asked for."""
    value = st.query_params.get(URL_KEY)
    if _URL_SEEN in st.session_state and value == st.session_state[_URL_SEEN]:
        return None  # unchanged: the session's own choice (a click in the sidebar) stands
    st.session_state[_URL_SEEN] = value
    if value is None:  # a plain link, or back from another page (which drops it): keep
        return None
    st.session_state[CONV] = int(value) if value.isdigit() else None
    return value


def sync_url() -> None:
    """Put the open conversation in the URL (none: a new chat, no parameter)."""
    conv = st.session_state.get(CONV)
    value = None if conv is None else str(conv)
    if st.query_params.get(URL_KEY) != value:
        if value is None:
            del st.query_params[URL_KEY]
        else:
            st.query_params[URL_KEY] = value
    st.session_state[_URL_SEEN] = value


def _settle_pending_reply() -> None:
    """Finish the answer an interrupted run was streaming before reading the conversation.

    With fast reruns, Streamlit starts the new run on a new thread while the old one is
    still unwinding; without this wait the new run could render before the partial
    answer is stored, and the answer would seem lost until the next click.
    """
    pending = st.session_state.pop(PENDING, None)
    for reply in pending if isinstance(pending, tuple) else [pending] if pending else []:
        if not reply.done.is_set():
            reply.close()
            reply.done.wait(timeout=30)


def _conversation(
    service: ChatService, params: GenerationParams, documents: DocumentChoice
) -> None:
    _settle_pending_reply()
    if EDIT_ERROR in st.session_state:
        st.error(st.session_state.pop(EDIT_ERROR))
    current, every, comparisons = _load_conversation(service)
    _show_history(service, every, comparisons)
    if PAIR_ERROR in st.session_state:
        st.error(st.session_state.pop(PAIR_ERROR), icon=":material/error:")
    _answer_requested(service, params)
    submitted = _chat_input(service)
    if submitted is None:
        return
    prompt = submitted if isinstance(submitted, str) else submitted.text
    files = [] if isinstance(submitted, str) else list(submitted.files)
    if files:
        with st.chat_message("user"):
            st.caption("Attached: " + ", ".join(plain(f.name) for f in files))
            ingest_uploads(resources.library(), files)
        if not prompt.strip():
            return
    _send(service, current, prompt, params, documents)


def _load_conversation(service: ChatService) -> tuple[int | None, dict[int, StoredMessage], dict]:
    """The open conversation's id, every message of it (also inactive ones: a regenerated
    answer's siblings) and its compare-mode pairs; none when it is gone."""
    current = st.session_state.get(CONV)
    every: dict[int, StoredMessage] = {}
    comparisons: dict = {}
    if current is not None:
        try:
            every = {m.id: m for m in service.store.messages(current, include_inactive=True)}
            comparisons = service.comparisons.for_conversation(current)
        except ConversationNotFound:
            st.session_state[CONV] = current = None
        except AssistantError as err:
            st.error(str(err))
    return current, every, comparisons


def _show_history(service: ChatService, every: dict[int, StoredMessage], comparisons: dict) -> None:
    messages = [m for m in every.values() if m.active]
    if not messages:
        # Material icons, not emoji: browsers without an emoji font showed empty boxes.
        st.title(":material/forum: Assistant")
        st.caption("Ask anything. Answers stream from the local model; rate them with "
                   ":material/thumb_up: / :material/thumb_down:.")
    for m in messages:
        pending = comparisons.get(m.reply_to_id) if m.role == "assistant" else None
        if pending is not None and pending.vote is None:
            answers.ballot(service, pending, every)
            continue
        with st.chat_message(m.role):
            if m.role == "assistant":
                asked = every.get(m.reply_to_id) if m.reply_to_id is not None else None
                answers.answer(service, m, asked.content if asked else "")
                if pending is not None:
                    answers.verdict(pending, every)
            else:
                st.markdown(safe_markdown(m.content))


def _answer_requested(service: ChatService, params: GenerationParams) -> None:
    """An answer a button asked for on the last run: regenerate, or continue (with the
    answer's own settings: it goes on as it started)."""
    regenerate = st.session_state.pop(REGENERATE, None)
    go_on = st.session_state.pop(CONTINUE, None)
    for wanted, start in ((regenerate, lambda: service.regenerate(regenerate, params)),
                          (go_on, lambda: service.continue_answer(go_on))):
        if wanted is None:
            continue
        try:
            reply = start()
        except AssistantError as err:
            st.error(str(err))
        else:
            _stream(reply)


def _chat_input(service: ChatService) -> Any:
    """The message box (with the attach button for those who may upload); a message
    refused on the last run is put back in it, with the reason beside it."""
    attach = login.may("upload")  # attached files join the shared library: admins only
    refused = st.session_state.pop(REFUSED, None)
    if refused is not None:
        # st.chat_input empties itself on submit: a refused message goes back into the box
        # (Streamlit puts a str set in session state there), with the reason beside it.
        text, reason = refused
        st.session_state["chat_input"] = text
        st.error(f"{reason} Your message is back in the box below.", icon=":material/error:")
    return st.chat_input(
        # Short enough to show whole at phone width; the attach button is a "+", not a clip.
        "Ask anything; + attaches documents" if attach else "Ask anything",
        key="chat_input",
        # No max_chars: the browser would cut a long paste (or drop it) without a word; the
        # service refuses an over-long message with the limit, and the text is kept.
        accept_file="multiple" if attach else False,
        max_upload_size=upload_cap_mb(service.settings.retrieval.max_upload_mb),
        file_type=sorted(s.lstrip(".") for s in SUPPORTED_SUFFIXES),
        submit_mode="disable",
    )


def _send(service: ChatService, current: int | None, prompt: str, params: GenerationParams,
          documents: DocumentChoice) -> None:
    """The question shown at once, and its answer streamed (two in compare mode); the
    answer's bubble says what happens before the first word (searching the documents, then
    reading the sources and the question). A refused message goes back into the box."""
    compare = st.session_state.get("compare_mode", False)
    question, answer = st.empty(), st.empty()
    with question.container(), st.chat_message("user"):
        st.markdown(safe_markdown(prompt))
    bubble = answer.container()
    try:
        if compare:
            with st.spinner(searching(service, documents)):
                a, b = service.compare(current, prompt, params, documents,
                                       versions=sidebar.compare_versions())
        else:
            with bubble, st.chat_message("assistant"), st.spinner(searching(service, documents)):
                reply = service.send(current, prompt, params, documents)
    except AssistantError as err:
        question.empty()
        answer.empty()
        st.session_state[REFUSED] = (prompt, str(err))
        st.rerun()
    st.session_state[CONV] = (a if compare else reply).conversation_id
    sync_url()
    answer.empty()
    if compare:
        _stream_pair(service, a, b)
    else:
        _stream(reply)


def searching(service: ChatService, documents: DocumentChoice) -> str:
    """What the page says while a message is prepared, before the model starts."""
    if documents.use_documents and service.retriever is not None:
        return "Searching documents…"
    return "Reading the conversation…"


def reading(reply: Reply) -> str:
    """What the answer's bubble says while the model reads its prompt (the first word waits
    for that: seconds on a CPU)."""
    n = len(reply.sources)
    if n:
        return f"Reading {n} source{'s' if n != 1 else ''} and the question…"
    return "Reading the question…"


def _first_then_rest(chunks: Iterable[str], status: str) -> Iterator[str]:
    """The chunks, with ``status`` under a spinner until the first one arrives."""
    chunks = iter(chunks)
    with st.spinner(status):
        first = next(chunks, None)
    if first is not None:
        yield first
        yield from chunks


def _stream_pair(service: ChatService, a: Reply, b: Reply) -> None:
    """Compare mode: stream A and B side by side, at once when the engine can generate both
    at once, else B after A; the vote comes after the rerun."""
    replies, labels = (a, b), "AB"
    at_once = service.compare_at_once()
    stop = st.empty()  # stops both; the partial answers are stored, and not compared
    stop.button("Stop", key="stop_generation", icon=":material/stop_circle:")
    notes, boxes = [], []
    for col, label, reply in zip(st.columns(2), labels, replies):
        with col, st.chat_message("assistant"):
            st.caption(f"Answer {label}")
            for notice in reply.notices:
                st.info(notice)
            notes.append(st.empty())
            boxes.append(st.empty())
    for side, (note, reply) in enumerate(zip(notes, replies)):
        note.caption(":material/hourglass_top: " + (
            reading(reply) if at_once or side == 0 else
            "Waiting for answer A: this engine generates one answer at a time."))
    texts, errors = ["", ""], {}
    st.session_state[PENDING] = replies
    try:
        for piece in interleave(replies, at_once):
            side = piece.side
            if piece.text:
                if not texts[side]:
                    notes[side].empty()
                texts[side] += piece.text
                boxes[side].markdown(safe_markdown(texts[side]))
            elif piece.error is not None:
                errors[side] = piece.error
                notes[side].error(error_text(str(piece.error)), icon=":material/error:")
            elif not texts[side]:
                notes[side].empty()
            if piece.done and not at_once and side + 1 < len(replies):
                notes[side + 1].caption(":material/hourglass_top: " + reading(replies[side + 1]))
    finally:
        for reply in replies:
            reply.close()  # interrupted or failed: stop the workers, keep what was produced
    stop.empty()
    st.session_state.pop(PENDING, None)
    if errors:
        # A failed side is not compared; what either side produced is kept as an answer.
        failed = "; ".join(f"answer {labels[side]} failed: {error_text(str(err))}"
                           for side, err in errors.items())
        kept = [f"answer {label}" for label, r in zip(labels, replies) if r.message is not None]
        st.session_state[PAIR_ERROR] = f"Compare mode: {failed}. " + (
            f"{' and '.join(kept).capitalize()} {'is' if len(kept) == 1 else 'are'} kept, not "
            "compared: regenerate (:material/refresh:) under it to try again." if kept else
            "Nothing was produced; your question is kept, ask it again.")
    elif a.message is not None and b.message is not None:
        guard(service.record_comparison, a, b)
    st.rerun()


def _stream(reply: Reply) -> None:
    """Show an answer as it is generated, with a Stop button; then rerun to show it stored."""
    with st.chat_message("assistant"):
        if reply.continues is not None:
            st.caption(":material/play_arrow: Continuing the answer above…")
        for notice in reply.notices:
            st.info(notice)
        # Clicking Stop reruns the script, which interrupts write_stream below; the
        # rerun then shows the stored partial answer with its rating widgets.
        stop = st.empty()
        stop.button("Stop", key="stop_generation", icon=":material/stop_circle:")
        st.session_state[PENDING] = reply
        try:
            st.write_stream(_first_then_rest(safe_stream(reply), reading(reply)))
        except AssistantError as err:
            st.error(str(err))
            return
        finally:
            reply.close()  # interrupted or failed: stop the worker, keep what was produced
        stop.empty()
    st.session_state.pop(PENDING, None)
    st.rerun()
