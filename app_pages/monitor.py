"""Monitor: the prediction log per window against the production model's reference: volume and confidence,
every drift test as a grid, alerts with their images and levers, one metric up close, accuracy estimates."""

from pathlib import Path

import pandas as pd
import streamlit as st

from core.errors import UserError
from core.model import rates, registry
from core.model.rates import points
from core.production import prediction_log, simulation_jobs, traffic
from core.production.monitoring import accuracy, causes, charts, drift, drift_charts, floors, queries, reference, verdict
from core.workspace import log_table
from core.workspace.paths import Workspace
from ui.common import attempt, current_workspace, image_grid, job_progress, log_settled, next_step
from ui.production import verdict_icon

ws = current_workspace()
log_settled(ws)  # what this app just scored is in the log before the page reads it
st.title("Monitor")
production = registry.production_version(ws)
total = prediction_log.count(ws)


@st.cache_data(max_entries=8, show_spinner="Testing every window against the reference...")
def cached_report(root: str, flt: queries.LogFilter, version: str, stamp: tuple) -> drift.DriftReport:
    """The drift report, computed again only when the log, its feedback or the filters change (a second a
    million rows): clicking through metrics and windows stays instant."""
    return drift.drift_report(Workspace(Path(root)), flt, version)


@st.cache_data(max_entries=8, show_spinner="Estimating accuracy from labels...")
def cached_accuracy(root: str, flt: queries.LogFilter, stamp: tuple) -> accuracy.Accuracy:
    """The accuracy estimates, computed again only when the log, its feedback or the filters change."""
    return accuracy.accuracy(Workspace(Path(root)), flt)


@st.fragment(run_every=1.0)
def simulation_progress() -> None:
    """The running simulation's progress, refreshed every second; the whole page again once it has ended."""
    job = simulation_jobs.current(ws)
    job_progress(job, lambda done, total, message: f"Simulating {job.days} days of traffic: {done}/{total} · {message[-60:]}")


def start_simulation() -> None:
    """The Simulate button's callback: it runs as the click arrives, before the page's script, so a page run cut
    short (a long page, another rerun) cannot lose the click, as a check of the button's value at its place could."""
    try:
        simulation_jobs.start(ws, int(st.session_state["monitor_sim_days"]))
        st.session_state["monitor_show_simulation"] = True  # the user asked for simulated traffic: show it
    except UserError as exc:  # one already runs (starting a thread touches no disk)
        st.session_state["monitor_simulation_refused"] = str(exc)


def simulate_button(label: str) -> None:
    """Start a simulation in the background (no rerun stops it halfway), or show the one running."""
    if refused := st.session_state.pop("monitor_simulation_refused", None):
        st.error(refused)
    job = simulation_jobs.current(ws)
    if job is not None and job.running:
        simulation_progress()
        return
    st.number_input("Days to simulate", 2, 60, 14, key="monitor_sim_days")
    st.button(label, key="monitor_simulate", disabled=production is None, on_click=start_simulation)


def floors_editor(ws: Workspace, judged: list[drift.WindowDrift]) -> None:
    """The floors in force for the latest judged window, each editable (a value set by hand wins)."""
    if not judged:
        return
    chosen = floors.chosen_floors(ws)
    table = pd.DataFrame(
        {
            "metric": [t.metric for t in judged[-1].tests],
            "floor": [t.floor for t in judged[-1].tests],
            "set by hand": [t.metric in chosen for t in judged[-1].tests],
        }
    )
    st.caption("Floors in force (latest window). Edit one to set it by hand; a negative value goes back to the default.")
    edited = st.data_editor(table, disabled=["metric", "set by hand"], hide_index=True, key="monitor_floors")
    changed = {m: float(v) for m, v, old in zip(edited["metric"], edited["floor"], table["floor"], strict=True) if v != old}
    if changed and st.button("Save floors", key="monitor_save_floors"):
        attempt(lambda: floors.save_floors(ws, changed))
        st.cache_data.clear()
        st.rerun()


if message := st.session_state.pop("monitor_message", None):
    st.success(message)
if (ended := simulation_jobs.current(ws)) is not None and not ended.running:
    simulation_jobs.forget(ws)
    if ended.error:
        st.error(ended.error)
    else:
        result = ended.result
        st.success(
            f"Simulated {result['predictions']} predictions over {result['days']} days "
            f"({result['shifted']} shifted images, {result['drawings']} drawings, {result['feedback']} with feedback). "
            + traffic.pool_note(result)
        )
