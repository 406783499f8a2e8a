import streamlit as st

# The first import loads torch, transformers and FAISS (seconds): say so instead of a blank page.
with st.spinner("Loading the libraries (torch, transformers)...", show_time=True):
    from ui import chat_page

chat_page.render()
