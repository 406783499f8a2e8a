"""The chat page: conversations in the sidebar, the chat with streaming answers and ratings."""

from __future__ import annotations

import math

import streamlit as st

from assistant.chat import ChatService, trim_notice
from assistant.citations import annotate
from assistant.errors import AssistantError, ConversationNotFound
from assistant.generation import GenerationParams
from assistant.parsing import SUPPORTED_SUFFIXES
from assistant.storage import StoredMessage
from assistant.storage.conversations import DocumentChoice, StoredConversation
from ui import resources
from ui.text import plain
from ui.uploads import ingest_uploads

CONV = "conversation_id"
PENDING = "_pending_reply"
REGENERATE = "_regenerate"
EDIT_ERROR = "_edit_error"
TAGS = ["inaccurate", "unhelpful", "unsafe", "wrong citation", "too long", "off topic"]


def render() -> None:
    service = resources.chat_service()
    for notice in service.notices:
        st.info(notice)
    params, documents = _sidebar(service)
    _conversation(service, params, documents)


# -- sidebar -----------------------------------------------------------------------------------
def _sidebar(service: ChatService) -> tuple[GenerationParams, DocumentChoice]:
    sb = st.sidebar
    sb.button(
        "New chat", key="new_chat", icon=":material/add:", on_click=_open, args=(None,),
        width="stretch",
    )

    try:
        conversations = service.store.list_conversations()
    except AssistantError as err:
        sb.error(str(err))
        conversations = []
    current = st.session_state.get(CONV)
    if current is not None and current not in {c.id for c in conversations}:
        st.session_state[CONV] = current = None
    sb.subheader("Conversations")
    if not conversations:
        sb.caption("No conversations yet: type a message to start one.")
    for conv in conversations:
        sb.button(
            plain(conv.title),
            key=f"conv_{conv.id}",
            on_click=_open,
            args=(conv.id,),
            type="primary" if conv.id == current else "secondary",
            width="stretch",
            help=f"Last active {conv.updated_at:%Y-%m-%d %H:%M}",
        )

    if current is not None:
        conv = next(c for c in conversations if c.id == current)
        with sb.expander("Rename or delete this conversation"):
            st.text_input("Title", value=conv.title, key=f"rename_title_{conv.id}", max_chars=200)
            st.button("Rename", key="rename", on_click=_rename, args=(service, conv.id))
            st.button(
                "Delete conversation", key="delete", type="primary",
                on_click=_delete, args=(service, conv.id),
            )

    current_conv = next((c for c in conversations if c.id == current), None)
    documents = _document_choice(service, current_conv)

    sb.toggle(
        "Compare mode (A/B)", key="compare_mode",
        help="Each message gets two answers side by side; vote for the better one. "
        "Model versions stay hidden until you vote.",
    )
    d = service.default_params()
    with sb.expander("Generation settings"):
        temperature = st.slider("Temperature (0 = greedy)", 0.0, 2.0, d.temperature, 0.05, key="temperature")
        top_p = st.slider("Top-p", 0.05, 1.0, d.top_p, 0.05, key="top_p")
        max_new = st.number_input("Max new tokens", 1, 4096, d.max_new_tokens, 16, key="max_new_tokens")
        system = st.text_area("System prompt", d.system_prompt, key="system_prompt")
    gen = service.generator
    loaded = getattr(gen, "loaded", None)
    where = f" · {loaded.device.type}/{str(loaded.dtype).removeprefix('torch.')}" if loaded else ""
    sb.caption(f"Model: {gen.model_id} · version {gen.model_version}{where}")
    return GenerationParams(float(temperature), float(top_p), int(max_new), system), documents


