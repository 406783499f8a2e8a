import streamlit as st

# The first import loads torch, transformers and FAISS (seconds): say so instead of a blank page.
with st.spinner("Starting the assistant..."):
    from ui import feedback_page

feedback_page.render()
