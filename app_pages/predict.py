"""Predict: score uploads or a camera photo with the production model, log each, take feedback.

In end-user mode (IMAGEDP_END_USER=1) this is the whole app: the analyst's scope statement, the
model's answer, and nothing else.
"""

import streamlit as st

from core.production import deployment, prediction, prediction_log
from core.production.prediction import Prediction
from ui.common import attempt, current_workspace, end_user_mode, load_predictor

RESULTS = "predict_results"  # owner: this page; (workspace, version, upload key) -> (predictions, failures)
SENT = "predict_feedback_sent"  # owner: this page; prediction id -> label sent
DETAIL_LIMIT = 24

ws = current_workspace()
end_user = end_user_mode()
predictor = load_predictor(ws)
log = prediction_log.background(ws)
serving = attempt(lambda: deployment.serving(ws, predictor.version))
settings = serving.settings
candidate = load_predictor(ws, serving.rollout.candidate) if serving.rollout else None
policy_id = serving.policy.policy_id if serving.policy else None
st.title(settings.title if end_user else "Predict")
if settings.scope:
    st.info(settings.scope, icon=":material/info:")
elif end_user:
    st.info(f"This model only knows: {', '.join(predictor.classes)}.", icon=":material/info:")

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
            st.caption("Only images that enter the review queue are kept (referred, out of domain, disputed by a candidate).")
        if st.button("Save settings", key="predict_save_settings"):
            attempt(lambda: deployment.save_settings(ws, deployment.AppSettings(heading, text, keep)))
            st.rerun()
        st.markdown(
            "End-user mode serves only this page: `IMAGEDP_END_USER=1 IMAGEDP_WORKSPACE="
            f"{ws.name} streamlit run streamlit_app.py` (README: deploying)."
        )

upload_tab, camera_tab = st.tabs(["Upload images", "Take a photo"])
with upload_tab:
    uploads = st.file_uploader(
        "Images", type=None, accept_multiple_files=True, key="predict_upload", help="JPEG, PNG, WebP, GIF, BMP, TIFF"
    )
with camera_tab:
    photo = st.camera_input("Camera", key="predict_camera") if st.toggle("Use the camera", key="predict_use_camera") else None

files = list(uploads or []) + ([photo] if photo is not None else [])
if not files:
    st.caption("Upload one or many images, or take a photo, to see what the model makes of them.")
    st.stop()


def score(files: list) -> tuple[list[Prediction], list[dict[str, str]]]:
    """Score once per upload set and model version; reruns (feedback clicks) reuse the result and log nothing twice."""
    key = (ws.name, predictor.version, policy_id, serving.rollout, tuple(f.file_id for f in files))
    cache = st.session_state.setdefault(RESULTS, {})
    if key not in cache:
        with st.spinner(f"Scoring {len(files)} image(s)…"):
            uploaded = [(f.name, f.getvalue()) for f in files]
            scored = deployment.score_uploads(predictor, candidate, serving, uploaded, log)
        cache.clear()  # only the latest upload set is kept in the session
        cache[key] = (scored.shown, scored.failed)
    return cache[key]


def review_reasons(p: Prediction) -> str:
    reasons = [("referred by the policy", p.referred), ("out of domain", p.ood), ("the candidate disagreed", p.disagrees)]
    return ", ".join(text for text, why in reasons if why)


def preview(data: bytes) -> object:
    """The image as the model saw it (EXIF-rotated, RGB), small enough for the page; browsers cannot show TIFF or CMYK."""
    img = prediction.decode(data, 384)
    img.thumbnail((384, 384))
    return img


preds, failed = score(files)
for f in failed:
    st.error(f"**{f['source']}** could not be scored: {f['reason']}")
if len(preds) > 1:
    st.dataframe(
        [
            {"image": p.name, "prediction": p.label, "confidence": p.confidence, "out of domain?": p.ood, "action": p.action}
            for p in preds
        ],
        hide_index=True,
        width="stretch",
        column_config={"confidence": st.column_config.ProgressColumn(format="%.2f", min_value=0.0, max_value=1.0)},
    )
if len(preds) > DETAIL_LIMIT:
    st.caption(f"Details for the first {DETAIL_LIMIT} of {len(preds)} images; every one is in the table above and the log.")

sent: dict[str, str] = st.session_state.setdefault(SENT, {})
options = [*predictor.classes, prediction_log.NONE_OF_THESE]
for p in preds[:DETAIL_LIMIT]:
    with st.container(border=True):
        left, middle, right = st.columns([1, 1.3, 1.2])
        left.image(preview(p.data), caption=p.name, width="stretch")
        middle.plotly_chart(prediction.top_k_figure(p, predictor.classes), key=f"predict_bars_{p.id}")
        with right:
            st.markdown(f"### {p.label}\nconfidence **{p.confidence:.1%}**")
            if p.notes:
                st.caption(f"Converted before scoring: {p.notes.replace(',', ', ')}.")
            if p.ood:
                st.warning(
                    "This image does not look like the images the model was trained on: the answer may be meaningless.",
                    icon=":material/warning:",
                )
            if not end_user:
                source = "the accepted decision policy" if policy_id else "no policy accepted yet: the predicted label"
                st.markdown(f"Action: **{p.action}** ({source})")
                if p.stage != "production":
                    st.caption(f"Answered by candidate {p.version} ({p.stage} rollout), not production {predictor.version}.")
                if p.needs_review:
                    st.caption("In the review queue (Review page): " + review_reasons(p) + ".")
            if p.id in sent:
                st.success(f"Thanks: recorded **{sent[p.id]}**.")
            else:
                truth = st.selectbox(
                    "What is it really?", options, index=None, key=f"predict_truth_{p.id}", placeholder="Tell us"
                )
                if st.button("Send feedback", key=f"predict_send_{p.id}", disabled=truth is None):
                    attempt(lambda p=p, truth=truth: prediction_log.add_feedback(ws, p.id, truth, predictor.classes))
                    sent[p.id] = truth
                    st.rerun()

if not end_user:
    spooled = prediction_log.spooled_rows(ws)
    st.caption(
        f"Logged by this app since it started: {log.logged} prediction(s); waiting {log.pending}; "
        f"spooled {spooled} (written when the database frees up)."
    )
    if log.last_error:
        st.warning(f"Logging problem (no prediction lost): {log.last_error}")
