"""Train: the DataBlock as a form, a preview, the learning-rate finder, live progress, model versions."""

from dataclasses import replace

import pandas as pd
import streamlit as st

from core.model import backbones, config, datasets, estimate, jobs, preview, registry, runs, train_report
from core.model.config import TrainConfig
from core.model.events import BatchEvent
from core.model.rates import Rate
from core.production import review, rollout
from core.workspace import store
from ui.common import attempt, current_workspace, next_step
from ui.splits import split_panel

ws = current_workspace()
st.title("Train")
catalog = store.images(ws)
attempt(lambda: datasets.check_dataset(ws, catalog))
counts = catalog["label"].value_counts().sort_index()
st.caption(
    f"Workspace **{ws.name}**: {len(catalog)} images, {len(counts)} labels: " + ", ".join(f"{k} ({v})" for k, v in counts.items())
)


@st.fragment(run_every=1.0)
def live_panel() -> None:
    """Progress bar with ETA, the growing chart and a cancel button, refreshed every second."""
    job = jobs.current(ws)
    if job is None:
        return
    last = job.last_batch()
    whole = job.overall()
    if job.running and last is not None:
        now = train_report.progress_words(last, job.config) if isinstance(last, BatchEvent) else last.message
        if whole is not None:  # one bar for the whole run; the step's own detail under it
            st.progress(whole.fraction, text=whole.words())
            st.caption(now)
        else:
            st.progress(last.done / last.total if isinstance(last, BatchEvent) else 0.0, text=now)
    if job.epochs():
        planned = job.config.freeze_epochs + job.config.epochs if job.config.epochs is not None else None
        st.plotly_chart(train_report.history_figure(job.epochs(), planned), key="train_live_chart")
        st.dataframe(pd.DataFrame(job.epochs()), hide_index=True, width="stretch")
    if job.running:
        if st.button("Cancel training", key="train_cancel", type="secondary"):
            job.cancel.set()
            st.info("Cancelling: the current batch finishes, then training stops; nothing is saved.")
    else:
        st.rerun()


def settings_form(saved: TrainConfig) -> TrainConfig:
    """The DataBlock and fine_tune settings; starts from the workspace's saved ones."""
    d = saved.data
    st.subheader("Data")
    c1, c2 = st.columns(2)
    sizes = [0, 64, 96, 128, 160, 192, 224]
    size = c1.selectbox(
        "Image size",
        sizes,
        index=sizes.index(d.size) if d.size in sizes else 0,
        key="train_size",
        format_func=lambda s: "automatic" if s == 0 else f"{s} px",
    )
    resize = c2.radio(
        "Item resize", config.RESIZE_METHODS, index=config.RESIZE_METHODS.index(d.resize), key="train_resize", horizontal=True
    )
    c1, c2, c3, c4 = st.columns(4)
    seed = c1.number_input("Training seed", 0, 1_000_000, saved.seed, key="train_seed")
    min_scale = c2.slider("Crop keeps at least", 0.1, 1.0, d.min_scale, 0.05, key="train_min_scale")
    rotate = c3.slider("Rotation (°)", 0.0, 30.0, d.rotate, 1.0, key="train_rotate")
    lighting = c4.slider("Lighting", 0.0, 0.5, d.lighting, 0.05, key="train_lighting")
    flip = st.checkbox("Horizontal flips", d.flip, key="train_flip", help="Off for digits or text: a mirrored 2 is not a 2.")
    st.subheader("Model")
    c1, c2, c3, c4, c5 = st.columns(5)
    names = list(backbones.BACKBONES)
    backbone = c1.selectbox(
        "Backbone",
        names,
        index=names.index(saved.backbone),
        key="train_backbone",
        help="\n".join(f"{s.name}: {s.note}" for s in backbones.BACKBONES.values()),
    )
    freeze = c2.number_input("Frozen epochs", 0, 20, saved.freeze_epochs, key="train_freeze")
    choices = ["auto", *range(0, 21)]
    epochs = c3.selectbox(
        "Unfrozen epochs",
        choices,
        index=choices.index(saved.epochs if saved.epochs is not None else "auto"),
        key="train_epochs",
        help=f"auto: {saved.auto_epochs} only when the frozen stage leaves more "
        f"than {saved.auto_threshold:.0%} error (they cost 3-10 frozen epochs each on a CPU)",
    )
    lr = c4.number_input("Learning rate", 1e-5, 1.0, saved.lr, format="%.0e", key="train_lr")
    smoothing = c5.slider("Label smoothing", 0.0, 0.3, saved.label_smoothing, 0.05, key="train_smoothing")
    pretrained = st.checkbox("Start from ImageNet weights (off: random initialisation)", saved.pretrained, key="train_pretrained")
    data = replace(
        d,
        size=int(size),
        resize=resize,
        min_scale=min_scale,
        rotate=rotate,
        lighting=lighting,
        flip=flip,
    )
    return replace(
        saved,
        data=data,
        backbone=backbone,
        freeze_epochs=int(freeze),
        epochs=None if epochs == "auto" else int(epochs),
        lr=float(lr),
        label_smoothing=smoothing,
        pretrained=pretrained,
        seed=int(seed),
    )


