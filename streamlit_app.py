"""Router: page config, the sidebar workspace picker, and navigation over the pages that work."""

import streamlit as st

from ui.common import workspace_picker

st.set_page_config(page_title="Image classifier: from model to production", page_icon="🐻", layout="wide")
workspace_picker()
pages = {
    "": [st.Page("app_pages/workspaces.py", title="Workspaces", icon=":material/folder_open:", default=True)],
    "Data": [
        st.Page("app_pages/gather.py", title="Gather", icon=":material/download:"),
        st.Page("app_pages/explore.py", title="Explore", icon=":material/insights:"),
        st.Page("app_pages/clean.py", title="Clean", icon=":material/cleaning_services:"),
    ],
    "Model": [
        st.Page("app_pages/train.py", title="Train", icon=":material/model_training:"),
        st.Page("app_pages/evaluate.py", title="Evaluate", icon=":material/fact_check:"),
    ],
}
st.navigation(pages).run()
