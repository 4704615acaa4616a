"""Predict: score uploads or a camera photo with the production model, log each, take feedback.

In end-user mode (IMAGEDP_END_USER=1) this is the whole app: the analyst's scope statement, what is kept of the
images sent, example images to click, a plain answer ("This looks like ...", or for an image unlike the training
images "This doesn't look like any of: ..."), and a "Wrong answer?" button; the policy's action only when the
analyst turns it on.
"""

import pandas as pd
import streamlit as st

from core.data.images import VerifyConfig
from core.production import deployment, prediction, prediction_log
from core.production.prediction import Prediction
from core.workspace import store
from ui.common import attempt, current_workspace, end_user_mode, served, thumbnails

RESULTS = "predict_results"  # owner: this page; (workspace, version, upload key) -> (predictions, failures)
SENT = "predict_feedback_sent"  # owner: this page; prediction id -> label sent
EXAMPLE = "predict_example"  # owner: this page; the example image the user clicked
DETAIL_LIMIT = 24
MAX_MB = VerifyConfig.max_bytes // 1_000_000  # what scoring accepts (bigger files are refused with a reason)

ws = current_workspace()
end_user = end_user_mode()
service, snapshot = served(ws)  # the process's one serving path: the API's too, when it runs in this process
predictor, serving, log = snapshot.predictor, snapshot.serving, service.log
settings = serving.settings
policy_id = serving.policy.policy_id if serving.policy else None
st.title(settings.title if end_user else "Predict")
if settings.scope:
    st.info(settings.scope, icon=":material/info:")
elif end_user:
    st.info(f"This model only knows: {', '.join(predictor.classes)}.", icon=":material/info:")


def example_choices() -> pd.Series:
    """Test images (held out from training) the analyst can offer as examples: id -> label, at most 300."""
    catalog = store.images(ws)
    held = catalog[catalog["split"] == "test"].sort_values(["label", "id"]).head(300)
    return held.set_index("id")["label"]


if not end_user and snapshot.candidate_problem:
    st.warning(snapshot.candidate_problem, icon=":material/warning:")
if not end_user:
    st.caption(
        f"Production model **{predictor.version}** · classes {', '.join(predictor.classes)} · out-of-domain flag when the "
        f"{predictor.reference.ood_score.replace('_', ' ')} score is past the threshold 95% of validation images pass"
    )
    with st.expander("Deployment settings (hidden from end users)"):
        heading = st.text_input("Title of the end-user app", value=settings.title, key="predict_title")
        text = st.text_area(
            "Scope statement shown to end users",
            value=settings.scope,
            placeholder=f"This only knows {', '.join(predictor.classes)}; anything else gets a wrong answer.",
            key="predict_scope",
        )
        keep = st.checkbox(
            "Keep a copy of every scored image (production/ in the workspace)",
            value=settings.keep_images,
            key="predict_keep",
            help="Images that enter the review queue (referred, out of domain, or disputed by a candidate) are kept "
            "either way: a reviewer needs to see them.",
        )
        if not keep:
            st.caption(
                "Only images that enter the review queue are kept (referred, out of domain, disputed by a candidate, "
                "and the audit sample)."
            )
        share = st.number_input(
            "Audit sample: share of served predictions sent to review at random (%)",
            0.0, 50.0, float(settings.audit_share * 100), 0.5, key="predict_audit",
            help="Whatever the model said, so that some labels are chosen by chance: Monitor's unbiased accuracy "
            "rests on them. Reviewers cannot tell these items from the rest until they label them. 0 stops the audit.",
        )  # fmt: skip
        internals = st.checkbox(
            "Show end users the action taken and whether a person will check the answer",
            value=settings.show_internals,
            key="predict_internals",
        )
        held_out = example_choices()
        examples = st.multiselect(
            f"Example images end users can click (up to {deployment.MAX_EXAMPLES}; from the test images)",
            list(held_out.index),
            default=[i for i in settings.examples if i in held_out.index],
            format_func=lambda i: f"{held_out[i]} · {i[:8]}",
            max_selections=deployment.MAX_EXAMPLES,
            key="predict_examples",
        )
        st.caption("End users read: " + deployment.privacy_notice(settings))
        if st.button("Save settings", key="predict_save_settings"):
            chosen = deployment.AppSettings(heading, text, keep, internals, tuple(examples), share / 100)
            attempt(lambda: deployment.save_settings(ws, chosen))
            st.rerun()
        st.markdown(
            "End-user mode serves only this page: `IMAGEDP_END_USER=1 IMAGEDP_WORKSPACE="
            f"{ws.name} STREAMLIT_SERVER_MAX_UPLOAD_SIZE={MAX_MB} streamlit run streamlit_app.py` (README: deploying)."
        )


def score(files: list) -> tuple[list[Prediction], list[dict[str, str]]]:
    """Score once per upload set and model version; reruns (feedback clicks) reuse the result and log nothing twice."""
    key = (ws.name, predictor.version, policy_id, serving.rollout, tuple(f.file_id for f in files))
    cache = st.session_state.setdefault(RESULTS, {})
    if key not in cache:
        with st.spinner(f"Scoring {len(files)} image(s)…"):
            uploaded = [(f.name, f.getvalue()) for f in files]
            _, scored = attempt(lambda: service.serve(uploaded, "app"))  # batched with other sessions' uploads
        cache.clear()  # only the latest upload set is kept in the session
        cache[key] = (scored.shown, scored.failed)
    return cache[key]


def score_example(image_id: str) -> tuple[list[Prediction], list[dict[str, str]]]:
    """An example the analyst chose, scored as an upload is but not logged: it is not production traffic."""
    row = store.images(ws).set_index("id").loc[image_id]
    _, scored = service.serve([(f"example: {row['label']}", (ws.root / row["path"]).read_bytes())], None)
    return scored.shown, scored.failed


