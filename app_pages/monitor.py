"""Monitor: the prediction log per window against the production model's reference: volume and confidence,
every drift test as a grid, alerts with their images and levers, one metric up close, accuracy estimates."""

from pathlib import Path

import pandas as pd
import streamlit as st

from core.model import registry
from core.production import prediction_log, traffic
from core.production.monitoring import charts, drift, drift_charts, queries, reference
from core.workspace.paths import Workspace
from ui.common import attempt, current_workspace, image_grid, progress_bar

ws = current_workspace()
st.title("Monitor")
production = registry.production_version(ws)
total = prediction_log.count(ws)


@st.cache_data(max_entries=8, show_spinner="Testing every window against the reference...")
def cached_report(root: str, flt: queries.LogFilter, version: str, stamp: tuple) -> drift.DriftReport:
    """The drift report, computed again only when the log, its feedback or the filters change (a second a
    million rows): clicking through metrics and windows stays instant."""
    return drift.drift_report(Workspace(Path(root)), flt, version)


def simulate_button(label: str) -> None:
    days = st.number_input("Days to simulate", 2, 60, 14, key="monitor_sim_days")
    if st.button(label, key="monitor_simulate", disabled=production is None):
        cfg = traffic.TrafficConfig(days=int(days), shift_day=int(days) // 2)
        result = attempt(lambda: traffic.replay_traffic(ws, cfg, on_progress=progress_bar("Simulating traffic")))
        st.session_state["monitor_message"] = (
            f"Simulated {result['predictions']} predictions over {result['days']} days "
            f"({result['shifted']} shifted images, {result['drawings']} drawings, {result['feedback']} with feedback)."
        )
        st.rerun()


if message := st.session_state.pop("monitor_message", None):
    st.success(message)
if total == 0:
    st.info(
        "Nothing is logged yet. Score images on **Predict**, run `python -m core predict --workspace "
        f"{ws.name} PATH...`, or simulate production traffic here (held-back images, drifting in the second half)."
    )
    if production is None:
        st.warning("Promote a model on the Train page first: traffic is scored by the production model.")
    simulate_button("Simulate traffic")
    st.stop()

c1, c2, c3 = st.columns(3)
window = c1.segmented_control("Window", list(queries.WINDOWS), default="day", key="monitor_window") or "day"
size = 200
if window == "predictions":
    size = int(c1.number_input("Predictions per window", 30, 100_000, 200, step=50, key="monitor_size"))
sources = tuple(
    c2.multiselect("Sources", list(prediction_log.SOURCES), default=list(prediction_log.SOURCES), key="monitor_sources")
)
versions = ["all", *registry.list_versions(ws)["version"].tolist()[::-1]]
version = c3.selectbox("Model version", versions, key="monitor_version")
flt = queries.LogFilter(window, sources, None if version == "all" else version, size)
reference_version = flt.version or production
base = attempt(lambda: reference.log_reference(ws, reference_version)) if reference_version else None
win = queries.windows(ws, flt)
if win.empty:
    st.info("No predictions match these filters.")
    st.stop()

last = win.iloc[-1]
m1, m2, m3, m4 = st.columns(4)
m1.metric(
    "Predictions", f"{int(win['predictions'].sum()):,}", f"{int(last['predictions'])} in the last {window}", delta_color="off"
)
if base is not None:
    m2.metric(
        "OOD rate, last window",
        f"{last['ood_rate']:.1%}",
        f"{last['ood_rate'] - base.ood_rate:+.1%} vs validation",
        delta_color="inverse",
    )
    m3.metric(
        "Median confidence, last window", f"{last['confidence_p50']:.2f}", f"{last['confidence_p50'] - base.confidence_p50:+.2f}"
    )
    if pd.notna(last["feedback_accuracy"]):
        m4.metric(
            "Accuracy from feedback, last window",
            f"{last['feedback_accuracy']:.1%}",
            f"{last['feedback_accuracy'] - base.accuracy:+.1%} ({int(last['feedback'])} labelled)",
        )
    else:
        m4.metric("Accuracy from feedback, last window", "no feedback")
reviews = int(win["reviews"].sum())
if reviews:
    agreed = float((win["review_agreement"].fillna(0) * win["reviews"]).sum() / reviews)
    st.caption(
        f"Reviewers agreed with the model on {agreed:.0%} of the {reviews} prediction(s) they reviewed (Review page). "
        "These are the hard cases the queue collects (referred, out of domain, disputed), so expect less than the "
        "model's accuracy on all traffic."
    )
spooled = prediction_log.spooled_rows(ws)
if spooled:
    st.warning(f"{spooled} logged prediction(s) wait in the spool for the database; they join the charts on the next write.")

st.plotly_chart(charts.overview_figure(win, base), key="monitor_overview")
st.plotly_chart(charts.class_mix_figure(queries.class_mix(ws, flt), base), key="monitor_mix")

if base is not None:
    report = attempt(lambda: cached_report(str(ws.root), flt, reference_version, prediction_log.stamp(ws)))
    st.subheader(f"Drift: every test, every window ({len(report.alerts)} alert(s))")
    unjudged = sum(not w.judged for w in report.windows)
    st.caption(
        f"Each window of model {report.reference_version}'s predictions against its reference: its validation images "
        "for what depends on the model (class mix, confidence, energy, embedding, OOD rate, accuracy), and every image "
        "it did not hold out for testing for the image properties, measured the way production measures them. "
        "Kolmogorov-Smirnov for one number per image, chi-square for the class mix, Fisher's exact test for rates "
        "(the reference is a sample too), MMD for the embedding; an alert is a test whose p-value stays below "
        f"{report.q} after Benjamini-Hochberg over all {sum(len(w.tests) for w in report.windows)} tests shown."
        + (
            f" {unjudged} window(s) with fewer than {drift.stats.MIN_WINDOW} predictions are too few to judge."
            if unjudged
            else ""
        )
        + (f" {report.excluded} prediction(s) by other versions are not judged." if report.excluded else "")
    )
    if any(w.judged for w in report.windows):
        st.plotly_chart(drift_charts.grid_figure(report), key="monitor_grid")
    by_window: dict[str, list] = {}
    for a in report.alerts:
        by_window.setdefault(a.window, []).append(a)
    for n, (label, found) in enumerate(reversed(list(by_window.items()))):  # the latest window first
        found = sorted(found, key=lambda a: a.adjusted_p)
        top = found[0]
        with st.container(border=True):
            st.markdown(f"**{label}**: {len(found)} test(s) moved")
            st.markdown(
                "\n".join(
                    f"- **{drift_charts.METRIC_NAMES.get(a.metric, a.metric)}**: {a.words} (adjusted p {a.adjusted_p:.1g}, "
                    f"n {a.n})"
                    for a in found
                )
            )
            st.caption(f"What to do: {'; '.join(dict.fromkeys(a.lever for a in found))}.")
            kept = [e for e in top.examples if e.image_path]
            if kept:
                st.caption(
                    f"The images that show the strongest change ({drift_charts.METRIC_NAMES.get(top.metric, top.metric)}):"
                )
                image_grid([ws.root / e.image_path for e in kept], [f"{e.predicted} · {e.value:.3g}" for e in kept], columns=6)
            else:
                st.write(
                    "This workspace does not keep production images (Predict → deployment settings), so here are their "
                    "names: " + ", ".join(e.name for e in top.examples)
                )
        if n >= 9 and len(by_window) > 10:
            st.caption(f"... and {len(by_window) - 10} more window(s) with alerts: see `python -m core monitor --json`.")
            break
    judged = [w for w in report.windows if w.judged]
    if judged:
        st.subheader("One metric up close")
        c1, c2 = st.columns(2)
        metrics = [m for m in drift_charts.METRIC_ORDER if any(t.metric == m for t in judged[0].tests)]
        first_alert = report.alerts[0] if report.alerts else None
        metric = c1.selectbox(
            "Metric",
            metrics,
            index=metrics.index(first_alert.metric) if first_alert and first_alert.metric in metrics else 0,
            format_func=lambda m: drift_charts.METRIC_NAMES.get(m, m),
            key="monitor_metric",
        )
        labels = [w.window for w in judged]
        chosen = c2.selectbox(
            "Window",
            labels,
            index=labels.index(first_alert.window) if first_alert else len(labels) - 1,
            key="monitor_close_window",
        )
        st.plotly_chart(drift_charts.distribution_figure(report, metric, chosen), key="monitor_distribution")
        shown = [e for e in drift.examples_for(report, metric, chosen) if e.image_path]
        if shown:
            st.caption(f"The images of {chosen} that show it most:")
            image_grid([ws.root / e.image_path for e in shown], [f"{e.predicted} · {e.value:.3g}" for e in shown], columns=6)
        st.subheader("Accuracy without labels")
        st.caption(
            "Average thresholded confidence (ATC: the share of predictions above the confidence at which the reference's "
            "share equals its accuracy) and average confidence estimate accuracy with no label at all; accuracy from "
            "feedback is shown where people labelled predictions, and the true accuracy where the traffic is simulated."
        )
        truth = queries.truth_by_window(ws, flt)
        st.plotly_chart(drift_charts.estimates_figure(report, truth), key="monitor_estimates")

with st.expander("Latest predictions"):
    st.dataframe(prediction_log.recent(ws, 100), hide_index=True, width="stretch")
with st.expander("Simulate more traffic"):
    simulate_button("Simulate")
