"""Review: the predictions a person should look at (referred by the policy, out of domain, disputed by a
candidate, or drawn at random for the audit sample), in the chosen order, labelled with one click, blind to why each
waits until it is labelled; labels from elsewhere; reviewed images back into the data."""

from datetime import datetime

import streamlit as st

from core.production import audit, review
from core.production.prediction_log import NONE_OF_THESE
from core.workspace import store
from ui.common import attempt, current_workspace, log_settled, thumbnails

PAGE = 6  # queue items shown at once
ROW = 5  # buttons per row

ws = current_workspace()
log_settled(ws)  # what this app just scored is in the log before the page reads it
st.title("Review")
st.caption(
    "Predictions wait here when the decision policy referred them to a person, when the model flagged the image as "
    "out of domain, when a candidate in shadow or limited answered differently from production, or when the audit drew "
    "them at random. Nothing here says which until you label it, so that every label is given the same way. Each label "
    "is recorded as feedback with who gave it; reviewed images can then join the training data."
)
if message := st.session_state.pop("review_message", None):
    st.success(message)

ORDERS = {"Oldest first": "oldest", "Newest first": "newest", "Most valuable": "valuable"}
# the backlog and the page's items from one reading of the queue (the order control below keeps its choice here)
found = review.queue(ws, PAGE, order=ORDERS.get(st.session_state.get("review_order") or "Oldest first", "oldest"))
backlog = found.backlog
m1, m2, m3 = st.columns(3)
m1.metric("Waiting", f"{backlog.pending:,}")
age = store.now() - backlog.oldest if isinstance(backlog.oldest, datetime) else None
m2.metric("Oldest waiting", "–" if age is None else f"{age.days} d {age.seconds // 3600} h")
m3.metric("Reviewed so far", f"{backlog.reviewed:,}")
if backlog.reviewed:
    m3.caption(
        f"Reviewers agreed with the model on {backlog.agreed} of {backlog.reviewed}"
        + (f": {backlog.agreement.text()}" if backlog.agreement.enough else f" (too few (n {backlog.reviewed}) for a rate)")
        + ". The queue holds the hard cases, so expect less than on all traffic."
    )
share = audit.current(ws).share
if backlog.pending:
    flagged = ", ".join(f"{n} {k}" for k, n in backlog.by_reason.items() if n) or "none flagged by the model"
    st.caption(
        f"Why they wait (one can have several reasons): {flagged}; with them, unmarked, the audit sample: a random "
        f"{share:.1%} of served predictions, whatever the model said. Its labels are what Monitor's unbiased accuracy "
        "rests on."
    )

left, middle, right = st.columns([2, 1, 2], vertical_alignment="bottom")  # room for the three orders
reviewer = left.text_input(
    "Your name (required: recorded with each label)", value=st.session_state.get("reviewer_name", ""), key="review_reviewer"
).strip()
st.session_state["reviewer_name"] = reviewer  # asked once per session: kept when the user visits other pages
if middle.button("Undo my last label", key="review_undo", disabled=not reviewer, width="stretch"):
    undone = attempt(lambda: review.undo_last(ws, reviewer))
    st.session_state["review_message"] = f"Took back {undone.label!r} on {undone.name}: it waits in the queue again."
    st.rerun()
right.segmented_control(
    "Order", list(ORDERS), default="Oldest first", key="review_order",
    help="Most valuable: the utility the decision taken is expected to have lost, under the model's calibrated "
    "probabilities and its policy's utility matrix; the audit sample keeps its share of every page.",
)  # fmt: skip
if not reviewer:
    st.info("Type your name above to label: each label is recorded with who gave it.")
items = found.items
if not items:
    st.info("Nothing waits for review.")
for item in items:
    with st.container(border=True):
        left, right = st.columns([1, 2])
        if item.image_path and (ws.root / item.image_path).is_file():
            left.image(thumbnails([ws.root / item.image_path], 320)[0], caption=item.name, width="stretch")
        else:
            left.write(f"{item.name}: the image was not kept.")
        with right:
            top = " · ".join(f"**{c}** {p:.0%}" for c, p in item.top)
            st.markdown(f"Model {item.version}: {top}")
            sent = f" · sent {item.copies} times, labelled once for all" if item.copies > 1 else ""
            st.caption(f"{item.ts:%Y-%m-%d %H:%M} · {item.source}{sent}")
            st.markdown("What is it?")
            choices = [*item.classes, NONE_OF_THESE]  # one click per class
            picked = None
            for start in range(0, len(choices), ROW):
                cells = st.columns(ROW)
                for cell, choice in zip(cells, choices[start : start + ROW], strict=False):
                    if cell.button(choice, key=f"label_{item.id}_{choice}", width="stretch", disabled=not reviewer):
                        picked = choice
            if picked is not None:
                new = attempt(lambda i=item, c=picked: review.label(ws, i.id, c, reviewer))
                st.session_state["review_message"] = (
                    f"{'Recorded' if new else 'Already recorded'} {item.name} as {picked}. It waited because: {item.why()}."
                )
                st.rerun()
if backlog.pending > PAGE:
    st.caption(f"{backlog.pending - PAGE} more wait after these.")

st.divider()
st.subheader("Into the training data")
ready, held = review.joinable(ws)
model_only = review.model_labelled(ws)
st.write(
    f"{len(ready)} labelled production image(s) are ready to join the data, with their provenance: the prediction "
    "they came from, the model version, and who labelled them (source `production` on Verify and explore)."
    + (" Not joining: " + "; ".join(f"{n} {why}" for why, n in held.items()) + "." if held else "")
)
if st.button(f"Add {len(ready)} image(s) to the data", key="review_add", disabled=ready.empty):
    added = attempt(lambda: review.add_to_data(ws))
    st.session_state["review_message"] = (
        f"Added {len(added.added)} image(s) to the data; skipped {len(added.skipped)}"
        + (": " + "; ".join(f"{s['source']}: {s['reason']}" for s in added.skipped[:5]) if added.skipped else ".")
        + " Retrain on the Train page, then run the new version in shadow on Rollout."
    )
    st.rerun()
if model_only:
    st.warning(
        f"{model_only} image(s) in the data carry labels only the model gave: training refuses them unless allowed "
        "(a model trained on its own answers learns its own mistakes)."
    )

with st.expander("Labels from elsewhere (CSV)"):
    st.caption("A header with `label` and `prediction_id` (from `python -m core review --json`) or `sha256` of the image.")
    upload = st.file_uploader("Labels file", type=["csv"], key="review_csv")
    if upload is not None and st.button("Import labels", key="review_import"):
        done = attempt(lambda: review.import_labels(ws, upload.getvalue(), reviewer))
        again = f" {done.unchanged} were there already (imported before): not recorded twice." if done.unchanged else ""
        st.session_state["review_message"] = f"Imported {done.labelled} label(s).{again}" + (
            f" {len(done.failed)} row(s) refused: " + "; ".join(f"row {f['row']}: {f['reason']}" for f in done.failed[:5])
            if done.failed
            else ""
        )
        st.rerun()
