"""Summary, the stakeholder report: what the model decides and for whom, how good it is, what it gains, how
production is doing, the risks and the decision pending; every sentence written from the figures; HTML export."""

import streamlit as st

from core.drivetrain import levers
from core.production import prediction_log, stakeholder, stakeholder_html
from ui.common import attempt, current_workspace, log_settled, needs_production, table
from ui.production import production_verdict, verdict_icon

ws = current_workspace()
log_settled(ws)  # what this app just scored is in the log before the page reads it
st.title("Stakeholder report")
needs_production(ws, "the report is about the production model")
found = production_verdict(ws) if prediction_log.count(ws) else None
report = attempt(lambda: stakeholder.stakeholder_report(ws, found))
st.caption(f"Model {report.version} · generated {report.generated} UTC")
st.download_button(
    "Download as HTML (prints to PDF)",
    stakeholder_html.report_html(report),
    file_name=f"{ws.name}-stakeholder-report.html",
    mime="text/html",
    key="summary_download",
)
if found:
    with st.container(border=True, key="summary_verdict"):
        st.markdown(f"{verdict_icon(found)} **{found.headline}.** " + " ".join(found.reasons))
for section in report.sections:
    st.subheader(section.title)
    st.markdown("\n".join(f"- {s}" for s in section.sentences))
    if section.table is not None:
        table(section.table)
st.subheader("Risks")
st.markdown("\n".join(f"- {r}" for r in report.risks) if report.risks else "None found.")
st.subheader("Decision pending")
st.markdown(report.pending)
with st.expander("The decision's details: levers and utility matrix"):
    table(levers.matrix_frame(report.utility), index=True)
    table(report.comparison.outcomes[0].table, index=True)
    st.caption("True class × action on the validation images the policy was not fitted on.")
