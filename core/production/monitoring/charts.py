"""Monitoring charts built from the per-window figures and the reference: the overview panels and the class mix."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from core.production.monitoring.queries import window_label
from core.production.monitoring.reference import LogReference


def _reference_line(fig: go.Figure, y: float, text: str, row: int, col: int = 1) -> None:
    fig.add_hline(
        y=y, line_dash="dot", line_color="#636363", annotation_text=text, annotation_position="top left", row=row, col=col
    )


TICKS = {"hour": "%b %d %H:%M", "day": "%b %d", "week": "%b %d", "predictions": "%b %d %H:%M"}
SPAN = {"hour": pd.Timedelta(hours=1), "day": pd.Timedelta(days=1), "week": pd.Timedelta(days=7)}


def overview_figure(win: pd.DataFrame, base: LogReference | None, window: str = "day") -> go.Figure:
    """Four stacked panels sharing the time axis (dates: one window alone is shown as its date, never as fractions
    of a second around it): volume, confidence band, OOD rate, accuracy from feedback."""
    fig = make_subplots(
        rows=4,
        cols=1,
        shared_xaxes=True,
        vertical_spacing=0.06,
        subplot_titles=(
            "Predictions",
            "Confidence (10th-90th percentile, median)",
            "Out-of-domain rate",
            "Accuracy from feedback",
        ),
    )
    x = win["window"]
    fig.add_bar(x=x, y=win["predictions"], name="predictions", marker_color="#4C78A8", row=1, col=1)
    fig.add_scatter(x=x, y=win["confidence_p90"], mode="lines", line_width=0, showlegend=False, row=2, col=1)
    fig.add_scatter(
        x=x,
        y=win["confidence_p10"],
        mode="lines",
        line_width=0,
        fill="tonexty",
        fillcolor="rgba(76,120,168,0.25)",
        name="p10-p90",
        row=2,
        col=1,
    )
    fig.add_scatter(
        x=x, y=win["confidence_p50"], mode="lines+markers", name="median confidence", line_color="#4C78A8", row=2, col=1
    )
    fig.add_scatter(x=x, y=win["ood_rate"], mode="lines+markers", name="OOD rate", line_color="#E45756", row=3, col=1)
    fig.add_scatter(
        x=x,
        y=win["feedback_accuracy"],
        mode="lines+markers",
        name="accuracy (feedback)",
        line_color="#54A24B",
        customdata=win["feedback"],
        hovertemplate="%{x}<br>accuracy %{y:.1%} on %{customdata} labelled<extra></extra>",
        row=4,
        col=1,
    )
    if base is not None:
        _reference_line(fig, base.confidence_p50, f"validation median {base.confidence_p50:.2f}", 2)
        _reference_line(fig, base.ood_rate, f"validation {base.ood_rate:.0%}", 3)
        _reference_line(fig, base.accuracy, f"validation {base.accuracy:.1%}", 4)
    fig.update_yaxes(range=[0, 1.05], row=2, col=1)
    fig.update_yaxes(tickformat=".0%", rangemode="tozero", row=3, col=1)
    fig.update_yaxes(tickformat=".0%", range=[0, 1.05], row=4, col=1)
    fig.update_layout(height=640, showlegend=False, margin={"t": 40, "b": 20})
    fig.update_xaxes(tickformat=TICKS.get(window, "%b %d"))
    if len(win) == 1:  # plotly zooms a lone point to milliseconds: give it a window's width on each side
        at, span = pd.Timestamp(win["window"].iloc[0]), SPAN.get(window, pd.Timedelta(hours=1))
        fig.update_xaxes(range=[at - span, at + span])
    return fig


def class_mix_figure(mix: pd.DataFrame, base: LogReference | None) -> go.Figure:
    """Share of each predicted class per window, with the validation set's mix as the first bar."""
    fig = go.Figure()
    classes = sorted(set(mix["predicted"]) | set(base.class_mix if base else {}))
    for c in classes:
        part = mix[mix["predicted"] == c]
        x = (["validation"] if base else []) + [window_label(w) for w in part["window"]]
        y = ([base.class_mix.get(c, 0.0)] if base else []) + part["share"].tolist()
        fig.add_bar(x=x, y=y, name=c)
    fig.update_layout(
        barmode="stack",
        xaxis_type="category",  # "validation" then the windows, not a date axis
        yaxis_tickformat=".0%",
        height=360,
        margin={"t": 30, "b": 20},
        legend_title_text="predicted class",
        title="Predicted-class mix: validation reference, then each window",
    )
    return fig
