"""Streamlit pages. The only package that imports streamlit; it turns domain errors into
``st.error`` / ``st.info`` messages."""
