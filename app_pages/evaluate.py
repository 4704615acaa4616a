"""Evaluate: test beside valid, confusion matrix, per-class metrics, top losses, calibration, and two
versions compared on the test images both held out."""

import pandas as pd
import streamlit as st

from core.model import evaluation, registry
from core.workspace import store
from ui.common import attempt, current_workspace, image_grid, pick_version, rate_metric, thumbnails
from ui.splits import draw_test_button

ws = current_workspace()
st.title("Evaluate")
version, names = pick_version(ws, "Model version", "eval_version", "No model yet: train one on the Train page.")
valid = attempt(lambda: evaluation.load(ws, version))
with st.spinner("Scoring test images that joined after this version was trained..."):
    test = attempt(lambda: evaluation.load_test(ws, version))
if said := st.session_state.pop("split_said", None):
    st.success(said)

c1, c2, c3, c4 = st.columns(4)
rate_metric(c1, "Test accuracy", test.rate, "no test images")
c2.metric("Test images", len(test.ids))
rate_metric(c3, "Validation accuracy", valid.rate, "no validation images")
c4.metric("Validation images", len(valid.ids))
st.caption(
    "Test images were held out from everything: no weight, epoch, temperature or threshold was chosen on them, so "
    "test accuracy is what to expect on new images like them. Validation accuracy is optimistic: the validation "
    "images chose the best epoch. Under each accuracy: its 95% interval (Wilson) and the number of images."
    + (f" {test.unknown} test image(s) have a label this version was not trained on and are left out." if test.unknown else "")
)
if not test.ids:
    st.warning(
        "This version has no test images to report on: the workspace has none, or all of them were in its "
        "training or validation images. Figures below are on validation images (optimistic)."
    )
    if not (store.images(ws)["split"] == "test").any():
        draw_test_button(ws, "eval_draw_test")
shown = st.radio(
    "Figures below on",
    ["test", "validation"] if test.ids else ["validation"],
    horizontal=True,
    key="eval_images",
    format_func=lambda k: f"{k} images ({len(test.ids) if k == 'test' else len(valid.ids)})",
)
ev = test if shown == "test" else valid
table, ece = evaluation.reliability(ev)


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
        f"The {shown} images with the highest loss, as fastai's plot_top_losses: each tile says predicted / "
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
    st.metric("Expected calibration error", f"{ece:.3f}")
    st.plotly_chart(evaluation.reliability_figure(ev), key="eval_reliability")
    st.dataframe(table, hide_index=True, width="stretch")

with compare:
    others = [v for v in names if v != version]
    if not others:
        st.write("Train another version to compare it with this one.")
    else:
        other = st.selectbox("Compare with", others, key="eval_other")
        st.caption("As each version was trained (validation images differ if the split changed in between):")
        st.dataframe(registry.compare(ws, [other, version]), hide_index=True, width="stretch")
        old, new = attempt(lambda: evaluation.held_out_by_both(ws, other, version))
        if not old.ids:
            st.warning(
                f"No test image was held out by both {other} and {version} (one of them trained or selected on every "
                "test image there is), so they cannot be compared fairly: draw or add test images and look again."
            )
        else:
            st.subheader(f"On the same {len(old.ids)} test images, held out by both")
            st.dataframe(
                evaluation.side_by_side([old, new]),
                hide_index=True,
                width="stretch",
                column_config={"accuracy": st.column_config.NumberColumn(format="%.3f")},
            )
            changed = evaluation.changed_predictions(old, new)
            st.subheader(f"Predictions that changed: {len(changed)}")
            if len(changed):
                paths = store.images(ws, status=None).set_index("id")["path"]
                shown_changed = changed[changed["id"].isin(paths.index)].head(24)
                image_grid(
                    [ws.root / paths[i] for i in shown_changed["id"]],
                    [f"{r[3]} → {r[4]} (actual {r[2]})" for r in shown_changed.itertuples()],
                    columns=8,
                )
                st.dataframe(changed, hide_index=True, width="stretch")
