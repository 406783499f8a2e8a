"""Streamlit entry point: ``streamlit run ui/app.py`` (or ``make run``)."""

import streamlit as st

st.set_page_config(page_title="Assistant", page_icon=":material/forum:", layout="centered")
st.navigation(
    [
        st.Page("views/chat.py", title="Chat", icon=":material/chat:", default=True),
        st.Page("views/documents.py", title="Documents", icon=":material/description:"),
        st.Page("views/feedback.py", title="Feedback", icon=":material/thumbs_up_down:"),
        st.Page("views/models.py", title="Models", icon=":material/model_training:"),
    ]
).run()
