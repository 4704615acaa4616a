"""Summary for stakeholders: objective, levers, utility matrix, chosen policy, outcome per 1,000 images; HTML export."""

import pandas as pd
import streamlit as st

from core.drivetrain import levers, summary
from core.model import registry
from ui.common import attempt, current_workspace

ws = current_workspace()
st.title("Decision summary")
if registry.production_version(ws) is None:
    st.info("The summary needs a production model: train one and promote it on the **Train** page.")
    st.stop()
found = attempt(lambda: summary.decision_summary(ws))
objective, utility, policy, outcomes = found.objective, found.utility, found.policy, found.outcomes
st.download_button(
    "Download as HTML", found.html, file_name=f"{ws.name}-decision-summary.html", mime="text/html", key="summary_download"
)
if not found.accepted:
    st.warning("No policy is accepted yet: this shows the default policy. Accept one on **Policy**.")

st.subheader("Objective")
NOT_YET = "_not stated yet_"
st.markdown(
    "  \n".join(
        f"**{label}:** {getattr(objective, field) or NOT_YET}"
        for label, field in [
            ("Outcome wanted", "statement"),
            ("Decision served", "decision"),
            ("Who is affected", "affected"),
            ("Success measure", "success"),
        ]
    )
)
st.subheader("Levers")
st.dataframe(
    pd.DataFrame({"action": utility.actions, f"cost of use ({utility.unit})": utility.costs}), hide_index=True, height="content"
)
st.subheader(f"Utility matrix ({utility.unit})")
st.dataframe(levers.matrix_frame(utility), width="stretch", height="content")
st.subheader("Chosen policy")
text = summary.describe(policy)
st.write(text[0].upper() + text[1:] + ".")
st.subheader("Expected outcome per 1,000 images")
st.caption(found.measured_on)
st.dataframe(summary.outcomes_frame(outcomes, utility.unit), hide_index=True, width="stretch")
st.subheader("True class × action")
st.dataframe(found.confusion, width="stretch", height="content")
