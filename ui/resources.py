"""Process-wide resources, shared by every browser session: settings, database, model."""

from __future__ import annotations

import streamlit as st

from assistant.bootstrap import build_chat_service, open_database
from assistant.chat import ChatService
from assistant.config import Settings, get_settings
from assistant.errors import AssistantError
from assistant.storage import Database


@st.cache_resource(show_spinner=False)
def settings() -> Settings:
    return get_settings()


@st.cache_resource(show_spinner=False)
def database() -> Database:
    return open_database(settings())


@st.cache_resource(show_spinner=False)
def _chat_service() -> ChatService:
    return build_chat_service(settings(), database())


def chat_service() -> ChatService:
    """The chat service, loading the model on first use (with a spinner); on failure show
    the reason and stop the page, so the user sees what to fix instead of a traceback."""
    try:
        with st.spinner("Loading the model (the first start converts it once, ~30 s)..."):
            return _chat_service()
    except AssistantError as err:
        st.error(str(err))
        st.stop()
        raise  # unreachable: st.stop() raises
