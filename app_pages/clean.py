"""Clean: the images most likely mislabelled, duplicated or leaking, with keep / delete / relabel and undo."""

from pathlib import Path

import pandas as pd
import streamlit as st
from streamlit.delta_generator import DeltaGenerator

from core.data import verify
from core.model import cleaning, jobs
from core.progress import ProgressFn
from core.workspace import store
from core.workspace.paths import Workspace
from ui.common import attempt, current_workspace, pick_version, progress_bar, thumbnails

ALL = "all labels: the worst first"

ws = current_workspace()
st.title("Clean")
version, _ = pick_version(
    ws, "Score with model", "clean_version", "The cleaner ranks images with a trained model: train one on the Train page first."
)
# image -> (action, new label, the label it had when chosen: another session may change it before Apply)
pending: dict[str, tuple[str, str | None, str]] = st.session_state.setdefault("clean_pending", {}).setdefault(ws.name, {})
if message := st.session_state.pop("clean_message", None):
    st.success(message)


def reset_choices() -> None:
    """Forget pending choices and the tiles' widget state (applied, discarded or undone)."""
    pending.clear()
    for key in [k for k in st.session_state if str(k).startswith(f"clean_{ws.name}_")]:
        del st.session_state[key]


@st.cache_data(show_spinner=False, max_entries=8)
def scores_for(root: str, version: str, stamp: int, _on_progress: ProgressFn) -> pd.DataFrame:
    return cleaning.score_images(Workspace(Path(root)), version, _on_progress)


def lazy_progress(label: str, holder: DeltaGenerator) -> ProgressFn:
    """A progress bar in `holder`, drawn only when scoring really runs (a cached result draws nothing)."""
    drawn: list[ProgressFn] = []

    def update(done: int, total: int, message: str) -> None:
        if not drawn:
            with holder:
                drawn.append(progress_bar(label))
        drawn[0](done, total, message)

    return update


stamp = int(store.audit_log(ws, limit=1)["seq"].iloc[0])
holder = st.empty()
scores = attempt(lambda: scores_for(str(ws.root), version, stamp, lazy_progress("Scoring every image out of fold", holder)))
holder.empty()  # done: the bar goes
classes = sorted(scores["label"].unique())


def choose(image_id: str, label: str) -> None:
    value = st.session_state[f"clean_{ws.name}_{image_id}"]
    if value == "keep":
        pending.pop(image_id, None)
    else:
        pending[image_id] = ("delete", None, label) if value == "delete" else ("relabel", value.removeprefix("→ "), label)


def tiles(rows: pd.DataFrame, captions: list[str], columns: int = 6) -> None:
    """Images with their caption and a keep / delete / relabel choice that survives page changes."""
    images = thumbnails([ws.root / p for p in rows["path"]])
    for start in range(0, len(rows), columns):
        cells = st.columns(columns)
        for cell, (_, row), image, caption in zip(
            cells,
            rows.iloc[start : start + columns].iterrows(),
            images[start : start + columns],
            captions[start : start + columns],
            strict=False,
        ):
            options = ["keep", "delete", *(f"→ {c}" for c in classes if c != row["label"])]
            action, new, _ = pending.get(row["id"], ("keep", None, None))
            current = "delete" if action == "delete" else (f"→ {new}" if action == "relabel" else "keep")
            cell.image(image, width="stretch")
            cell.caption(caption)
            cell.selectbox(
                "Action",
                options,
                index=options.index(current) if current in options else 0,
                key=f"clean_{ws.name}_{row['id']}",
                label_visibility="collapsed",
                on_change=choose,
                args=(row["id"], row["label"]),
            )