if total == 0:
    st.info(
        "Nothing is logged yet. Score images on **Predict**, run `python -m core predict --workspace "
        f"{ws.name} PATH...`, or simulate production traffic here (held-back images, drifting in the second half)."
    )
    if production is None:
        st.warning("Promote a model on the Train page first: traffic is scored by the production model.")
        next_step("app_pages/train.py", "Go to Train")
    simulate_button("Simulate traffic")
    st.stop()

c1, c2, c3 = st.columns(3)
window = c1.segmented_control("Window", list(queries.WINDOWS), default="day", key="monitor_window") or "day"
size = 200
if window == "predictions":
    size = int(c1.number_input("Predictions per window", 30, 100_000, 200, step=50, key="monitor_size"))
usual = queries.default_sources(ws)
if st.session_state.pop("monitor_show_simulation", False):
    st.session_state["monitor_sources"] = list(prediction_log.SOURCES)
st.session_state.setdefault("monitor_sources", list(usual))  # one source of its value: a default beside the state warned
sources = tuple(c2.multiselect("Sources", list(prediction_log.SOURCES), key="monitor_sources"))
versions = ["all", *registry.list_versions(ws)["version"].tolist()[::-1]]
version = c3.selectbox("Model version", versions, key="monitor_version")
if "simulation" not in usual and "simulation" not in sources:
    st.caption(
        f"Simulated traffic ({prediction_log.count(ws, 'simulation'):,} predictions: replayed test images, backdated) is "
        "left out because real predictions exist; add **simulation** to Sources to see it."
    )
flt = queries.LogFilter(window, sources, None if version == "all" else version, size)
reference_version = flt.version or production
base = attempt(lambda: reference.log_reference(ws, reference_version)) if reference_version else None
win = queries.windows(ws, flt)
if win.empty:
    st.info("No predictions match these filters.")
    st.stop()
report = attempt(lambda: cached_report(str(ws.root), flt, reference_version, prediction_log.stamp(ws))) if base else None
found = verdict.verdict(report) if report else None
if found:
    with st.container(border=True, key="monitor_verdict"):
        st.markdown(f"### {verdict_icon(found)} {found.headline}")
        st.markdown("\n".join(f"- {r}" for r in found.reasons))

recent = win.iloc[-verdict.RECENT :]
ood = rates.Rate(int(recent["ood_images"].sum()), int(recent["images"].sum()))
estimated = attempt(lambda: cached_accuracy(str(ws.root), flt, prediction_log.stamp(ws)))
believed = estimated.believed
m1, m2, m3, m4 = st.columns(4)
m1.metric(
    "Predictions", f"{int(win['predictions'].sum()):,}",
    f"{int(recent['predictions'].sum()):,} in the last {len(recent)} {window}(s)", delta_color="off",
)  # fmt: skip
m2.metric(
    f"Out of domain, last {len(recent)} {window}(s) · n {ood.n:,}", ood.short(),
    f"{points(ood.value - base.ood_rate)} points vs validation" if base and ood.enough else None, delta_color="inverse",
    help=f"Distinct images flagged: {ood.text()}",
)  # fmt: skip
last = win.iloc[-1]
m3.metric(
    "Median confidence, last window", f"{last['confidence_p50']:.2f}",
    f"{last['confidence_p50'] - base.confidence_p50:+.2f}" if base else None,
)  # fmt: skip
m4.metric(
    f"Accuracy, all traffic in view · n {believed.n:,}",
    f"{believed.value:.1%}" if believed.value is not None else f"too few (n {believed.n})",
    f"{points(believed.value - base.accuracy)} points vs validation" if base and believed.value is not None else None,
    help=f"{believed.text()}. {estimated.advice()}",
)  # fmt: skip
if damaged := log_table.unreadable(ws):
    st.error(
        f"{len(damaged)} file(s) of the prediction log cannot be read and are left out of every figure (first: "
        f"{damaged[0].shown}). Run `python -m core check --workspace {ws.name} --repair`, or Check on "
        "Workspaces: it moves them to quarantine/log/ and says why."
    )
