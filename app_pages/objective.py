"""Objective: the outcome wanted, the decision it serves, who is affected, how success is measured."""

import streamlit as st

from core.drivetrain import objective
from ui.common import current_workspace

ws = current_workspace()
st.title("Objective")
st.caption("Drivetrain step 1: what outcome are we trying to achieve? Write it for the people who will read the summary.")
saved = objective.load_objective(ws)
with st.form("objective_form"):
    statement = st.text_area(
        "Outcome wanted", saved.statement, placeholder="Warn hikers about grizzlies; never scare them over teddy bears."
    )
    decision = st.text_area(
        "Decision the model serves",
        saved.decision,
        placeholder="For each trail-camera photo: raise an alert, do nothing, or ask a ranger.",
    )
    affected = st.text_area("Who is affected", saved.affected, placeholder="Hikers on the trail, the rangers who review photos.")
    success = st.text_area(
        "Success measure", saved.success, placeholder="Missed grizzlies per season (target 0); ranger hours per week."
    )
    if st.form_submit_button("Save objective"):
        objective.save_objective(ws, objective.Objective(statement.strip(), decision.strip(), affected.strip(), success.strip()))
        st.session_state["objective_saved"] = True
        st.rerun()
if st.session_state.pop("objective_saved", False):
    st.success("Saved. Next: the actions you can take, on **Levers**.")
if not saved.complete:
    st.info("Fill in all four to complete this step of the Drivetrain walk.")
