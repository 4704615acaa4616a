"""Summary for stakeholders: objective, levers, utility matrix, chosen policy, outcome per 1,000 images; HTML export."""

import pandas as pd
import streamlit as st

from core import decisions, policies, registry
from ui.common import attempt, current_workspace

ws = current_workspace()
st.title("Decision summary")
if registry.production_version(ws) is None:
    st.info("The summary needs a production model: train one and promote it on the **Train** page.")
    st.stop()
v = attempt(lambda: policies.validation(ws))
policy, utility, policy_id, _ = policies.current(ws, v)
objective = decisions.load_objective(ws)
found = policies.active(ws, v.version)
if found:
    utility = found[2]  # the matrix the accepted policy was chosen under
outcomes, confusion = policies.held_out(utility, policy, v)
page = policies.summary_html(ws.name, objective, utility, policy, outcomes, confusion, v.version)
st.download_button(
    "Download as HTML", page, file_name=f"{ws.name}-decision-summary.html", mime="text/html", key="summary_download"
)
if not policy_id:
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
st.dataframe(decisions.matrix_frame(utility), width="stretch", height="content")
st.subheader("Chosen policy")
text = policies.describe(policy)
st.write(text[0].upper() + text[1:] + ".")
st.subheader("Expected outcome per 1,000 images")
st.caption(f"On the {outcomes[0].images} validation images of model {v.version} the optimizer does not fit on.")
st.dataframe(policies.outcomes_frame(outcomes, utility.unit), hide_index=True, width="stretch")
st.subheader("True class × action")
st.dataframe(confusion, width="stretch", height="content")