st.plotly_chart(charts.overview_figure(win, base, window), key="monitor_overview")
with st.container(border=True, key="monitor_accuracy"):
    st.markdown("**Accuracy of production, from labels**")
    st.markdown(estimated.advice())
    truth = queries.truth_by_window(ws, flt)
    true_all = float((truth["accuracy_true"] * truth["truth_n"]).sum() / truth["truth_n"].sum()) if len(truth) else None
    atc = accuracy.atc_overall(report) if report else (None, 0)
    st.dataframe(
        accuracy.table(estimated, atc, true_all),
        hide_index=True,
        column_order=["estimate", "reading", "rests on"],  # the reading carries the interval and n, or why there is none
    )
    st.caption(
        f"{estimated.drawn:,} of the {estimated.served:,} served predictions in view were drawn for the audit "
        f"({estimated.audit.n} labelled); {estimated.reviewed.n:,} of the {estimated.flagged:,} hard cases are labelled."
        + (
            f" {estimated.unknown_labels:,} other label(s) (feedback end users chose to give) enter no estimate: "
            "nobody knows how they were chosen."
            if estimated.unknown_labels
            else ""
        )
    )
if report is None:
    st.stop()

by_window = causes.report_causes(report)
st.subheader(f"Causes ({sum(map(len, by_window.values()))} in {len(by_window)} window(s))" if by_window else "Causes")
repeated = [w for w in report.windows if w.repeats]
if repeated:
    st.caption(
        f"{len(repeated)} window(s) hold few distinct images for their volume (e.g. {repeated[-1].window}: "
        f"{repeated[-1].n} predictions of {repeated[-1].images} images): each image is tested once."
    )
if not by_window:
    st.write("No change that matters in any window.")
for n, (label, found_causes) in enumerate(reversed(list(by_window.items()))):  # the latest window first
    if n == 3:
        st.caption(f"... and {len(by_window) - 3} earlier window(s) with causes: see the grid below or `monitor --json`.")
        break
    for c in found_causes:
        moved = ", ".join(drift_charts.METRIC_NAMES.get(t.metric, t.metric) for t in c.tests)
        # the latest window's causes in full; earlier ones one line each, opened on demand (the page stays short)
        box = st.container(border=True) if n == 0 else st.expander(f"{label} · {c.title}: {c.words}.")
        with box:
            if n == 0:
                st.markdown(f"**{label} · {c.title}**: {c.words}.")
                st.caption(f"What to do: {c.lever}. Tests that moved: {moved}")
            else:
                st.caption(f"Lever: {c.lever}. Tests that moved: {moved}")
            kept = [e for e in c.examples if e.image_path]
            if kept:
                image_grid([ws.root / e.image_path for e in kept], [f"{e.predicted} · {e.value:.3g}" for e in kept], columns=6)
            elif c.examples:
                st.caption("Images not kept (Predict → deployment settings): " + ", ".join(e.name for e in c.examples))

small = [(w.window, t) for w in report.windows for t in w.too_small(report.q)]
judged = [w for w in report.windows if w.judged]
with st.expander(f"Every test, every window ({len(small)} detected, too small to matter)"):
    unjudged = len(report.windows) - len(judged)
    st.caption(
        f"Each window of model {report.reference_version}'s predictions against its reference (its validation images; "
        "for the image properties, every image it did not hold out for testing), each distinct image once. KS for one "
        "number per image, chi-square and Fisher for the class mix and rates, MMD for the embedding, Benjamini-Hochberg "
        f"over all {sum(len(w.tests) for w in report.windows)} tests. An alert needs adjusted p < {report.q} **and** an "
        "effect at least as large as its floor: the 99th percentile of the change between random windows of the "
        "reference and the whole reference."
        + (f" {unjudged} window(s) with fewer than {drift.stats.MIN_WINDOW} distinct images are not judged." if unjudged else "")
        + (f" {report.excluded} prediction(s) by other versions are not judged." if report.excluded else "")
    )
    if judged:
        st.plotly_chart(drift_charts.grid_figure(report), key="monitor_grid")
    if small:
        st.markdown(
            "**Detected, too small to matter:**\n"
            + "\n".join(
                f"- {w}: {drift_charts.METRIC_NAMES.get(t.metric, t.metric)}: {t.words} (effect {abs(t.effect):.3g} "
                f"< floor {t.floor:.3g})"
                for w, t in small[-12:]
            )
        )
    st.plotly_chart(charts.class_mix_figure(queries.class_mix(ws, flt), base), key="monitor_mix")
    floors_editor(ws, judged)
if judged:
    with st.expander("One metric up close"):
        c1, c2 = st.columns(2)
        metrics = [m for m in drift_charts.METRIC_ORDER if any(t.metric == m for t in judged[0].tests)]
        first_alert = report.alerts[-1] if report.alerts else None
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
    with st.expander("Accuracy without labels"):
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
