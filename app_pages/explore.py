"""Verify and explore: verify the images, then look at counts, sizes, brightness, samples, duplicates, quarantine."""

from pathlib import Path

import pandas as pd
import streamlit as st

from core.data import explore, verify
from core.workspace import store
from ui.common import attempt, current_workspace, image_grid, needs, next_step, progress_bar

ws = current_workspace()
st.title("Verify and explore")

if st.button(
    "Verify all images",
    key="explore_verify",
    help="Fully decode every image, quarantine the broken "
    "ones (moved, never deleted), catalog files placed in images/<label>/ by hand.",
):
    report = attempt(lambda: verify.verify_workspace(ws, on_progress=progress_bar("Verifying")))
    st.session_state["verify_report"] = (ws.name, report)
    st.rerun()
last = st.session_state.get("verify_report")
if last is not None and last[0] == ws.name:
    report = last[1]
    st.success(
        f"Checked {report.checked} images: {len(report.quarantined)} quarantined, "
        f"{len(report.adopted)} found on disk and cataloged."
    )
    if report.quarantined:
        st.dataframe(pd.DataFrame(report.quarantined), hide_index=True, width="stretch")
    for item in report.failed:
        st.warning(f"{item['source']}: {item['reason']}")
    next_step("app_pages/train.py", "Next: train a model")

catalog = store.images(ws)
quarantined = store.images(ws, status="quarantined")
exact = verify.exact_duplicate_groups(catalog) if not catalog.empty else []
near = verify.near_duplicate_groups(catalog) if not catalog.empty else []
c1, c2, c3, c4, c5 = st.columns(5)
c1.metric("Images", len(catalog))
c2.metric("Labels", catalog["label"].nunique())
c3.metric("Quarantined", len(quarantined))
c4.metric("Exact duplicate groups", len(exact))
c5.metric("Near-duplicate groups", len(near))
for warning in verify.dataset_warnings(store.label_counts(ws)):
    st.warning(warning)
if catalog.empty:
    needs("No images yet: bring some in first.", "app_pages/gather.py", "Go to Gather")

charts, samples, dupes, quarantine, history = st.tabs(
    ["Charts", "Samples", "Duplicates", f"Quarantine ({len(quarantined)})", "Failures and audit"]
)

with charts:
    st.dataframe(explore.summary(catalog), hide_index=True, width="stretch")
    left, right = st.columns(2)
    left.plotly_chart(explore.label_counts_figure(catalog), key="fig_counts")
    right.plotly_chart(explore.brightness_figure(catalog), key="fig_brightness")
    left.plotly_chart(explore.size_figure(catalog), key="fig_sizes")
    right.plotly_chart(explore.aspect_figure(catalog), key="fig_aspect")
    make_up = explore.provenance_table(catalog)
    st.plotly_chart(explore.provenance_figure(make_up), key="fig_provenance")
    if (make_up["origin"] == "production").any():
        st.caption(
            "Production images came back from the review queue (Review page) with the prediction they came from; "
            "labels only the model gave are refused by training unless allowed."
        )

with samples:
    left, right = st.columns(2)
    per_label = left.slider("Images per label", 4, 24, 8, step=4, key="explore_per_label")
    seed = right.number_input("Sample seed", 0, 10_000, 0, key="explore_seed")
    for label, group in catalog.groupby("label"):
        st.markdown(f"**{label}** · {len(group)} images")
        pick = group.sample(min(per_label, len(group)), random_state=int(seed))
        image_grid(
            [ws.root / p for p in pick["path"]],
            [f"`{Path(r['path']).name}`  \n{explore.provenance(r)}" for _, r in pick.iterrows()],
        )

with dupes:
    by_id = catalog.set_index("id")
    for title, groups in (("Exact duplicates (same bytes)", exact), ("Near duplicates (similar pictures)", near)):
        st.subheader(f"{title}: {len(groups)} group(s)")
        for number, group in enumerate(groups[:20], 1):
            rows = by_id.loc[group]
            st.caption(f"Group {number}: {len(group)} images")
            image_grid([ws.root / p for p in rows["path"]], [f"`{i}` · {r['label']}" for i, r in rows.iterrows()])
        if len(groups) > 20:
            st.caption(f"…and {len(groups) - 20} more groups (`python -m core verify --json` lists all).")

with quarantine:
    if quarantined.empty:
        st.write("Nothing in quarantine.")
    else:
        st.dataframe(quarantined[["id", "label", "reason", "source", "path"]], hide_index=True, width="stretch")
        chosen = st.multiselect("Restore these images", quarantined["id"].tolist(), key="explore_restore_ids")
        if st.button("Restore", key="explore_restore_go") and chosen:
            for image_id in chosen:
                attempt(lambda i=image_id: verify.restore(ws, i))
            st.rerun()

with history:
    st.subheader("Sources that failed")
    st.dataframe(store.failures(ws), hide_index=True, width="stretch")
    st.subheader("Audit trail (latest first)")
    st.dataframe(store.audit_log(ws), hide_index=True, width="stretch")
