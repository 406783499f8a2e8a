import streamlit as st

# The first import loads torch, transformers and TRL (seconds): say so instead of a blank page.
with st.spinner("Starting the assistant..."):
    from ui import models_page

models_page.render()