def _document_choice(service: ChatService, conv: StoredConversation | None) -> DocumentChoice:
    """Whether (and which) documents this conversation's answers use."""
    library = resources.library()
    docs = library.store.list_documents()
    stored = conv.documents if conv else DocumentChoice()
    # Widgets are keyed per conversation so that switching conversations shows its choice.
    suffix = conv.id if conv else "new"
    with st.sidebar.expander("Documents", expanded=bool(docs)):
        if not docs:
            st.caption("No documents yet: attach files to a message or use the Documents page.")
            return stored
        use = st.toggle("Answer from documents", value=stored.use_documents, key=f"use_docs_{suffix}")
        names = {d.id: d.name for d in docs}
        chosen = st.multiselect(
            "Only these (empty = all)", options=list(names), format_func=names.get,
            default=[i for i in (stored.document_ids or ()) if i in names],
            key=f"doc_filter_{suffix}", disabled=not use,
        )
    choice = DocumentChoice(use, tuple(chosen) or None)
    if conv is not None and choice != stored:
        _guard(service.store.set_document_choice, conv.id, choice)
    return choice


def _open(conversation_id: int | None) -> None:
    st.session_state[CONV] = conversation_id


def _rename(service: ChatService, conversation_id: int) -> None:
    title = st.session_state.get(f"rename_title_{conversation_id}", "")
    _guard(service.store.rename_conversation, conversation_id, title)


def _delete(service: ChatService, conversation_id: int) -> None:
    if _guard(service.store.delete_conversation, conversation_id) is not _FAILED:
        st.session_state[CONV] = None


# -- conversation ------------------------------------------------------------------------------
def _settle_pending_reply() -> None:
    """Finish the answer an interrupted run was streaming before reading the conversation.

    With fast reruns, Streamlit starts the new run on a new thread while the old one is
    still unwinding; without this wait the new run could render before the partial
    answer is stored, and the answer would seem lost until the next click.
    """
    pending = st.session_state.pop(PENDING, None)
    if pending is not None and not pending.done.is_set():
        pending.close()
        pending.done.wait(timeout=30)


def _conversation(
    service: ChatService, params: GenerationParams, documents: DocumentChoice
) -> None:
    _settle_pending_reply()
    if EDIT_ERROR in st.session_state:
        st.error(st.session_state.pop(EDIT_ERROR))
    current = st.session_state.get(CONV)
    messages: list[StoredMessage] = []
    every: dict[int, StoredMessage] = {}
    comparisons: dict = {}
    if current is not None:
        try:
            every = {m.id: m for m in service.store.messages(current, include_inactive=True)}
            messages = [m for m in every.values() if m.active]
            comparisons = service.comparisons.for_conversation(current)
        except ConversationNotFound:
            st.session_state[CONV] = current = None
        except AssistantError as err:
            st.error(str(err))
    if not messages:
        st.title("💬 Assistant")
        st.caption("Ask anything. Answers stream from the local model; rate them with 👍 / 👎.")

    for m in messages:
        pending = comparisons.get(m.reply_to_id) if m.role == "assistant" else None
        if pending is not None and pending.vote is None:
            _ballot(service, pending, every)
            continue
        with st.chat_message(m.role):
            if m.role == "assistant":
                _answer(service, m)
                if pending is not None:
                    _verdict(pending, every)
            else:
                st.markdown(m.content)

    regenerate = st.session_state.pop(REGENERATE, None)
    if regenerate is not None:
        try:
            reply = service.regenerate(regenerate, params)
        except (AssistantError, ValueError) as err:
            st.error(str(err))
        else:
            _stream(reply)

    submitted = st.chat_input(
        "Message the assistant (attach documents with the clip)",
        key="chat_input",
        max_chars=service.settings.max_message_chars,
        accept_file="multiple",
        max_upload_size=max(1, math.ceil(service.settings.retrieval.max_upload_mb)),
        file_type=sorted(s.lstrip(".") for s in SUPPORTED_SUFFIXES),
        submit_mode="disable",
    )
    if submitted is None:
        return
    prompt = submitted if isinstance(submitted, str) else submitted.text
    files = [] if isinstance(submitted, str) else list(submitted.files)
    if files:
        with st.chat_message("user"):
            st.caption("Attached: " + ", ".join(f.name for f in files))
            ingest_uploads(resources.library(), files)
        if not prompt.strip():
            return
    compare = st.session_state.get("compare_mode", False)
    try:
        if compare:
            a, b = service.compare(current, prompt, params, documents)
        else:
            reply = service.send(current, prompt, params, documents)
    except AssistantError as err:
        st.error(str(err))
        return
    st.session_state[CONV] = (a if compare else reply).conversation_id
    with st.chat_message("user"):
        st.markdown(prompt)
    if compare:
        _stream_pair(service, a, b)
    else:
        _stream(reply)


