"""Evaluate: confusion matrix, per-class metrics, top losses, calibration, and two versions compared."""

import pandas as pd
import streamlit as st

from core.model import evaluation, registry
from core.workspace import store
from ui.common import attempt, current_workspace, image_grid, pick_version, thumbnails

ws = current_workspace()
st.title("Evaluate")
version, names = pick_version(ws, "Model version", "eval_version", "No model yet: train one on the Train page.")
ev = attempt(lambda: evaluation.load(ws, version))
table, ece = evaluation.reliability(ev)
c1, c2, c3, c4 = st.columns(4)
c1.metric("Validation images", len(ev.ids))
c2.metric("Accuracy", f"{ev.accuracy:.1%}")
c3.metric("Error rate", f"{1 - ev.accuracy:.1%}")
c4.metric("Calibration error (ECE)", f"{ece:.3f}")


@st.dialog("Image", width="large")
def enlarge(row: pd.Series) -> None:
    st.image(thumbnails([ws.root / row["path"]], side=512)[0], width="stretch")
    st.write(
        f"actual **{row['actual']}**, predicted **{row['predicted']}** with probability "
        f"{row['probability']:.2f}; loss {row['loss']:.2f}; id `{row['id']}`"
    )


confusion, classes, worst, calibration, compare = st.tabs(
    ["Confusion matrix", "Per class", "Top losses", "Calibration", "Compare versions"]
)

with confusion:
    left, right = st.columns(2)
    left.plotly_chart(evaluation.confusion_figure(ev), key="eval_cm_counts")
    right.plotly_chart(evaluation.confusion_figure(ev, normalise=True), key="eval_cm_share")

with classes:
    st.dataframe(
        evaluation.per_class(ev),
        hide_index=True,
        width="stretch",
        column_config={c: st.column_config.NumberColumn(format="%.3f") for c in ("precision", "recall", "f1")},
    )
    st.subheader("Most confused")
    confused = evaluation.most_confused(ev)
    if len(confused):
        st.dataframe(confused, hide_index=True, width="stretch")
    else:
        st.write("No confusions.")

with worst:
    k = st.slider("Images", 4, 48, 16, step=4, key="eval_top_k")
    top = evaluation.top_losses(ws, ev, k)
    top = top[top["path"].notna()]
    st.caption(
        "The validation images with the highest loss, as fastai's plot_top_losses: each tile says predicted / "
        "actual, the loss and the probability of the prediction. Pick one to enlarge."
    )
    image_grid(
        [ws.root / p for p in top["path"]],
        [f"{r.predicted} / {r.actual}  \nloss {r.loss:.2f} · p {r.probability:.2f}" for r in top.itertuples()],
        columns=8,
    )
    pick = st.selectbox("Enlarge", ["—", *top["id"]], key="eval_enlarge")
    if pick != "—":
        enlarge(top[top["id"] == pick].iloc[0])

with calibration:
    st.plotly_chart(evaluation.reliability_figure(ev), key="eval_reliability")
    st.dataframe(table, hide_index=True, width="stretch")

with compare:
    others = [v for v in names if v != version]
    if not others:
        st.write("Train another version to compare it with this one.")
    else:
        other = st.selectbox("Compare with", others, key="eval_other")
        st.dataframe(registry.compare(ws, [other, version]), hide_index=True, width="stretch")
        changed = evaluation.changed_predictions(evaluation.load(ws, other), ev)
        st.subheader(f"Predictions that changed: {len(changed)}")
        if len(changed):
            paths = store.images(ws, status=None).set_index("id")["path"]
            shown = changed[changed["id"].isin(paths.index)].head(24)
            image_grid(
                [ws.root / paths[i] for i in shown["id"]],
                [f"{r[3]} → {r[4]} (actual {r[2]})" for r in shown.itertuples()],
                columns=8,
            )
            st.dataframe(changed, hide_index=True, width="stretch")
