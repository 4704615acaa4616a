"""The labelled requests' predictions with the labels that count for them, as a table of the database kept up to date
by each ingest of the log (log_ingest), for the figures from labels (accuracy, the review queue, the gate).

Each figure needs, for every labelled prediction, its own latest label and its request's: the latest label on any of
the request's predictions (a replay's aside), with the request's flags (hard case, audit). A request's rows change
only when one of its labels does or one of its predictions arrives, so `load` computes again only the requests with
- a label ingested since (served feedback), or given, changed or taken back in the database's feedback table since
  (found by comparing that table with the copy taken last time: an undo deletes rows);
- a prediction ingested since that is labelled, or whose request is (a candidate's beside production's);
- a prediction on a day the ingest read again (check --repair removed a file: its rows may be gone).
Everything is computed again when an ingest read the whole log again. The watermark is the ingest's number.
"""

from __future__ import annotations

import threading

import duckdb

from core.production.prediction_log import NONE_OF_THESE
from core.workspace import log_ingest, store
from core.workspace.paths import Workspace

TABLE = "log_labelled"  # prediction_id, COLUMNS, OWN and REQUEST: every prediction of every labelled request
AS_LOG = f"(SELECT prediction_id AS id, request AS request_id, * EXCLUDE (prediction_id, request) FROM {TABLE})"
MIRROR = "log_labelled_feedback"  # the database's feedback table as it was when TABLE was last brought up to date
_STATE = "log_labelled_seq"  # meta: the ingest TABLE is up to date with
# what is kept of a labelled prediction (a logged row never changes): name -> (type, expression over the row)
FIELDS = {
    "request": ("VARCHAR", "coalesce(request_id, id)"), "sha256": ("VARCHAR", "sha256"), "ts": ("TIMESTAMP", "ts"),
    "source": ("VARCHAR", "source"), "model_version": ("VARCHAR", "model_version"),
    "stage": ("VARCHAR", "coalesce(stage, 'production')"), "served": ("BOOLEAN", "served"),
    "predicted": ("VARCHAR", "predicted"), "ood": ("BOOLEAN", "ood"), "referred": ("BOOLEAN", "coalesce(referred, FALSE)"),
    "audit": ("BOOLEAN", "coalesce(audit, FALSE)"), "audit_p": ("DOUBLE", "coalesce(audit_p, 0.0)"),
    "name": ("VARCHAR", "name"), "image_path": ("VARCHAR", "image_path"),
}  # fmt: skip
_ROW = ", ".join(f"{e} AS {k}" for k, (_, e) in FIELDS.items())
COLUMNS = (
    "request", "ts", "source", "model_version", "stage", "served", "predicted", "ood", "referred", "audit", "audit_p",
    "sha256", "name", "image_path",
)  # fmt: skip
# of the prediction: its latest label, with its source and reviewer (NULL when it has none), whether a reviewer (or an
# imported label) ever settled it, and how many of its review labels agree with the model (queries.AGREES)
OWN = ("own_label", "own_source", "own_reviewer", "reviewed", "review_agreed")
# of its request: the latest label on any of its predictions but a replay's, with its source and reviewer; a hard case
# (referred, out of domain, or its models disagree); drawn by the audit and with what chance
REQUEST = ("label", "label_source", "reviewer", "flagged", "request_audit", "request_audit_p")
_FEEDBACK = "prediction_id, ts, label, source, reviewer"
_GUARD = threading.Lock()
# the database's labels given, changed or taken back since MIRROR was taken (rows on either side only)
_DIFF = f"""(SELECT {_FEEDBACK} FROM feedback EXCEPT ALL SELECT * FROM {MIRROR})
    UNION ALL (SELECT * FROM {MIRROR} EXCEPT ALL SELECT {_FEEDBACK} FROM feedback)"""


def mapped_sql(where: str) -> str:
    """The predictions of log_predictions that `where` selects, as compute_sql reads them (prediction_id, FIELDS)."""
    return f"(SELECT id AS prediction_id, {_ROW} FROM log_predictions WHERE {where})"


def compute_sql(scope: str, feedback: str, mapped: str) -> str:
    """The rows of the labelled requests among those `scope` selects (a condition on `request`), from the predictions
    of `mapped` (prediction_id and FIELDS), their labels from the relation `feedback`. A label's source and reviewer are
    those of the same feedback row as the label."""
    none = "'" + NONE_OF_THESE.replace("'", "''") + "'"
    kept = "FILTER (WHERE stage <> 'backtest')"  # a replay is no part of what production did
    return f"""
        WITH m AS (SELECT prediction_id, {", ".join(COLUMNS)} FROM {mapped} WHERE {scope}),
        given AS (
            SELECT f.prediction_id, f.ts, {{'label': f.label, 'source': f.source, 'reviewer': f.reviewer}} AS what,
                   f.source IN ('review', 'import') AS settles,
                   f.source = 'review' AND (f.label = m.predicted OR (f.label = {none} AND m.ood)) AS agrees
            FROM ({feedback}) f JOIN m USING (prediction_id)
        ),
        fb AS (SELECT prediction_id, arg_max(what, ts) AS what, max(ts) AS at, bool_or(settles) AS reviewed,
                      count_if(agrees) AS review_agreed
               FROM given GROUP BY prediction_id),
        own AS (SELECT m.*, fb.what.label AS own_label, fb.what.source AS own_source, fb.what.reviewer AS own_reviewer,
                       coalesce(fb.reviewed, FALSE) AS reviewed, coalesce(fb.review_agreed, 0) AS review_agreed,
                       fb.what AS own_what, fb.at AS own_at
                FROM m LEFT JOIN fb USING (prediction_id)),
        req AS (
            SELECT request, arg_max(own_what, own_at) {kept} AS what,
                   coalesce(bool_or(served IS NOT FALSE AND (ood OR referred)) {kept}, FALSE)
                       OR count(DISTINCT predicted) {kept} > 1 AS flagged,
                   bool_or(audit) {kept} AS request_audit, max(audit_p) {kept} AS request_audit_p,
                   count(own_label) AS labels
            FROM own GROUP BY request
        )
        SELECT own.prediction_id, {", ".join(f"own.{c}" for c in (*COLUMNS, *OWN))},
               req.what.label AS label, req.what.source AS label_source, req.what.reviewer AS reviewer,
               req.flagged, req.request_audit, req.request_audit_p
        FROM own JOIN req USING (request) WHERE req.labels > 0
    """


