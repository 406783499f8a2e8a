"""What the Models page's parts share in the session: which version is shown, one to select
on the next run, and the notices a callback leaves for the next run to show."""

from __future__ import annotations

import streamlit as st

SELECTED = "models_version"  # the version whose details are shown
SELECT_NEXT = "_models_select_next"  # a version to select on the next full run
NOTICE = "_models_notice"  # {place: (level, text)} left by a callback for this run


# -- notices left by callbacks -----------------------------------------------------------------
def notify(place: str, level: str, text: str) -> None:
    st.session_state.setdefault(NOTICE, {})[place] = (level, text)


def show_notice(place: str) -> None:
    notice = st.session_state.get(NOTICE, {}).pop(place, None)
    if notice is not None:
        level, text = notice
        {"error": st.error, "success": st.success, "info": st.info}[level](text)
