"""The prediction log per window: volume, class mix, confidence, OOD rate, feedback accuracy.

Every figure is one SQL aggregation in DuckDB (seconds over millions of rows), compared with the
model's frozen validation reference.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import duckdb
import pandas as pd

from core.data.images import PROPERTIES
from core.production import labelled, log_figures, prediction_log
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


def default_sources(ws: Workspace, counted: dict[str, int] | None = None) -> tuple[str, ...]:
    """The sources monitoring shows unless asked: every one, but simulated traffic is left out as soon as real
    predictions exist (it is replayed test images, backdated: mixed in, it would hide or fake a real change).
    `counted`: prediction_log.counts, when the caller has them."""
    found = prediction_log.counts(ws) if counted is None else counted
    real = sum(found.get(s, 0) for s in prediction_log.SOURCES if s != "simulation")
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


def logged(f: LogFilter, source: str = "log_predictions") -> tuple[str, list[object]]:
    """A `logged` CTE: the filtered predictions of `source` with their window (the start of a time window, or the
    first timestamp of a block of f.size consecutive predictions)."""
    _check(f)
    where, params = _where(f)
    if f.window != "predictions":
        return f"logged AS (SELECT *, date_trunc('{f.window}', ts) AS \"window\" FROM {source} WHERE {where})", params
    return (
        f"numbered AS (SELECT *, (row_number() OVER (ORDER BY ts, id) - 1) // {int(f.size)} AS block "
        f"FROM {source} WHERE {where}), "
        'logged AS (SELECT * EXCLUDE (block), min(ts) OVER (PARTITION BY block) AS "window" FROM numbered)',
        params,
    )


def count(ws: Workspace, f: LogFilter = LogFilter(), con: duckdb.DuckDBPyConnection | None = None) -> int:
    """Predictions the filter shows, in every window (counted per day: kept per group of days, as windows are)."""
    _check(f)
    where, params = _where(f)

    def sql(source: str) -> tuple[str, list[object]]:
        return f"SELECT date_trunc('day', ts) AS \"window\", count(*) AS n FROM {source} WHERE {where} GROUP BY ALL", params

    with store.reuse(ws, con) as c:
        days = log_figures.grouped(ws, c, "day", "count", sql, ["window"])
    return int(days["n"].sum())


def windows(ws: Workspace, f: LogFilter = LogFilter(), con: duckdb.DuckDBPyConnection | None = None) -> pd.DataFrame:
    """Per window: predictions, confidence quantiles, OOD rate, latency, feedback count and accuracy (labels the model
    did not choose: BY_CHANCE), and how often reviewers agreed with the model on the predictions they reviewed (the
    queue's: referred, OOD, disputed, and the audit sample). The predictions' figures are kept per group of days
    (log_figures); the feedback's are joined each time."""
    with store.reuse(ws, con) as c:
        stats = log_figures.grouped(ws, c, f.window, "windows", lambda src: _stats_sql(f, src), ["window"])
        labels = _feedback(ws, f, c)
    out = stats.merge(labels, on="window", how="left")
    for column in ("feedback", "feedback_correct", "reviews", "review_correct"):
        out[column] = out[column].fillna(0).astype("int64")
    return out[[*stats.columns, *FEEDBACK_COLUMNS]]


def filter_key(f: LogFilter, *more: object) -> tuple[object, ...]:
    """What a kept result depends on besides the group's rows: the filter (its sources in any order: the same rows)
    and a query's own settings."""
    return (f.window, tuple(sorted(f.sources)), f.version, f.size, *more)


def _stats_sql(f: LogFilter, source: str) -> tuple[str, list[object]]:
    cte, params = logged(f, source)
    return (
        f"""
        WITH {cte}
        SELECT "window",
               count(*) AS predictions,
               count(DISTINCT sha256) AS images,
               count(DISTINCT CASE WHEN ood THEN sha256 END) AS ood_images,
               avg(confidence) AS mean_confidence,
               quantile_cont(confidence, 0.1) AS confidence_p10,
               quantile_cont(confidence, 0.5) AS confidence_p50,
               quantile_cont(confidence, 0.9) AS confidence_p90,
               avg(ood::INTEGER) AS ood_rate,
               quantile_cont(latency_ms, 0.5) AS latency_p50_ms
        FROM logged GROUP BY ALL ORDER BY "window"
        """,
        params,
    )


FEEDBACK_COLUMNS = (
    "feedback", "feedback_correct", "feedback_accuracy", "feedback_none_share", "reviews", "review_correct",
    "review_agreement",
)  # fmt: skip


def _feedback(ws: Workspace, f: LogFilter, con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """Per window with feedback: the counts and rates windows() shows (the latest label of each prediction). For
    time windows, the labelled predictions with their latest labels are kept (labelled), not a join with the log;
    blocks of N predictions number every prediction, so they read the log."""
    if f.window == "predictions":
        cte, params = logged(f)
        fb = """JOIN (SELECT prediction_id, arg_max(label, ts) AS label, arg_max(source, ts) AS source FROM log_feedback
                      GROUP BY 1) fb ON fb.prediction_id = p.id"""
    else:  # each row holds its latest label: no join
        labelled.load(ws, con)
        cte, params = logged(f, labelled.AS_LOG)
        fb = "CROSS JOIN LATERAL (SELECT p.own_label AS label, p.own_source AS source) fb WHERE p.own_label IS NOT NULL"
    sql = f"""
        WITH {cte}
        SELECT p."window",
               count(fb.label) FILTER (WHERE {BY_CHANCE}) AS feedback,
               count(CASE WHEN {AGREES} AND {BY_CHANCE} THEN 1 END) AS feedback_correct,
               avg(CASE WHEN fb.label IS NULL OR NOT {BY_CHANCE} THEN NULL WHEN {AGREES} THEN 1 ELSE 0 END) AS feedback_accuracy,
               avg(CASE WHEN fb.label IS NULL OR NOT {BY_CHANCE} THEN NULL WHEN fb.label = ? THEN 1 ELSE 0 END)
                   AS feedback_none_share,
               count_if(fb.source = 'review') AS reviews,
               count(CASE WHEN fb.source = 'review' AND {AGREES} THEN 1 END) AS review_correct,
               avg(CASE WHEN fb.source = 'review' THEN ({AGREES})::INTEGER END) AS review_agreement
        FROM logged p {fb}
        GROUP BY ALL
    """
    none = prediction_log.NONE_OF_THESE
    return con.execute(sql, [*params, *[none] * (sql.count("?") - len(params))]).df()


def class_mix(ws: Workspace, f: LogFilter = LogFilter(), con: duckdb.DuckDBPyConnection | None = None) -> pd.DataFrame:
    """Per window and predicted class: count and share of the window."""

    def sql(source: str) -> tuple[str, list[object]]:
        cte, params = logged(f, source)
        return (
            f"""
            WITH {cte}, counts AS (SELECT "window", predicted, count(*) AS n, count(DISTINCT sha256) AS images
                                   FROM logged GROUP BY ALL)
            SELECT "window", predicted, n, images, n / sum(n) OVER (PARTITION BY "window") AS share
            FROM counts ORDER BY "window", predicted
            """,
            params,
        )

    with store.reuse(ws, con) as c:
        return log_figures.grouped(ws, c, f.window, "class_mix", sql, ["window", "predicted"])


SAMPLE_COLUMNS = (
    "id", "name", "ts", "sha256", "predicted", "confidence", "energy", "ood", "embedding", "image_path", *PROPERTIES,
)  # fmt: skip


def window_samples(
    ws: Workspace, f: LogFilter = LogFilter(), per_window: int = 500, con: duckdb.DuckDBPyConnection | None = None
) -> pd.DataFrame:
    """Up to per_window predictions of every window (all of them in smaller windows), chosen by a hash of the
    id so that the same log gives the same sample, with the latest feedback label when there is one."""

    def sql(source: str) -> tuple[str, list[object]]:
        cte, params = logged(f, source)
        cols = ", ".join(f"p.{c}" for c in SAMPLE_COLUMNS)
        return (
            f"""
            WITH {cte},
            sizes AS (SELECT "window", count(*) AS c FROM logged GROUP BY ALL),
            thinned AS (  -- keep about 3x the sample by hash first, so that ranking sorts thousands, not millions
                SELECT l."window", l.id FROM logged l JOIN sizes USING ("window")
                WHERE hash(l.id) % 1000003 < 1000003 * least(1.0, {3 * int(per_window)} / sizes.c)
            ),
            ranked AS (SELECT *, row_number() OVER (PARTITION BY "window" ORDER BY hash(id), id) AS r FROM thinned),
            chosen AS MATERIALIZED (SELECT "window", id, r FROM ranked WHERE r <= {int(per_window)})
            SELECT s."window", {cols}, s.r AS sample_rank
            FROM chosen s JOIN {source} p ON p.id = s.id
            WHERE p.id IN (SELECT id FROM chosen)
            ORDER BY s."window", s.r
            """,
            params,
        )

    with store.reuse(ws, con) as c:
        found = log_figures.grouped(ws, c, f.window, "samples", sql, ["window", "sample_rank"]).drop(columns="sample_rank")
        c.register("chosen_sample", found[["id"]])
        try:
            labels = c.execute(
                "SELECT prediction_id, arg_max(label, ts) AS label FROM log_feedback "
                "WHERE prediction_id IN (SELECT id FROM chosen_sample) GROUP BY prediction_id"
            ).df()
        finally:
            c.unregister("chosen_sample")
    given = found["id"].map(dict(zip(labels["prediction_id"], labels["label"], strict=True)))
    return found.assign(feedback_label=given.astype("str"))  # as DuckDB gives text: missing is NaN


def truth_by_window(ws: Workspace, f: LogFilter = LogFilter(), con: duckdb.DuckDBPyConnection | None = None) -> pd.DataFrame:
    """Per window, for simulated predictions: the true accuracy the simulator knows (window, accuracy_true)."""
    if f.window != "predictions":  # only simulated predictions have a truth: read no other (blocks number them all)
        f = replace(f, sources=tuple(s for s in f.sources if s == "simulation"))
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
