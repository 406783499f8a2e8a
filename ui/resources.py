"""Process-wide resources, shared by every browser session: settings, database, models."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

import streamlit as st

from assistant.bootstrap import Library, build_chat_service, open_database, open_library, open_registry
from assistant.config import Settings, get_settings
from assistant.errors import AssistantError
from assistant.registry import Registry
from assistant.storage import Database

if TYPE_CHECKING:  # importing it loads torch and transformers (seconds): the pages do, later
    from assistant.chat.service import ChatService
    from assistant.storage.users import User

_T = TypeVar("_T")


@st.cache_resource(show_spinner=False)
def settings() -> Settings:
    return get_settings()


@st.cache_resource(show_spinner=False)
def database() -> Database:
    return open_database(settings())


@st.cache_resource(show_spinner=False)
def registry() -> Registry:
    return open_registry(settings(), database())


@st.cache_resource(show_spinner=False)
def _library() -> Library:
    return open_library(settings(), database())


@st.cache_resource(show_spinner=False)
def _chat_service() -> ChatService:
    return build_chat_service(settings(), database(), library=_library())


def _or_stop(build: Callable[[], _T], message: str) -> _T:
    """Build a resource under a spinner; on a domain error show the reason and stop the
    page, so the user sees what to fix instead of a traceback."""
    try:
        with st.spinner(message, show_time=True):
            return build()
    except AssistantError as err:
        st.error(str(err))
        st.stop()
        raise  # unreachable: st.stop() raises


MODEL_LOADING = "Loading the model..."


def library() -> Library:
    return _or_stop(_library, "Loading the embedding model and the search index...")


def chat_service(owner: User | None) -> ChatService:
    """The chat service, seeing only ``owner``'s conversations (the session's user, from
    ``ui.login.current_user``; None with login off)."""
    library()  # its own phase first (the service needs it): the page names what it waits for
    service = _or_stop(_chat_service, MODEL_LOADING)
    return service.for_owner(owner)


def try_chat_service(owner: User | None) -> ChatService | None:
    """The chat service for ``owner``, or None after showing why it could not be built: for
    pages that are still useful without the model (the Models page lists versions and runs)."""
    try:
        with st.spinner(MODEL_LOADING, show_time=True):
            return _chat_service().for_owner(owner)
    except AssistantError as err:
        st.error(str(err))
        return None
