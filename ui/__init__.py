"""Streamlit-side helpers shared by the pages (core never imports streamlit)."""
