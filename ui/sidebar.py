"""The chat page's sidebar: conversations, their document choice, generation settings."""

from __future__ import annotations

import streamlit as st

from assistant.chat.service import ChatService
from assistant.errors import AssistantError
from assistant.cpu import cpu_info
from assistant.engines.registry import names as engine_names
from assistant.engines.generation import GenerationParams, describe, setup_of
from assistant.storage.conversations import DocumentChoice, StoredConversation
from assistant.versions import BASE_VERSION, REWARD_KIND
from ui import resources
from ui.state import CONV, FAILED, guard
from ui.text import plain

COMPARE_VERSIONS = "_compare_versions"  # the (first, second) versions compare mode pits


def compare_versions() -> tuple[str, str] | None:
    """The two versions picked for compare mode (None: two samples of the active one)."""
    return st.session_state.get(COMPARE_VERSIONS)


def render(service: ChatService) -> tuple[GenerationParams, DocumentChoice]:
    sb = st.sidebar
    sb.button(
        "New chat", key="new_chat", icon=":material/add:", on_click=_open, args=(None,),
        width="stretch",
    )

    try:
        conversations = service.store.list_conversations(chats_only=True)
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
        with sb.expander("Rename or delete", icon=":material/edit:"):
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
    st.session_state[COMPARE_VERSIONS] = (
        _compare_versions(service) if st.session_state.get("compare_mode") else None
    )
    d = service.default_params()
    with sb.expander("Generation settings"):
        temperature = st.slider("Temperature (0 = greedy)", 0.0, 2.0, d.temperature, 0.05, key="temperature")
        top_p = st.slider("Top-p", 0.05, 1.0, d.top_p, 0.05, key="top_p")
        max_new = st.number_input("Max new tokens", 1, 4096, d.max_new_tokens, 16, key="max_new_tokens")
        penalty = st.slider(
            "Repetition penalty (1 = off)", 1.0, 2.0, d.repetition_penalty, 0.05,
            key="repetition_penalty",
            help="Discourages repeating the last 64 tokens: without it, a small model can "
            "loop on one sentence until the token limit.")
        system = st.text_area("System prompt", d.system_prompt, key="system_prompt")
    gen = service.generator
    # The engine says how it runs here (its device and dtype, its weight layout) in setup_of.
    sb.caption(f"Model: {plain(describe(gen))}", help=(
        "The engine that runs the model and its weight format; set ASSISTANT_ENGINE "
        f"({', '.join(engine_names())}) to change it."))
    setup = setup_of(gen)
    if setup:
        sb.caption(f"Engine: {plain(setup)}", help=f"This machine's CPU: {cpu_info().line()}.")
    return GenerationParams(float(temperature), float(top_p), int(max_new), system,
                            float(penalty)), documents


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
        guard(service.store.set_document_choice, conv.id, choice)
    return choice


def _compare_versions(service: ChatService) -> tuple[str, str] | None:
    """Two pickers when there are trained chat versions; by default the active one twice."""
    if service.registry is None:
        return None
    try:
        names = [v.name for v in service.registry.list() if v.kind != REWARD_KIND]
    except AssistantError as err:
        st.sidebar.error(str(err))
        return None
    if not names:
        st.sidebar.caption("No trained version yet: A and B are two samples of the base model.")
        return None
    options = [BASE_VERSION, *reversed(names)]
    active = service.version if service.version in options else BASE_VERSION
    try:
        opponent = service.registry.default_opponent(active)
    except AssistantError:
        opponent = None
    with st.sidebar.container(border=True):
        st.caption("A/B versions")
        pick = dict(
            options=options,
            help="The versions that answer. Which one is A and which B is shuffled, and "
            "stays hidden until you vote.",
        )
        # By default the version in use against the one it was trained from (or the one
        # in use before it): the same version twice compares nothing.
        first = st.selectbox("First version", key="compare_version_1", index=options.index(active), **pick)
        second = st.selectbox(
            "Second version", key="compare_version_2",
            index=options.index(opponent) if opponent in options else options.index(active), **pick,
        )
        if first == second:
            st.caption("The same version twice: two samples of it (temperature at least 0.7).")
    return first, second


def _open(conversation_id: int | None) -> None:
    st.session_state[CONV] = conversation_id


def _rename(service: ChatService, conversation_id: int) -> None:
    title = st.session_state.get(f"rename_title_{conversation_id}", "")
    guard(service.store.rename_conversation, conversation_id, title)


def _delete(service: ChatService, conversation_id: int) -> None:
    if guard(service.store.delete_conversation, conversation_id) is not FAILED:
        st.session_state[CONV] = None


# -- conversation ------------------------------------------------------------------------------
