"""Streamlit entry point: ``streamlit run ui/app.py`` (or ``make run``)."""

import streamlit as st

from ui import chat_page

st.set_page_config(page_title="Assistant", page_icon="💬", layout="centered")
chat_page.render()
