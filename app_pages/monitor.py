"""Monitor: the prediction log per window against the production model's validation reference."""

import pandas as pd
import streamlit as st

from core.model import registry
from core.production import prediction_log, traffic
from core.production.monitoring import alerts, charts, queries, reference
from ui.common import attempt, current_workspace, progress_bar

ws = current_workspace()
st.title("Monitor")
production = registry.production_version(ws)
total = prediction_log.count(ws)


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
sources = tuple(
    c2.multiselect("Sources", list(prediction_log.SOURCES), default=list(prediction_log.SOURCES), key="monitor_sources")
)
versions = ["all", *registry.list_versions(ws)["version"].tolist()[::-1]]
version = c3.selectbox("Model version", versions, key="monitor_version")
flt = queries.LogFilter(window, sources, None if version == "all" else version)
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
spooled = prediction_log.spooled_rows(ws)
if spooled:
    st.warning(f"{spooled} logged prediction(s) wait in the spool for the database; they join the charts on the next write.")

st.plotly_chart(charts.overview_figure(win, base), key="monitor_overview")
st.plotly_chart(charts.class_mix_figure(queries.class_mix(ws, flt), base), key="monitor_mix")

if base is not None:
    found = alerts.alerts(win, base)
    st.subheader(f"Windows that differ from validation ({len(found)})")
    st.caption(
        f"Reference: model {base.version}'s validation set. An OOD rate above, or an accuracy from feedback below, the "
        f"reference by more than chance explains (one-sided binomial test, p < {alerts.ALERT_P}, per window)."
    )
    if found:
        st.dataframe(
            pd.DataFrame(found),
            hide_index=True,
            width="stretch",
            column_config={
                "value": st.column_config.NumberColumn(format="percent"),
                "reference": st.column_config.NumberColumn(format="percent"),
                "effect": st.column_config.NumberColumn(format="percent"),
                "p_value": st.column_config.NumberColumn(format="%.1e"),
            },
        )

with st.expander("Latest predictions"):
    st.dataframe(prediction_log.recent(ws, 100), hide_index=True, width="stretch")
with st.expander("Simulate more traffic"):
    simulate_button("Simulate")