def examples_row(upload_key: tuple[str, ...]) -> str | None:
    """The analyst's example images as clickable tiles; the one to show: picked since the uploads last changed."""
    catalog = store.images(ws).set_index("id")
    shown = [i for i in settings.examples if i in catalog.index and (ws.root / catalog.loc[i, "path"]).is_file()]
    if not shown:  # a deployment may ship without images/
        return None
    st.caption("Or try one of these:")
    cells = st.columns(len(shown))
    thumbs = thumbnails([ws.root / catalog.loc[i, "path"] for i in shown], 160)
    for cell, image_id, thumb in zip(cells, shown, thumbs, strict=True):
        cell.image(thumb, width="stretch")
        if cell.button("Try this", key=f"predict_example_{image_id}", width="stretch"):
            st.session_state[EXAMPLE] = (image_id, upload_key)
    picked = st.session_state.get(EXAMPLE)
    if picked is None or picked[0] not in shown or picked[1] != upload_key:
        st.session_state.pop(EXAMPLE, None)  # new uploads since the click replace the example
        return None
    return picked[0]


def review_reasons(p: Prediction) -> str:
    reasons = [("referred by the policy", p.referred), ("out of domain", p.ood), ("the candidate disagreed", p.disagrees)]
    return ", ".join(text for text, why in reasons if why)


def preview(p: Prediction) -> object:
    """The image as the model saw it (EXIF-rotated, RGB, resized for it), from scoring's one decode; browsers
    cannot show TIFF or CMYK. Decoded again only for a prediction that kept no such image."""
    if p.look is not None:
        return p.look
    img = prediction.decode(p.data, 384)
    img.thumbnail((384, 384))
    return img


if end_user:
    st.caption(deployment.privacy_notice(settings), help="What happens to the pictures you send")
upload_tab, camera_tab = st.tabs(["Upload images", "Take a photo"])
with upload_tab:
    uploads = st.file_uploader(
        f"Photos: JPEG, PNG, WebP, GIF, BMP or TIFF, up to {MAX_MB} MB each",
        type=None,
        accept_multiple_files=True,
        key="predict_upload",
        max_upload_size=MAX_MB,
    )
with camera_tab:
    photo = st.camera_input("Camera", key="predict_camera") if st.toggle("Use the camera", key="predict_use_camera") else None

files = list(uploads or []) + ([photo] if photo is not None else [])
example = examples_row(tuple(f.file_id for f in files)) if settings.examples else None
if example is not None:
    files = []  # the example the user picked after the uploads on the page
    preds, failed = attempt(lambda: score_example(example))
    st.caption("An example image: its answer is not logged.")
elif files:
    preds, failed = score(files)
else:
    st.caption("Upload one or many images, or take a photo, to see what the model makes of them.")
    st.stop()
internals = not end_user or settings.show_internals
for f in failed:
    st.error(f"**{f['source']}** could not be scored: {f['reason']}")
if len(preds) > 1:
    rows = [
        {"image": p.name, "answer": f"none of these ({', '.join(predictor.classes)})" if p.ood else p.label,
         "how sure": p.confidence, **({"out of domain?": p.ood, "action": p.action} if internals else {})}
        for p in preds
    ]  # fmt: skip
    st.dataframe(
        rows,
        hide_index=True,
        width="stretch",
        column_config={"how sure": st.column_config.ProgressColumn(format="%.2f", min_value=0.0, max_value=1.0)},
    )
if len(preds) > DETAIL_LIMIT:
    st.caption(f"Details for the first {DETAIL_LIMIT} of {len(preds)} images; every one is in the table above and the log.")

sent: dict[str, str] = st.session_state.setdefault(SENT, {})
options = [*predictor.classes, prediction_log.NONE_OF_THESE]
for p in preds[:DETAIL_LIMIT]:
    with st.container(border=True):
        left, middle, right = st.columns([1, 1.3, 1.2])
        left.image(preview(p), caption=p.name, width="stretch")
        middle.markdown(prediction.top_k_lines(p, predictor.classes))
        with right:
            headline, detail = deployment.answer(p, predictor.classes)
            st.markdown(f"### {headline}")
            if detail:
                st.warning(detail, icon=":material/warning:")
            if p.notes:
                st.caption(f"Converted before scoring: {p.notes.replace(',', ', ')}.")
            if internals:
                source = "the accepted decision policy" if policy_id else "no policy accepted yet: the predicted label"
                st.markdown(f"Action: **{p.action}** ({source})")
                if p.stage != "production":
                    st.caption(f"Answered by candidate {p.version} ({p.stage} rollout), not production {predictor.version}.")
                if p.needs_review:
                    st.caption("In the review queue (Review page): " + review_reasons(p) + ".")
            if not files:
                continue  # an example: not logged, so no feedback to record
            if p.id in sent:
                st.success(f"Thanks: recorded **{sent[p.id]}**.")
            elif not end_user or st.toggle("Wrong answer?", key=f"predict_wrong_{p.id}"):
                truth = st.selectbox(
                    "What is it really?", options, index=None, key=f"predict_truth_{p.id}", placeholder="Tell us"
                )
                if st.button("Send feedback", key=f"predict_send_{p.id}", disabled=truth is None):
                    source = "end user" if end_user else "app"
                    attempt(lambda p=p, truth=truth, s=source: prediction_log.add_feedback(ws, p.id, truth, predictor.classes, s))
                    sent[p.id] = truth
                    st.rerun()

if not end_user:
    st.caption(f"Logged by this app since it started: {log.logged} prediction(s); waiting {log.pending}.")
    if log.last_error:
        st.warning(f"Logging problem (no prediction lost): {log.last_error}")
