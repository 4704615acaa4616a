"""The prediction log per window: volume, class mix, confidence, OOD rate, feedback accuracy.

Every figure is one SQL aggregation in DuckDB (seconds over millions of rows), compared with the
model's frozen validation reference.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from core.production import prediction_log
from core.workspace import store
from core.workspace.paths import Workspace

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


def json_records(frame: pd.DataFrame) -> list[dict[str, object]]:
    """Rows with NaN as None and times as text."""
    out = frame.assign(window=frame["window"].astype(str)).astype(object)
    return out.where(out.notna(), None).to_dict(orient="records")