def next_after_training(version: str) -> None:
    """The step after a run, at the top of its results: make the new version production, or run it in shadow
    beside the production model first; once it is production, on to the decision policy."""
    production = registry.production_version(ws)
    if production == version:
        st.success(f"{version} is the production model.")
        next_step("app_pages/policy.py", "Next: choose a decision policy")
        return
    active = rollout.current(ws)
    if active is not None and active.candidate == version:
        st.info(f"{version} runs in {active.stage} beside production {production}.")
        next_step("app_pages/rollout.py", "Next: compare them on Rollout")
        return
    c1, c2 = st.columns(2)
    if c1.button(f"Make {version} production", type="primary", key="train_promote_new"):
        attempt(lambda: registry.promote(ws, version))
        st.rerun()
    if production and c2.button(
        f"Run {version} beside production ({production}) in shadow first",
        key="train_shadow_new",
        help="It scores every request next to production, never shown or acted on: compare them on Rollout",
    ):
        attempt(lambda: rollout.start(ws, version, "shadow"))
        st.session_state["train_message"] = f"{version} is in shadow beside production: see the Rollout page."
        st.rerun()
    if not production:
        st.caption("Nothing is in production yet: Policy, Predict, Monitor and the Summary need a production model.")


job = jobs.current(ws)
if job is not None and job.running:
    st.info(f"Training {job.config.backbone} on {ws.name}: it goes on while you visit other pages.")
    live_panel()
else:
    if job is not None:
        if job.status == "finished":
            s = job.summary
            tested = (
                registry.headline_accuracy(ws, s["version"])
                if s.get("test_accuracy") is not None
                else "no test images to report on"
            )
            valid = Rate.of(s["valid_accuracy"], len(registry.read_meta(ws, s["version"])["valid_ids"]))
            st.success(
                f"Trained {s['version']}: {tested}; validation accuracy {valid.text()} (it chose the best "
                f"epoch, {s['best_epoch']}, so it is optimistic), in {s['wall_seconds']:.0f} s."
            )
            for note in s.get("split_notes", []):
                st.info(f"Split completed: {note} (audited).")
            next_after_training(s["version"])
        elif job.status == "cancelled":
            st.warning("Training was cancelled; no model version was written.")
        else:
            st.error(job.error)
        if job.epochs():
            st.plotly_chart(train_report.history_figure(job.epochs()), key="train_last_chart")
    split_panel(ws)
    cfg = settings_form(runs.defaults(ws))
    with st.expander("Preview: one image augmented eight times, and a batch as the model sees it"):
        if st.button("Show preview", key="train_preview"):
            shown = attempt(lambda: preview.augmentation_preview(ws, cfg))
            st.image(shown.one, width=110, caption=[shown.one_label] * len(shown.one))
            st.image(shown.batch, width=110, caption=shown.batch_labels)
    with st.expander("Learning-rate finder"):
        if st.button("Find a learning rate", key="train_lr_find"):
            st.session_state["train_lr_result"] = (ws.name, attempt(lambda: preview.find_learning_rate(ws, cfg)))
        found = st.session_state.get("train_lr_result")
        if found and found[0] == ws.name:
            lr = found[1]
            st.plotly_chart(train_report.lr_find_figure(lr.rates, lr.losses, lr.suggestion), key="train_lr_chart")
            st.caption(f"Suggested head learning rate: {lr.suggestion:.1e} (set it above).")
    model_only = review.model_labelled(ws)
    if model_only:
        st.warning(
            f"{model_only} image(s) in the data carry labels only the model gave (production images no person "
            "confirmed). Training on them teaches the model its own mistakes (a feedback loop): review them on the "
            "Review page, or allow them for this run."
        )
        if st.checkbox("Train on model labels too", key="train_allow_model_labels"):
            cfg = replace(cfg, allow_model_labels=True)
    usable = int(catalog["split"].isin(["train", "valid"]).sum()) if "split" in catalog else len(catalog)
    sized = replace(cfg, data=replace(cfg.data, size=cfg.data.size or runs.auto_size(catalog)))  # as the run will
    st.caption(f"Time on this machine for {usable} images: " + estimate.estimate(ws, sized, usable).words())
    if st.button("Start training", type="primary", key="train_start"):
        attempt(lambda: jobs.start(ws, cfg, save_as_defaults=True))
        st.rerun()

with st.expander("Run history"):
    st.dataframe(runs.run_history(ws), hide_index=True, width="stretch")

st.divider()
st.subheader("Model versions")
versions = registry.list_versions(ws)
if versions.empty:
    st.write("No model yet: train one above.")
    st.stop()
versions = versions.merge(registry.compare(ws, versions["version"].tolist())[["version", "test_accuracy", "test_images"]])
st.dataframe(
    versions[["version", "production", "test_accuracy", "test_images", "valid_accuracy", "backbone", "created_at"]],
    hide_index=True,
    width="stretch",
)
st.caption("Test accuracy as trained, on images no step chose on; valid accuracy is optimistic (it chose the epoch).")
c1, c2, c3, c4 = st.columns(4)
chosen = c1.selectbox(
    "Version", versions["version"].tolist()[::-1], key=f"train_version_{len(versions)}"
)  # newest first, after each new one
if c2.button("Run beside production in shadow", key="train_shadow", help="Rollout page: compare it on real requests first"):
    attempt(lambda: rollout.start(ws, chosen, "shadow"))
    st.session_state["train_message"] = f"{chosen} is in shadow beside production: see the Rollout page."
    st.rerun()
if c3.button("Promote to production", key="train_promote"):
    attempt(lambda: registry.promote(ws, chosen))
    st.rerun()
if c4.button("Roll back production", key="train_rollback"):
    attempt(lambda: registry.rollback(ws))
    st.rerun()
if message := st.session_state.pop("train_message", None):
    st.success(message)
picked = st.multiselect(
    "Compare versions", versions["version"].tolist(), default=versions["version"].tolist()[-2:], key="train_compare"
)
if picked:
    st.dataframe(registry.compare(ws, picked), hide_index=True, width="stretch")
    meta = registry.read_meta(ws, picked[-1])
    st.plotly_chart(train_report.history_figure(train_report.history_of(meta)), key="train_version_chart")
