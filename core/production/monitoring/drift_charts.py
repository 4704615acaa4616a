"""Figures of the drift report: the metric x window grid, one metric's reference against a window, and the
accuracy estimates over time."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from core.production.monitoring.drift import PROPERTY_METRICS, DriftReport
from core.production.monitoring.stats import DriftTest

_ONE_NUMBER = ("confidence", "energy", *PROPERTY_METRICS)
METRIC_ORDER = (
    "class_mix", "class_share", "embedding", "ood_rate", "feedback_accuracy",
    *[m for base in _ONE_NUMBER for m in (base, f"{base}_tails")],
)  # fmt: skip
METRIC_NAMES = {
    "class_mix": "class mix",
    "class_share": "one class's share",
    "confidence": "confidence",
    "energy": "energy (OOD-ness)",
    "embedding": "embedding (content)",
    "ood_rate": "out-of-domain rate",
    "feedback_accuracy": "accuracy (feedback)",
    **{f"{m}_tails": f"{m}: extremes" for m in _ONE_NUMBER},
}


def strength(test: DriftTest) -> float:
    """How big a change is, on one 0-1 scale for colour: 2 reference SDs of median shift, 30 points of total
    variation or 20 points of rate difference count as 1; the embedding by its adjusted p."""
    if test.metric == "class_mix":
        return min(test.effect / 0.3, 1.0)
    if test.metric in ("ood_rate", "feedback_accuracy", "class_share") or test.metric.endswith("_tails"):
        return min(abs(test.effect) / 0.2, 1.0)
    if test.metric == "embedding":
        return min(-math.log10(max(test.adjusted_p, 1e-12)) / 4, 1.0)
    return min(abs(test.effect) / 2.0, 1.0)


def grid_figure(report: DriftReport) -> go.Figure:
    """Rows metrics, columns windows, colour the size of the change, '!' where an alert stands; windows too
    small to judge are left blank."""
    columns = [w.window for w in report.windows]
    alerts = {(a.window, a.metric) for a in report.alerts}
    rows = [m for m in METRIC_ORDER if any(t.metric == m for w in report.windows for t in w.tests)]
    z = np.full((len(rows), len(columns)), np.nan)
    text = [["" for _ in columns] for _ in rows]
    hover = [["too few distinct images to judge" for _ in columns] for _ in rows]
    for j, w in enumerate(report.windows):
        for t in w.tests:
            i = rows.index(t.metric)
            z[i, j] = strength(t)
            small = t.significant(report.q) and not t.matters(report.q)
            text[i][j] = "!" if (w.window, t.metric) in alerts else ("·" if small else "")
            hover[i][j] = (
                f"{t.words}<br>p {t.p_value:.2g}, adjusted {t.adjusted_p:.2g}, n {t.n}; effect {abs(t.effect):.3g}, "
                f"floor {t.floor:.3g}" + ("<br>detected, too small to matter" if small else "")
            )
    fig = go.Figure(
        go.Heatmap(
            z=z,
            x=columns,
            y=[METRIC_NAMES.get(m, m) for m in rows],
            text=text,
            texttemplate="%{text}",
            customdata=hover,
            hovertemplate="%{x} · %{y}<br>%{customdata}<extra></extra>",
            colorscale=[[0, "#f7f7f7"], [0.5, "#fdae61"], [1, "#d7191c"]],
            zmin=0,
            zmax=1,
            colorbar={"title": "size of change", "tickvals": [0, 0.5, 1], "ticktext": ["none", "medium", "large"]},
        )
    )
    fig.update_layout(
        title=f"Every test, every window (! = alert: adjusted p < {report.q} and effect above its floor; "
        "· = detected, too small to matter; blank = too few images)",
        xaxis_type="category",
        yaxis_autorange="reversed",
        height=120 + 26 * len(rows),
        margin={"t": 50, "b": 20},
    )
    return fig


def metric_values(report: DriftReport, metric: str, window: str) -> tuple[np.ndarray, np.ndarray]:
    """The reference's values and the window's, for one metric (energy stands in for the OOD rate, the
    distance from the reference's centre for the embedding)."""
    ref, sample = report.reference, report.samples
    metric = metric.removesuffix("_tails")
    if ref is None or sample is None:
        return np.zeros(0), np.zeros(0)
    part = sample[sample["label"] == window]
    if metric in PROPERTY_METRICS:
        return ref.properties[metric].to_numpy(float), part[metric].to_numpy(float)
    if metric == "confidence":
        return ref.confidence, part["confidence"].to_numpy(float)
    if metric in ("energy", "ood_rate"):
        return ref.energy, part["energy"].to_numpy(float)
    if metric == "embedding":
        centre = ref.embedding.mean(0)
        window_emb = np.stack(part["embedding"].map(np.asarray).to_numpy()) if len(part) else np.zeros((0, len(centre)))
        return np.linalg.norm(ref.embedding - centre, axis=1), np.linalg.norm(window_emb - centre, axis=1)
    return np.zeros(0), np.zeros(0)


def distribution_figure(report: DriftReport, metric: str, window: str) -> go.Figure:
    """The reference against one window on one metric: overlaid histograms (shares), or bars for the mix."""
    fig = go.Figure()
    name = METRIC_NAMES.get(metric, metric)
    if metric in ("class_mix", "class_share", "feedback_accuracy"):
        test = next((t for w in report.windows if w.window == window for t in w.tests if t.metric == metric), None)
        if metric in ("class_mix", "class_share") and report.reference is not None and report.samples is not None:
            part = report.samples[report.samples["label"] == window]
            classes = list(report.reference.classes)
            ref_share = report.reference.expected_mix
            win_share = part["predicted"].value_counts(normalize=True).reindex(classes, fill_value=0.0)
            fig.add_bar(x=classes, y=ref_share, name="expected from the reference")
            fig.add_bar(x=classes, y=win_share.to_numpy(), name=f"window {window} (sample)")
        elif test is not None:
            fig.add_bar(x=["reference", f"window {window}"], y=[test.reference, test.value], name=name)
        fig.update_layout(barmode="group", yaxis_tickformat=".0%")
    else:
        ref_values, win_values = metric_values(report, metric, window)
        extra = " (distance from the reference's centre)" if metric == "embedding" else ""
        extra = " (energy, which sets the OOD flag)" if metric == "ood_rate" else extra
        fig.add_histogram(x=ref_values, histnorm="probability", name=f"reference ({len(ref_values)})", opacity=0.6)
        fig.add_histogram(x=win_values, histnorm="probability", name=f"window {window} ({len(win_values)})", opacity=0.6)
        fig.update_layout(barmode="overlay", xaxis_title=f"{name}{extra}", yaxis_title="share of images")
    fig.update_layout(title=f"{name}: reference vs {window}", height=340, margin={"t": 50, "b": 20})
    return fig


def estimates_frame(report: DriftReport, truth: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per judged window: accuracy by ATC, by average confidence, from feedback (with n), and the truth when known."""
    rows = []
    for w in report.windows:
        if w.estimates is None:
            continue
        e = w.estimates
        rows.append(
            {
                "window": w.window,
                "predictions": w.n,
                "accuracy_atc": e.accuracy_atc,
                "atc_low": e.accuracy_atc_low,
                "atc_high": e.accuracy_atc_high,
                "accuracy_confidence": e.accuracy_confidence,
                "accuracy_feedback": e.accuracy_feedback,
                "feedback": e.feedback,
            }
        )
    frame = pd.DataFrame(
        rows,
        columns=[
            "window",
            "predictions",
            "accuracy_atc",
            "atc_low",
            "atc_high",
            "accuracy_confidence",
            "accuracy_feedback",
            "feedback",
        ],  # fmt: skip
    )
    if truth is not None and len(truth):
        frame = frame.merge(truth, on="window", how="left")
    return frame


def estimates_figure(report: DriftReport, truth: pd.DataFrame | None = None) -> go.Figure:
    """Accuracy over windows without labels (ATC, average confidence) beside accuracy from feedback and, for
    simulated traffic, the true accuracy the simulator knows."""
    frame = estimates_frame(report, truth)
    fig = go.Figure()
    band = frame.dropna(subset=["atc_low", "atc_high"])
    if len(band):  # ATC's 95% interval: the threshold and the window are both samples
        fig.add_scatter(x=band["window"], y=band["atc_high"], mode="lines", line_width=0, showlegend=False, hoverinfo="skip")
        fig.add_scatter(
            x=band["window"], y=band["atc_low"], mode="lines", line_width=0, fill="tonexty",
            fillcolor="rgba(76, 120, 168, 0.18)", name="ATC 95% interval",
        )  # fmt: skip
    fig.add_scatter(x=frame["window"], y=frame["accuracy_atc"], mode="lines+markers", name="estimated (ATC)")
    fig.add_scatter(
        x=frame["window"], y=frame["accuracy_confidence"], mode="lines+markers", name="estimated (average confidence)"
    )
    fig.add_scatter(
        x=frame["window"],
        y=frame["accuracy_feedback"],
        mode="markers",
        name="from feedback",
        customdata=frame["feedback"],
        hovertemplate="%{x}<br>%{y:.1%} on %{customdata} labelled<extra></extra>",
        marker={"size": 10, "symbol": "diamond"},
    )
    if "accuracy_true" in frame:
        fig.add_scatter(x=frame["window"], y=frame["accuracy_true"], mode="lines", name="true (simulation)", line_dash="dot")
    if report.reference is not None:
        ref = report.reference
        accuracy = float(np.mean(ref.predicted == ref.labels))
        fig.add_hline(y=accuracy, line_dash="dot", line_color="#636363", annotation_text=f"validation {accuracy:.1%}")
    fig.update_layout(
        title="Accuracy per window, without labels and from feedback",
        xaxis_type="category",
        yaxis_tickformat=".0%",
        yaxis_range=[0, 1.05],
        height=340,
        margin={"t": 50, "b": 20},
    )
    return fig
