"""The split panel: counts per label and split, drawing a test set, re-splitting (Train and Evaluate)."""

from __future__ import annotations

import streamlit as st

from core.workspace import split_ops
from core.workspace.paths import Workspace
from core.workspace.splits import ORIGINS, SplitPlan
from ui.common import attempt


def draw_test_button(ws: Workspace, key: str) -> None:
    plan = split_ops.plan_of(ws)
    if st.button(f"Draw a test set ({plan.test:.0%} of the images, from training images)", key=key):
        moved = attempt(lambda: split_ops.draw_test(ws))
        st.session_state["split_said"] = f"Moved {moved} training image(s) into test (audited)."
        st.rerun()


def split_panel(ws: Workspace) -> None:
    """What the split is, how it was made, and the two explicit ways to change it."""
    plan = split_ops.plan_of(ws)
    table = split_ops.counts(ws)
    totals = table.loc["all labels"]
    st.subheader("Split")
    if said := st.session_state.pop("split_said", None):
        st.success(said)
    st.caption(
        f"Each image's split is fixed when it arrives, from its content and the workspace's seed ({plan.seed}): "
        f"train {plan.train:.0%}, valid {plan.valid:.0%}, test {plan.test:.0%} in expectation. Relabelling or "
        "deleting an image moves no other one; train/ valid/ test/ folders you import keep theirs. Training learns "
        "from train; valid chooses the epoch, the temperature and the thresholds; test is only reported (Evaluate)."
    )
    c1, c2, c3 = st.columns(3)
    c1.metric("Train", int(totals["train"]))
    c2.metric("Valid", int(totals["valid"]))
    c3.metric("Test", int(totals["test"]))
    with st.expander("Per label, how each split was made, and changing the split"):
        st.dataframe(table, width="stretch")
        st.caption("How placed: " + ", ".join(f"{n} {ORIGINS.get(k, k)}" for k, n in split_ops.origins(ws).items()))
        if not totals["test"]:
            st.warning("No test images: every figure is on images that chose the model, so it is optimistic.")
            draw_test_button(ws, "split_draw_test")
        st.markdown("**Re-split everything** under a new plan (folder-placed images stay):")
        c1, c2, c3 = st.columns(3)
        seed = c1.number_input("Split seed", 0, 1_000_000, plan.seed, key="split_seed")
        valid = c2.slider("Valid share", 0.05, 0.5, plan.valid, 0.05, key="split_valid")
        test = c3.slider("Test share", 0.0, 0.4, plan.test, 0.05, key="split_test")
        sure = st.checkbox(
            "I understand: versions trained before keep their own images, so they are compared only on test images "
            "each of them held out",
            key="split_sure",
        )
        if st.button("Re-split", key="split_resplit", disabled=not sure):
            counts = attempt(lambda: split_ops.resplit(ws, SplitPlan(int(seed), float(valid), float(test))))
            st.session_state["split_said"] = "Re-split: " + ", ".join(f"{k} {v}" for k, v in counts.items())
            st.rerun()