source = st.radio(
    "Show",
    ["Suspicious labels", "Duplicates", "Train/held-out leakage", "Flagged by verification"],
    horizontal=True,
    key="clean_source",
)
if source == "Suspicious labels":
    c1, c2, c3, c4 = st.columns(4)
    label = c1.selectbox("Label", [ALL, *classes], key="clean_label")
    split = c2.radio("Split", ["all", "train", "valid", "test"], horizontal=True, key="clean_split")
    ranking = c3.selectbox(
        "Rank by",
        ["out-of-fold loss", "confident learning", "embedding outliers"],
        key="clean_ranking",
        help="Out of fold: each image scored by a model that never saw it.",
    )
    count = c4.slider("Images", 6, 120, 30, step=6, key="clean_count")
    ranked = cleaning.queue(scores, None if label == ALL else label, split, ranking)
    rows = ranked.head(count)
    likely, rest = rows[rows["label_issue"]], rows[~rows["label_issue"]]
    st.markdown(
        f"**{int(ranked['label_issue'].sum())} likely label error(s)** among the {len(ranked)} images here: another "
        "class's out-of-fold probability is above that class's own average (confident learning). "
        + (f"The first {len(likely)} are above the line." if len(likely) else "None among the images shown.")
    )

    def captions(part: pd.DataFrame) -> list[str]:
        return [
            f"label {r.label} · predicted **{r.predicted}** {r.confidence:.0%}  \nloss {r.loss:.2f}" for r in part.itertuples()
        ]

    tiles(likely, captions(likely))
    if len(rest):
        st.markdown("---\n**Below the line: no evidence of a label error** (the ranking goes on; look if you like)")
        tiles(rest, captions(rest))
elif source == "Flagged by verification":
    flagged = cleaning.flagged(store.images(ws))
    st.caption(
        f"{len(flagged)} image(s) that decode but needed conversion for training (CMYK, 16-bit, palette, "
        "alpha, EXIF rotation, animation): worth a look. Broken files are already in quarantine (see Verify and explore)."
    )
    rows = flagged.head(60)
    tiles(rows, [f"{r.label} · {r.notes}" for r in rows.itertuples()])
else:
    catalog = store.images(ws)
    groups = (
        verify.exact_duplicate_groups(catalog) + verify.near_duplicate_groups(catalog)
        if source == "Duplicates"
        else cleaning.leakage_groups(catalog)
    )
    st.caption(
        f"{len(groups)} group(s). Keep one of each; leakage groups straddle train and valid or test and flatter those scores."
    )
    by_id = catalog.set_index("id")
    for group in groups[:15]:
        rows = by_id.loc[group].reset_index()
        tiles(rows, [f"`{r.id}` · {r.label} · {r.split or 'no split'}" for r in rows.itertuples()])
        st.divider()

st.subheader(
    f"Pending: {sum(a == 'delete' for a, _, _ in pending.values())} deletion(s), "
    f"{sum(a == 'relabel' for a, _, _ in pending.values())} relabel(s)"
)
if pending:
    st.dataframe(
        pd.DataFrame([{"id": i, "action": a, "new label": n} for i, (a, n, _) in pending.items()]),
        hide_index=True,
        width="stretch",
    )
c1, c2, c3, c4 = st.columns(4)
if c1.button("Apply", type="primary", key="clean_apply", disabled=not pending):
    done = attempt(lambda: cleaning.apply(ws, [cleaning.Decision(i, a, n, seen) for i, (a, n, seen) in pending.items()]))
    reset_choices()
    skipped = (
        f" {len(done.skipped)} choice(s) skipped: another session changed those images after you chose." if done.skipped else ""
    )
    st.session_state["clean_message"] = (
        f"Applied {done.changed} change(s): deleted images are in quarantine (restore on Verify and explore).{skipped}"
    )
    st.rerun()
if c2.button("Discard choices", key="clean_discard", disabled=not pending):
    reset_choices()
    st.rerun()
if c3.button("Undo last batch", key="clean_undo"):
    st.session_state["clean_message"] = f"Undid {attempt(lambda: cleaning.undo_last(ws))} change(s)."
    reset_choices()
    st.rerun()
if c4.button(f"Retrain with {version}'s settings", key="clean_retrain"):
    attempt(lambda: jobs.retrain(ws, version))
    st.session_state["clean_message"] = "Training started: follow it on the Train page, then compare on Evaluate."
    st.rerun()
