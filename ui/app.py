"""Streamlit entry point: ``streamlit run ui/app.py`` (or ``make run``)."""

import streamlit as st

from assistant.operations.permissions import private_umask

private_umask()  # the database and everything written beside it: the owner's only

# An emoji, not ":material/...": Streamlit turns a material page icon into a favicon fetched
# from fonts.gstatic.com, telling a third party each time the app is opened. An emoji
# becomes an inline SVG (the icons inside the page come from Streamlit's bundled font).
st.set_page_config(page_title="Assistant", page_icon="💬", layout="centered")
# After a restart the first run imports the app's modules (seconds): the page says so from
# the first second instead of staying blank. The heavy libraries follow under the pages' own
# spinners, then the models under theirs.
with st.spinner("Starting the assistant...", show_time=True):
    from ui import login

login.gate()  # login off: None; on: the form until someone logs in
pages = [
    st.Page("views/chat.py", title="Chat", icon=":material/chat:", default=True),
    st.Page("views/documents.py", title="Documents", icon=":material/description:"),
    st.Page("views/feedback.py", title="Feedback", icon=":material/thumbs_up_down:"),
]
if login.may("train"):  # training, evaluating and activating versions: admins only
    pages.append(st.Page("views/models.py", title="Models", icon=":material/model_training:"))
st.navigation(pages).run()
