"""Monitoring over the prediction log: per-window volume, class mix, confidence, OOD rate, feedback accuracy.

Every figure is one SQL aggregation in DuckDB (seconds over millions of rows), compared with the
model's frozen validation reference.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from core import prediction, prediction_log, registry, store
from core.workspace import Workspace

WINDOWS = ("hour", "day", "week")


@dataclass(frozen=True)
class LogFilter:
    window: str = "day"
    sources: tuple[str, ...] = prediction_log.SOURCES
    version: str | None = None  # None: every model version


def _where(f: LogFilter, alias: str = "") -> tuple[str, list[object]]:
    a = f"{alias}." if alias else ""
    clauses = [f"{a}source IN ({', '.join('?' for _ in f.sources)})"] if f.sources else ["FALSE"]
    params: list[object] = list(f.sources)
    if f.version:
        clauses.append(f"{a}model_version = ?")
        params.append(f.version)
    return " AND ".join(clauses), params


def _check(f: LogFilter) -> None:
    if f.window not in WINDOWS:
        raise ValueError(f"window must be one of {WINDOWS}")  # pages and the CLI offer only these


def windows(ws: Workspace, f: LogFilter = LogFilter()) -> pd.DataFrame:
    """Per window: predictions, confidence quantiles, OOD rate, latency, feedback count and accuracy."""
    _check(f)
    where, params = _where(f, "p")
    sql = f"""
        WITH fb AS (SELECT prediction_id, arg_max(label, ts) AS label FROM feedback GROUP BY prediction_id)
        SELECT date_trunc('{f.window}', p.ts) AS "window",
               count(*) AS predictions,
               avg(p.confidence) AS mean_confidence,
               quantile_cont(p.confidence, 0.1) AS confidence_p10,
               quantile_cont(p.confidence, 0.5) AS confidence_p50,
               quantile_cont(p.confidence, 0.9) AS confidence_p90,
               avg(p.ood::INTEGER) AS ood_rate,
               quantile_cont(p.latency_ms, 0.5) AS latency_p50_ms,
               count(fb.label) AS feedback,
               avg(CASE WHEN fb.label IS NULL THEN NULL WHEN fb.label = p.predicted THEN 1 ELSE 0 END) AS feedback_accuracy,
               avg(CASE WHEN fb.label IS NULL THEN NULL WHEN fb.label = ? THEN 1 ELSE 0 END) AS feedback_none_share
        FROM predictions p LEFT JOIN fb ON fb.prediction_id = p.id
        WHERE {where}
        GROUP BY ALL ORDER BY "window"
    """
    with store.connect(ws) as con:
        return con.execute(sql, [prediction_log.NONE_OF_THESE, *params]).df()


def class_mix(ws: Workspace, f: LogFilter = LogFilter()) -> pd.DataFrame:
    """Per window and predicted class: count and share of the window."""
    _check(f)
    where, params = _where(f)
    sql = f"""
        WITH counts AS (
            SELECT date_trunc('{f.window}', ts) AS "window", predicted, count(*) AS n
            FROM predictions WHERE {where} GROUP BY ALL
        )
        SELECT "window", predicted, n, n / sum(n) OVER (PARTITION BY "window") AS share
        FROM counts ORDER BY "window", predicted
    """
    with store.connect(ws) as con:
        return con.execute(sql, params).df()


@dataclass(frozen=True)
class Baseline:
    """The validation reference of one model version, in the log's terms."""

    version: str
    class_mix: dict[str, float]
    confidence_p10: float
    confidence_p50: float
    confidence_p90: float
    ood_rate: float
    accuracy: float


def baseline(ws: Workspace, version: str) -> Baseline:
    ref = registry.load_reference(ws, version)
    meta = registry.read_meta(ws, version)
    probs = ref["valid_probs"]
    predicted = probs.argmax(1)
    conf = probs.max(1)
    return Baseline(
        version,
        {c: float((predicted == i).mean()) for i, c in enumerate(meta["classes"])},
        float(np.quantile(conf, 0.1)),
        float(np.quantile(conf, 0.5)),
        float(np.quantile(conf, 0.9)),
        1.0 - prediction.VALID_PASS,  # the threshold flags this share of in-domain images by construction
        float((predicted == ref["valid_labels"]).mean()),
    )


def _reference_line(fig: go.Figure, y: float, text: str, row: int, col: int = 1) -> None:
    fig.add_hline(
        y=y, line_dash="dot", line_color="#636363", annotation_text=text, annotation_position="top left", row=row, col=col
    )


def overview_figure(win: pd.DataFrame, base: Baseline | None) -> go.Figure:
    """Four stacked panels sharing the time axis: volume, confidence band, OOD rate, accuracy from feedback."""
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
    fig.update_layout(height=820, showlegend=False, margin={"t": 40, "b": 20})
    return fig


def class_mix_figure(mix: pd.DataFrame, base: Baseline | None) -> go.Figure:
    """Share of each predicted class per window, with the validation set's mix as the first bar."""
    fig = go.Figure()
    classes = sorted(set(mix["predicted"]) | set(base.class_mix if base else {}))
    for c in classes:
        part = mix[mix["predicted"] == c]
        x = (["validation"] if base else []) + [str(w).removesuffix(" 00:00:00") for w in part["window"]]
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


ALERT_P = 0.01


def alerts(win: pd.DataFrame, base: Baseline) -> list[dict[str, object]]:
    """Windows whose OOD rate is above, or whose feedback accuracy is below, the validation reference
    by more than chance explains (one-sided binomial test per window, p < ALERT_P, uncorrected)."""
    from scipy.stats import binomtest

    found: list[dict[str, object]] = []
    for row in win.itertuples():
        n, k = int(row.predictions), round(row.ood_rate * row.predictions)
        p = binomtest(k, n, min(max(base.ood_rate, 1e-3), 1 - 1e-3), alternative="greater").pvalue
        if p < ALERT_P:
            found.append(_alert(row.window, "ood_rate", row.ood_rate, base.ood_rate, n, p))
        m = int(row.feedback)
        if m:
            correct = round(row.feedback_accuracy * m)
            p = binomtest(correct, m, min(max(base.accuracy, 1e-3), 1 - 1e-3), alternative="less").pvalue
            if p < ALERT_P:
                found.append(_alert(row.window, "feedback_accuracy", row.feedback_accuracy, base.accuracy, m, p))
    return found


def _alert(window: object, metric: str, value: float, reference: float, n: int, p: float) -> dict[str, object]:
    return {
        "window": str(window).removesuffix(" 00:00:00"),
        "metric": metric,
        "value": float(value),
        "reference": float(reference),
        "effect": float(value - reference),
        "n": n,
        "p_value": float(p),
    }


def summary(ws: Workspace, f: LogFilter = LogFilter(), version: str | None = None) -> dict[str, object]:
    """Windows, alerts against the reference of `version` (default production) and totals, for the CLI."""
    win = windows(ws, f)
    reference = version or f.version or registry.production_version(ws)
    base = baseline(ws, reference) if reference else None
    return {
        "window": f.window,
        "reference_version": reference,
        "predictions": int(win["predictions"].sum()) if len(win) else 0,
        "windows": json_records(win),
        "alerts": alerts(win, base) if base is not None else [],
        "spooled": prediction_log.spooled_rows(ws),
    }


def json_records(frame: pd.DataFrame) -> list[dict[str, object]]:
    """Rows with NaN as None and times as text."""
    out = frame.assign(window=frame["window"].astype(str)).astype(object)
    return out.where(out.notna(), None).to_dict(orient="records")