def load(ws: Workspace, con: duckdb.DuckDBPyConnection) -> str:
    """TABLE brought up to date with the log as ingested and the database's labels; returns its name."""
    del ws  # the connection's log (store.connect ingested it)
    with _GUARD:
        now = log_ingest.seq(con)
        try:
            done = con.execute("SELECT value FROM meta WHERE key = ?", [_STATE]).fetchone()
        except duckdb.CatalogException:
            return _empty(con)  # a database made before its tables
        if done is not None and int(done[0]) == now and not _labels_changed(con):
            return TABLE
        with store.within(con):
            _update(con, None if done is None else int(done[0]), now)
            con.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", [_STATE, str(now)])
    return TABLE


def _empty(con: duckdb.DuckDBPyConnection) -> str:
    con.execute(f"CREATE OR REPLACE TEMP VIEW {TABLE} AS {compute_sql('FALSE', 'SELECT * FROM feedback', mapped_sql('FALSE'))}")
    return TABLE


def _labels_changed(con: duckdb.DuckDBPyConnection) -> bool:
    try:
        return bool(con.execute(f"SELECT count(*) FROM ({_DIFF})").fetchone()[0])
    except duckdb.CatalogException:
        return True


def _update(con: duckdb.DuckDBPyConnection, done: int | None, now: int) -> None:
    """TABLE from what changed after ingest `done` (None: never built) up to `now`."""
    since = log_ingest.changed_since(con, done or 0)
    every = compute_sql("TRUE", "SELECT * FROM log_feedback", mapped_sql(
        "coalesce(request_id, id) IN (SELECT coalesce(request_id, id) FROM log_predictions "
        "WHERE id IN (SELECT prediction_id FROM log_feedback))"))  # fmt: skip
    exists = (
        con.execute(
            "SELECT count(*) FROM duckdb_tables() WHERE table_name IN (?, ?) AND NOT temporary", [TABLE, MIRROR]
        ).fetchone()[0]
        == 2
    )
    if done is None or since.whole or not exists:
        con.execute(f"CREATE OR REPLACE TABLE {TABLE} AS {every}")
        _mirror(con)
        return
    ids = _DIFF
    new_rows = f"SELECT id, coalesce(request_id, id) AS request FROM {log_ingest.ROWS['predictions']} WHERE _seq > {int(done)}"
    con.execute(
        f"""CREATE OR REPLACE TEMP TABLE labelled_ids AS
            SELECT prediction_id FROM ({ids})
            UNION SELECT prediction_id FROM {log_ingest.ROWS["feedback"]} WHERE _seq > {int(done)}"""
    )
    redone = sorted(since.redone)
    con.execute(
        f"""CREATE OR REPLACE TEMP TABLE labelled_touched AS
            SELECT request FROM {TABLE} WHERE prediction_id IN (SELECT prediction_id FROM labelled_ids)
            UNION SELECT request FROM ({new_rows}) n
                  WHERE n.id IN (SELECT prediction_id FROM log_feedback) OR n.request IN (SELECT request FROM {TABLE})
            UNION SELECT request FROM {TABLE} WHERE CAST(ts AS DATE) IN (SELECT unnest(?::DATE[]))""",
        [redone],
    )
    unknown = f"SELECT prediction_id FROM labelled_ids EXCEPT SELECT prediction_id FROM {TABLE}"
    if con.execute(f"SELECT count(*) FROM ({unknown})").fetchone()[0]:  # labels on predictions not in TABLE yet
        con.execute(
            f"""INSERT INTO labelled_touched SELECT DISTINCT coalesce(request_id, id) FROM log_predictions
                WHERE id IN ({unknown}) EXCEPT SELECT request FROM labelled_touched"""
        )
    if con.execute("SELECT count(*) FROM labelled_touched").fetchone()[0]:
        scope = "request IN (SELECT request FROM labelled_touched)"
        con.execute(f"DELETE FROM {TABLE} WHERE {scope}")
        rows = mapped_sql("coalesce(request_id, id) IN (SELECT request FROM labelled_touched)")
        con.execute(f"INSERT INTO {TABLE} {compute_sql(scope, 'SELECT * FROM log_feedback', rows)}")
    if con.execute(f"SELECT count(*) FROM ({ids})").fetchone()[0]:
        _mirror(con)


def _mirror(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(f"CREATE OR REPLACE TABLE {MIRROR} AS SELECT {_FEEDBACK} FROM feedback")
