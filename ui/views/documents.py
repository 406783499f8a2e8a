import streamlit as st

# The first import loads torch, transformers and FAISS (seconds): say so instead of a blank page.
with st.spinner("Starting the assistant..."):
    from ui import documents_page

documents_page.render()