def _stream_pair(service: ChatService, a, b) -> None:  # noqa: ANN001
    """Compare mode: stream A then B side by side; the vote comes after the rerun."""
    left, right = st.columns(2)
    for col, label, reply in ((left, "A", a), (right, "B", b)):
        with col, st.chat_message("assistant"):
            st.caption(f"Answer {label}")
            st.session_state[PENDING] = reply
            try:
                st.write_stream(reply)
            except AssistantError as err:
                st.error(str(err))
            finally:
                reply.close()
    st.session_state.pop(PENDING, None)
    if a.message is not None and b.message is not None:
        _guard(service.record_comparison, a, b)
    st.rerun()


def _ballot(service: ChatService, cmp, every: dict) -> None:  # noqa: ANN001
    """Two answers side by side, model names hidden until the vote."""
    left, right = st.columns(2)
    for col, label, mid in ((left, "A", cmp.a_id), (right, "B", cmp.b_id)):
        with col, st.chat_message("assistant"):
            st.caption(f"Answer {label}")
            st.markdown(every[mid].content)
    row = st.container(horizontal=True, gap="small")
    for vote, text in (("a", "A is better"), ("b", "B is better"), ("tie", "Tie"), ("both_bad", "Both bad")):
        row.button(text, key=f"vote_{vote}_{cmp.id}", on_click=_guard_cb,
                   args=(service.comparisons.vote, cmp.id, vote))


def _verdict(cmp, every: dict) -> None:  # noqa: ANN001
    a, b = every[cmp.a_id], every[cmp.b_id]
    result = {"a": "A won", "b": "B won", "tie": "a tie", "both_bad": "both bad"}[cmp.vote]
    versions = f"A: {_version(a)}, B: {_version(b)}"
    st.caption(f":material/balance: Compared: {result} ({versions})")


def _version(m: StoredMessage) -> str:
    return m.record.model_version if m.record else "?"


def _stream(reply) -> None:  # noqa: ANN001
    """Show an answer as it is generated, with a Stop button; then rerun to show it stored."""
    with st.chat_message("assistant"):
        for notice in reply.notices:
            st.info(notice)
        # Clicking Stop reruns the script, which interrupts write_stream below; the
        # rerun then shows the stored partial answer with its rating widgets.
        stop = st.empty()
        stop.button("Stop", key="stop_generation", icon=":material/stop_circle:")
        st.session_state[PENDING] = reply
        try:
            st.write_stream(reply)
        except AssistantError as err:
            st.error(str(err))
            return
        finally:
            reply.close()  # interrupted or failed: stop the worker, keep what was produced
        stop.empty()
    st.session_state.pop(PENDING, None)
    st.rerun()


def _sources(m: StoredMessage) -> None:
    """The cited sources under an answer (expandable), then the others it was shown."""
    cited = [src for src in m.sources if src.cited]
    others = [src for src in m.sources if not src.cited]
    for src in cited:
        where = f" · {src.location}" if src.location else ""
        label = f"[{src.rank}] {plain(src.document_name)}{plain(where)}"
        with st.expander(label, icon=":material/format_quote:"):
            st.text(src.text)
    if others:
        label = "Sources shown to the model" if not cited else "Other sources shown to the model"
        with st.expander(f"{label} ({len(others)})", icon=":material/library_books:"):
            for src in others:
                where = f" · {src.location}" if src.location else ""
                st.markdown(f"**[{src.rank}] {plain(src.document_name)}{plain(where)}**")
                st.text(src.text)


def _answer(service: ChatService, m: StoredMessage) -> None:
    shown = m.edited or m.content
    st.markdown(annotate(shown, [s.text for s in m.sources])[0] if m.sources else shown)
    if m.edited:
        with st.expander("Edited by you: the model's original answer", icon=":material/edit_note:"):
            st.text(m.content)
    if m.sources:
        _sources(m)
    _answer_footer(service, m)


