"""The prediction log per window: volume, class mix, confidence, OOD rate, feedback accuracy.

Every figure is one SQL aggregation in DuckDB (seconds over millions of rows), compared with the
model's frozen validation reference.
"""

from __future__ import annotations

from dataclasses import dataclass

import duckdb
import pandas as pd

from core.data.images import PROPERTIES
from core.production import prediction_log
from core.workspace import store
from core.workspace.paths import Workspace

WINDOWS = ("hour", "day", "week", "predictions")  # predictions: consecutive blocks of `size` predictions

# A label agrees with the prediction when it names the predicted class, or says "none of these" about an image the
# model itself flagged as out of domain (the model was right not to trust its class). Every accuracy from labels uses it.
AGREES = "(fb.label = p.predicted OR (fb.label = ? AND p.ood))"
# A label the model did not choose: given in use (the app, an end user, the simulator) or on an audit item. Labels
# from the review queue on the hard cases it collects are lower by design: accuracy "from feedback" leaves them out
# (they are counted apart, as reviews; monitoring.accuracy weighs them by how they were chosen).
BY_CHANCE = "(fb.source NOT IN ('review', 'import') OR coalesce(p.audit, FALSE))"


def default_sources(ws: Workspace) -> tuple[str, ...]:
    """The sources monitoring shows unless asked: every one, but simulated traffic is left out as soon as real
    predictions exist (it is replayed test images, backdated: mixed in, it would hide or fake a real change)."""
    real = sum(prediction_log.count(ws, s) for s in prediction_log.SOURCES if s != "simulation")
    return tuple(s for s in prediction_log.SOURCES if s != "simulation" or not real)


@dataclass(frozen=True)
class LogFilter:
    window: str = "day"
    sources: tuple[str, ...] = prediction_log.SOURCES
    version: str | None = None  # None: every model version, the prediction served for each request
    size: int = 200  # predictions per window when window == "predictions"


def _where(f: LogFilter, alias: str = "") -> tuple[str, list[object]]:
    a = f"{alias}." if alias else ""
    clauses = [f"{a}source IN ({', '.join('?' for _ in f.sources)})"] if f.sources else ["FALSE"]
    params: list[object] = list(f.sources)
    if f.version:  # every prediction of that version, a candidate's shadow ones included
        clauses.append(f"{a}model_version = ?")
        params.append(f.version)
    else:  # one prediction per request: the one served (a shadow prediction would count the request twice)
        clauses.append(f"{a}served IS NOT FALSE")
    return " AND ".join(clauses), params


def _check(f: LogFilter) -> None:
    if f.window not in WINDOWS:
        raise ValueError(f"window must be one of {WINDOWS}")  # pages and the CLI offer only these
    if f.window == "predictions" and not 10 <= f.size <= 1_000_000:
        raise ValueError("window size must be 10 to 1,000,000 predictions")


def logged(f: LogFilter) -> tuple[str, list[object]]:
    """A `logged` CTE: the filtered predictions with their window (the start of a time window, or the first
    timestamp of a block of f.size consecutive predictions)."""
    _check(f)
    where, params = _where(f)
    if f.window != "predictions":
        return f"logged AS (SELECT *, date_trunc('{f.window}', ts) AS \"window\" FROM log_predictions WHERE {where})", params
    return (
        f"numbered AS (SELECT *, (row_number() OVER (ORDER BY ts, id) - 1) // {int(f.size)} AS block "
        f"FROM log_predictions WHERE {where}), "
        'logged AS (SELECT * EXCLUDE (block), min(ts) OVER (PARTITION BY block) AS "window" FROM numbered)',
        params,
    )


def count(ws: Workspace, f: LogFilter = LogFilter(), con: duckdb.DuckDBPyConnection | None = None) -> int:
    """Predictions the filter shows, in every window."""
    _check(f)
    where, params = _where(f)
    with store.reuse(ws, con) as c:
        return int(c.execute(f"SELECT count(*) FROM log_predictions WHERE {where}", params).fetchone()[0])


def windows(ws: Workspace, f: LogFilter = LogFilter(), con: duckdb.DuckDBPyConnection | None = None) -> pd.DataFrame:
    """Per window: predictions, confidence quantiles, OOD rate, latency, feedback count and accuracy (labels the model
    did not choose: BY_CHANCE), and how often reviewers agreed with the model on the predictions they reviewed (the
    queue's: referred, OOD, disputed, and the audit sample)."""
    cte, params = logged(f)
    sql = f"""
        WITH {cte}, fb AS (SELECT prediction_id, arg_max(label, ts) AS label, arg_max(source, ts) AS source
                           FROM log_feedback GROUP BY prediction_id)
        SELECT p."window",
               count(*) AS predictions,
               count(DISTINCT p.sha256) AS images,
               count(DISTINCT CASE WHEN p.ood THEN p.sha256 END) AS ood_images,
               avg(p.confidence) AS mean_confidence,
               quantile_cont(p.confidence, 0.1) AS confidence_p10,
               quantile_cont(p.confidence, 0.5) AS confidence_p50,
               quantile_cont(p.confidence, 0.9) AS confidence_p90,
               avg(p.ood::INTEGER) AS ood_rate,
               quantile_cont(p.latency_ms, 0.5) AS latency_p50_ms,
               count(fb.label) FILTER (WHERE {BY_CHANCE}) AS feedback,
               count(CASE WHEN {AGREES} AND {BY_CHANCE} THEN 1 END) AS feedback_correct,
               avg(CASE WHEN fb.label IS NULL OR NOT {BY_CHANCE} THEN NULL WHEN {AGREES} THEN 1 ELSE 0 END) AS feedback_accuracy,
               avg(CASE WHEN fb.label IS NULL OR NOT {BY_CHANCE} THEN NULL WHEN fb.label = ? THEN 1 ELSE 0 END)
                   AS feedback_none_share,
               count_if(fb.source = 'review') AS reviews,
               count(CASE WHEN fb.source = 'review' AND {AGREES} THEN 1 END) AS review_correct,
               avg(CASE WHEN fb.source = 'review' THEN ({AGREES})::INTEGER END) AS review_agreement
        FROM logged p LEFT JOIN fb ON fb.prediction_id = p.id
        GROUP BY ALL ORDER BY "window"
    """
    with store.reuse(ws, con) as c:
        none = prediction_log.NONE_OF_THESE
        return c.execute(sql, [*params, *[none] * (sql.count("?") - len(params))]).df()


