"""Router: page config, the sidebar workspace picker, and navigation over the pages that work.

IMAGEDP_END_USER=1 serves only the prediction page for IMAGEDP_WORKSPACE: the deployable end-user app.
"""

import streamlit as st

from ui.common import end_user_mode, workspace_picker

if end_user_mode():
    st.set_page_config(page_title="Prediction", page_icon="🐻", layout="centered")
    workspace_picker(visible=False)
    st.navigation([st.Page("app_pages/predict.py", title="Predict", default=True)], position="hidden").run()
    st.stop()

st.set_page_config(page_title="Image classifier: from model to production", page_icon="🐻", layout="wide")
workspace_picker()
pages = {
    "": [
        st.Page("app_pages/overview.py", title="Overview", icon=":material/route:", default=True),
        st.Page("app_pages/workspaces.py", title="Workspaces", icon=":material/folder_open:"),
    ],
    "Drivetrain": [
        st.Page("app_pages/objective.py", title="Objective", icon=":material/flag:"),
        st.Page("app_pages/levers.py", title="Levers", icon=":material/tune:"),
        st.Page("app_pages/policy.py", title="Policy", icon=":material/rule:"),
        st.Page("app_pages/summary.py", title="Summary", icon=":material/summarize:"),
    ],
    "Data": [
        st.Page("app_pages/gather.py", title="Gather", icon=":material/download:"),
        st.Page("app_pages/explore.py", title="Verify and explore", icon=":material/verified:"),
        st.Page("app_pages/clean.py", title="Clean", icon=":material/cleaning_services:"),
    ],
    "Model": [
        st.Page("app_pages/train.py", title="Train", icon=":material/model_training:"),
        st.Page("app_pages/evaluate.py", title="Evaluate", icon=":material/fact_check:"),
    ],
    "Production": [
        st.Page("app_pages/predict.py", title="Predict", icon=":material/photo_camera:"),
        st.Page("app_pages/monitor.py", title="Monitor", icon=":material/monitoring:"),
        st.Page("app_pages/rollout.py", title="Rollout", icon=":material/alt_route:"),
        st.Page("app_pages/review.py", title="Review", icon=":material/how_to_reg:"),
    ],
}
st.navigation(pages, expanded=True).run()  # 17 pages: all visible, no "View more"
