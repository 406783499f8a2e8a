"""Session-state keys shared by the chat page's parts, and the error guard for callbacks."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import streamlit as st

from assistant.errors import AssistantError

CONV = "conversation_id"  # the open conversation
PENDING = "_pending_reply"  # the answer an interrupted run was streaming
REGENERATE = "_regenerate"  # an answer to generate again on this run
CONTINUE = "_continue"  # an answer cut at the token limit, to continue on this run
EDIT_ERROR = "_edit_error"  # a rejected edit, shown on the next run
PAIR_ERROR = "_pair_error"  # why a compare-mode answer failed, shown on the next run

FAILED = object()
_T = TypeVar("_T")


def guard(fn: Callable[..., _T], *args) -> _T | object:
    """Call a store function; show a domain error instead of raising it."""
    try:
        return fn(*args)
    except AssistantError as err:
        st.error(str(err))
        return FAILED


def guard_cb(fn: Callable[..., object], *args) -> None:
    """``guard`` for widget callbacks (which must not return a value)."""
    guard(fn, *args)


def set_state(key: str, value: object) -> None:
    st.session_state[key] = value