def class_mix(ws: Workspace, f: LogFilter = LogFilter(), con: duckdb.DuckDBPyConnection | None = None) -> pd.DataFrame:
    """Per window and predicted class: count and share of the window."""
    cte, params = logged(f)
    sql = f"""
        WITH {cte}, counts AS (SELECT "window", predicted, count(*) AS n, count(DISTINCT sha256) AS images
                               FROM logged GROUP BY ALL)
        SELECT "window", predicted, n, images, n / sum(n) OVER (PARTITION BY "window") AS share
        FROM counts ORDER BY "window", predicted
    """
    with store.reuse(ws, con) as c:
        return c.execute(sql, params).df()


SAMPLE_COLUMNS = (
    "id", "name", "ts", "sha256", "predicted", "confidence", "energy", "ood", "embedding", "image_path", *PROPERTIES,
)  # fmt: skip


def window_samples(
    ws: Workspace, f: LogFilter = LogFilter(), per_window: int = 500, con: duckdb.DuckDBPyConnection | None = None
) -> pd.DataFrame:
    """Up to per_window predictions of every window (all of them in smaller windows), chosen by a hash of the
    id so that the same log gives the same sample, with the latest feedback label when there is one."""
    cte, params = logged(f)
    chosen_sql = f"""
        WITH {cte},
        sizes AS (SELECT "window", count(*) AS c FROM logged GROUP BY ALL),
        thinned AS (  -- keep about 3x the sample by hash first, so that ranking sorts thousands, not millions
            SELECT l."window", l.id FROM logged l JOIN sizes USING ("window")
            WHERE hash(l.id) % 1000003 < 1000003 * least(1.0, {3 * int(per_window)} / sizes.c)
        ),
        ranked AS (SELECT *, row_number() OVER (PARTITION BY "window" ORDER BY hash(id), id) AS r FROM thinned)
        SELECT "window", id, r FROM ranked WHERE r <= {int(per_window)}
    """
    cols = ", ".join(f"p.{c}" for c in SAMPLE_COLUMNS)
    with store.reuse(ws, con) as c:  # the ids first (narrow columns), then only their rows' wide ones (the embedding)
        chosen = c.execute(chosen_sql, params).df()
        c.register("chosen_sample", chosen)
        try:
            return c.execute(
                f"""
                WITH fb AS (SELECT prediction_id, arg_max(label, ts) AS label FROM log_feedback
                            WHERE prediction_id IN (SELECT id FROM chosen_sample) GROUP BY prediction_id)
                SELECT s."window", {cols}, fb.label AS feedback_label
                FROM chosen_sample s JOIN log_predictions p ON p.id = s.id LEFT JOIN fb ON fb.prediction_id = s.id
                WHERE p.id IN (SELECT id FROM chosen_sample)
                ORDER BY s."window", s.r
                """
            ).df()
        finally:
            c.unregister("chosen_sample")


def truth_by_window(ws: Workspace, f: LogFilter = LogFilter(), con: duckdb.DuckDBPyConnection | None = None) -> pd.DataFrame:
    """Per window, for simulated predictions: the true accuracy the simulator knows (window, accuracy_true)."""
    cte, params = logged(f)
    sql = f"""
        WITH {cte}
        SELECT p."window", avg((t.label = p.predicted)::INTEGER) AS accuracy_true, count(*) AS truth_n
        FROM logged p JOIN simulation_truth t ON t.prediction_id = p.id
        GROUP BY ALL ORDER BY "window"
    """
    with store.reuse(ws, con) as c:
        frame = c.execute(sql, params).df()
    return frame.assign(window=frame["window"].map(window_label))


def window_label(window: object) -> str:
    """A window as pages and reports name it: the date alone for days and weeks."""
    return str(window).removesuffix(" 00:00:00")


def json_records(frame: pd.DataFrame) -> list[dict[str, object]]:
    """Rows with NaN as None and times as text."""
    out = frame.assign(window=frame["window"].astype(str)).astype(object)
    return out.where(out.notna(), None).to_dict(orient="records")