def _answer_footer(service: ChatService, m: StoredMessage) -> None:
    r = m.record
    if r is not None:
        if r.trimmed_turns:
            st.caption(":material/info: " + trim_notice(r.trimmed_turns, service.generator.context_window))
        bits = [
            f"{r.model_version}",
            f"{r.completion_tokens} tokens",
            f"{r.latency_ms / 1000:.1f} s",
            f"T={r.params.get('temperature')}",
        ]
        if r.stopped:
            bits.insert(0, ":material/stop_circle: stopped")
        st.caption(" · ".join(bits), help=f"Model: {r.model_id}\n\nPrompt tokens: {r.prompt_tokens}")
    key = f"fb_{m.id}"
    default = {1: 1, -1: 0}.get(m.rating)
    row = st.container(horizontal=True, vertical_alignment="center", gap="small")
    with row:
        st.feedback("thumbs", key=key, default=default, on_change=_rate, args=(service, m.id))
        st.text_input(
            "Comment", value=m.comment or "", key=f"comment_{m.id}",
            placeholder="Why? (optional, saved with your rating)",
            label_visibility="collapsed", on_change=_rate, args=(service, m.id),
        )
    st.pills(
        "Tags", TAGS, selection_mode="multi", default=[t for t in m.tags if t in TAGS],
        key=f"tags_{m.id}", label_visibility="collapsed", on_change=_rate, args=(service, m.id),
    )
    _actions(service, m)


def _actions(service: ChatService, m: StoredMessage) -> None:
    """Regenerate, flip between the versions of this answer, mark the best, edit."""
    # A horizontal container keeps the row on one line at phone width too (columns stack).
    row = st.container(horizontal=True, vertical_alignment="center", gap="small")
    row.button(
        "", key=f"regen_{m.id}", icon=":material/refresh:", help="Answer again (keeps this one)",
        on_click=_set, args=(REGENERATE, m.id), disabled=m.reply_to_id is None,
    )
    alts = m.alternatives
    if len(alts) > 1:
        i = alts.index(m.id)
        row.button(
            "", key=f"alt_prev_{m.id}", icon=":material/chevron_left:", disabled=i == 0,
            help="Previous version", on_click=_guard_cb, args=(service.store.set_active, alts[i - 1]),
        )
        row.caption(f"{i + 1} / {len(alts)}", width="content")
        row.button(
            "", key=f"alt_next_{m.id}", icon=":material/chevron_right:",
            disabled=i == len(alts) - 1, help="Next version",
            on_click=_guard_cb, args=(service.store.set_active, alts[min(i + 1, len(alts) - 1)]),
        )
        row.button(
            "Best" if not m.chosen else "Best ✓", key=f"best_{m.id}",
            type="primary" if m.chosen else "secondary", disabled=m.chosen,
            help="Mark this version the best: the others become 'rejected' in training data",
            on_click=_guard_cb, args=(service.store.choose, m.id),
        )
    with row.popover("", icon=":material/edit:", help="Write a better answer"):
        st.text_area("Your better answer", value=m.edited or m.content, key=f"edit_text_{m.id}")
        st.button("Save edit", key=f"edit_save_{m.id}", on_click=_save_edit, args=(service, m.id))


def _set(key: str, value) -> None:  # noqa: ANN001
    st.session_state[key] = value


def _guard_cb(fn, *args) -> None:  # noqa: ANN001
    _guard(fn, *args)


def _save_edit(service: ChatService, message_id: int) -> None:
    try:
        service.store.edit(message_id, st.session_state.get(f"edit_text_{message_id}", ""))
    except (AssistantError, ValueError) as err:
        st.session_state[EDIT_ERROR] = str(err)


def _rate(service: ChatService, message_id: int) -> None:
    value = st.session_state.get(f"fb_{message_id}")
    rating = None if value is None else (1 if value == 1 else -1)
    comment = st.session_state.get(f"comment_{message_id}") or None
    tags = st.session_state.get(f"tags_{message_id}") or ()
    _guard(service.store.rate, message_id, rating, comment, tags)


_FAILED = object()


def _guard(fn, *args):  # noqa: ANN001, ANN202
    """Call a store function; show a domain error instead of raising it."""
    try:
        return fn(*args)
    except (AssistantError, ValueError) as err:
        st.error(str(err))
        return _FAILED
