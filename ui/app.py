"""Streamlit entry point: ``streamlit run ui/app.py`` (or ``make run``)."""

import streamlit as st

st.set_page_config(page_title="Assistant", page_icon=":material/forum:", layout="centered")
st.navigation(
    [
        st.Page("pages/chat.py", title="Chat", icon=":material/chat:", default=True),
        st.Page("pages/documents.py", title="Documents", icon=":material/description:"),
    ]
).run()
