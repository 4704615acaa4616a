"""The labelled requests' predictions with the labels that count for them, kept under cache/log-labels/ and brought up
to date by what changed since, for the figures from labels (accuracy; the Monitor's feedback per window).

Each figure needs, for every labelled prediction in view, its own latest label and its request's: the latest label
on any of the request's predictions (a replay's aside), with the request's flags (hard case, audit). Computing that
joins every label with the labels' map (label_map): a second per call at 700,000 labels. A request's rows change only
when one of its labels does or one of its predictions joins the map, so a call computes again only the requests with
- a prediction that came into the map since (a kept map file not read before, or one looked up by this call);
- a label in a feedback file not read before, or in the database's table after the last row seen.
Everything is computed again when something it was built on left (the map checked every label again after a
compaction or a damaged file, a feedback file left the view) or the table's earlier rows changed (a label taken
back). Kept as a base file and one file of the requests computed since (which replace theirs in the base), folded
into the base when that grows past a quarter of it. One process keeps at a time (the others compute for themselves
meanwhile).

A cache: anything under cache/ may be deleted at any time (the next call computes everything again).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb

from core.production import kept_files, label_map
from core.production.prediction_log import NONE_OF_THESE
from core.workspace import log_table
from core.workspace.paths import Workspace, write_atomic

TABLE = "labelled"  # the view `load` leaves: prediction_id, the map's COLUMNS, OWN and REQUEST
AS_LOG = f"(SELECT prediction_id AS id, request AS request_id, * EXCLUDE (prediction_id, request) FROM {TABLE})"
PREFIX = "labelled-v2-"  # kept files' names: raise the version when what they hold changes
FOLD = 0.25  # the share of the base's rows past which the requests computed since are folded into it
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
_LOADED = "labelled_loaded"  # what the connection's TABLE was made from (the log's files, the feedback table)


def compute_sql(scope: str, feedback: str, mapped: str = label_map.TABLE) -> str:
    """The rows of the labelled requests among those `scope` selects (a condition on `request`), from the predictions
    of `mapped` (label_map's columns), their labels from the relation `feedback`. A label's source and reviewer are
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


@dataclass
class _State:
    base: str | None = None
    delta: str | None = None
    map: list[str] = field(default_factory=list)  # the map's kept files the rows were computed from
    feedback: list[str] = field(default_factory=list)  # the feedback files read
    table: list[Any] = field(default_factory=list)  # the feedback table then: [rows, latest time]
    superseded: dict[str, float] = field(default_factory=dict)


def folder(ws: Workspace) -> Path:
    return label_map.folder(ws)


def _state_path(ws: Workspace) -> Path:
    return folder(ws) / f"{PREFIX}state.json"


def _read_state(ws: Workspace) -> _State:
    try:
        raw = json.loads(_state_path(ws).read_text())
        return _State(
            raw["base"], raw["delta"], list(raw["map"]), list(raw["feedback"]), list(raw["table"]),
            {str(k): float(v) for k, v in dict(raw["superseded"]).items()},
        )  # fmt: skip
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return _State()


def load(ws: Workspace, con: duckdb.DuckDBPyConnection) -> str:
    """Make TABLE in `con` (a view; label_map's too): every prediction of every request with a label, with its own
    latest label and source (NULL when it has none) and its request's REQUEST columns. Returns its name."""
    stamp = repr((log_table.stamp(ws), con.execute("SELECT count(*), max(ts) FROM feedback").fetchone()))
    try:  # loaded in this connection with the log and the labels as they are now: the same rows
        if con.execute(f"SELECT stamp FROM {_LOADED}").fetchone() == (stamp,):
            return TABLE
    except duckdb.CatalogException:
        pass
    with kept_files.holding(folder(ws), ".labelled.lock") as writer:
        _load(ws, con, writer)
    con.execute(f"CREATE OR REPLACE TEMP TABLE {_LOADED} AS SELECT ? AS stamp", [stamp])
    return TABLE


def _load(ws: Workspace, con: duckdb.DuckDBPyConnection, writer: bool) -> None:
    mapped = label_map.load(ws, con)
    root = log_table.root(ws, "feedback")
    files = {f.relative_to(root).as_posix(): f for f in log_table.readable(ws, "feedback")}
    feedback = log_table.relation_sql("feedback", "feedback", list(files.values()))
    state = _read_state(ws)
    current = {p.name for p in kept_files.current(folder(ws), PREFIX, state.superseded, writer)}
    table_now = con.execute("SELECT count(*), max(ts) FROM feedback").fetchone()
    seen_rows, seen_until = state.table or (0, "0001-01-01 00:00:00")
    same_table = con.execute("SELECT count(*) FROM feedback WHERE ts <= ?", [seen_until]).fetchone()[0] == seen_rows
    base = _readable(con, folder(ws), state.base, current)
    delta = _readable(con, folder(ws), state.delta, current)
    whole = (
        mapped.whole or base is None or (state.delta is not None and delta is None) or not same_table
        or not set(state.map) <= set(mapped.kept) or not set(state.feedback) <= set(files)
    )  # fmt: skip
    if whole:
        con.execute(f"CREATE OR REPLACE TEMP TABLE labelled_base AS {compute_sql('TRUE', feedback)}")
        con.execute("CREATE OR REPLACE TEMP TABLE labelled_delta AS SELECT * FROM labelled_base LIMIT 0")
        base_sql, changed = "labelled_base", True
    else:
        base_sql = f"read_parquet({log_table.sql_path(base)})"  # type: ignore[arg-type]
        changed = _update(ws, con, state, mapped, files, feedback, delta, seen_until)
    con.execute(
        f"CREATE OR REPLACE TEMP VIEW {TABLE} AS SELECT * FROM {base_sql} WHERE request NOT IN "
        "(SELECT request FROM labelled_delta) UNION ALL SELECT * FROM labelled_delta"
    )
    if writer and (not changed or _keep(ws, con, state, whole, base_sql)):
        state.map, state.feedback = list(mapped.kept), sorted(files)
        state.table = [int(table_now[0]), str(table_now[1])] if table_now[1] is not None else []
        try:
            write_atomic(_state_path(ws), json.dumps(state.__dict__).encode())
        except OSError:
            pass  # not kept: computed again next time


def _readable(con: duckdb.DuckDBPyConnection, where: Path, name: str | None, current: set[str]) -> Path | None:
    """The kept file `name` when it is there and can be read, else None."""
    if name is None or name not in current:
        return None
    path = where / name
    return path if kept_files.readable(con, path) else None


def _update(
    ws: Workspace,
    con: duckdb.DuckDBPyConnection,
    state: _State,
    mapped: label_map.Loaded,
    files: dict[str, Path],
    feedback: str,
    delta: Path | None,
    seen_until: str,
) -> bool:
    """labelled_delta in `con`: the kept delta with the requests that changed since computed again (a request's labels
    are only ever added to here: one taken back, or a file that left, makes everything computed again). False when
    none did."""
    parts = [label_map.FRESH, "SELECT prediction_id FROM feedback WHERE ts > CAST(? AS TIMESTAMP)"]
    new_map = [folder(ws) / name for name in mapped.kept if name not in state.map]
    new_feedback = [f for k, f in files.items() if k not in state.feedback]
    if new_map or new_feedback:
        parts.append(f"SELECT prediction_id FROM read_parquet([{', '.join(map(log_table.sql_path, new_map + new_feedback))}])")
    con.execute(f"CREATE OR REPLACE TEMP TABLE labelled_ids AS {' UNION ALL '.join(parts)}", [seen_until])
    con.execute(
        f"""CREATE OR REPLACE TEMP TABLE labelled_touched AS SELECT DISTINCT request FROM {label_map.TABLE}
            WHERE prediction_id IN (SELECT prediction_id FROM labelled_ids)"""
        if con.execute("SELECT count(*) FROM labelled_ids").fetchone()[0]
        else "CREATE OR REPLACE TEMP TABLE labelled_touched (request VARCHAR)"  # nothing new: the map is not read
    )
    touched = con.execute("SELECT count(*) FROM labelled_touched").fetchone()[0]
    con.execute(f"CREATE OR REPLACE TEMP TABLE labelled_delta AS {compute_sql('FALSE', feedback)}")
    if delta is not None:
        con.execute(
            f"INSERT INTO labelled_delta SELECT * FROM read_parquet({log_table.sql_path(delta)}) "
            "WHERE request NOT IN (SELECT request FROM labelled_touched)"
        )
    if touched:
        scope = "request IN (SELECT request FROM labelled_touched)"
        con.execute(f"INSERT INTO labelled_delta {compute_sql(scope, feedback)}")
    return touched > 0


def _keep(ws: Workspace, con: duckdb.DuckDBPyConnection, state: _State, whole: bool, base_sql: str) -> bool:
    """Keep what changed: the base when it was computed whole or the delta outgrew it (folded), else the delta;
    the files replaced are left a while for readers that listed them. False when it cannot be kept."""
    delta_rows = con.execute("SELECT count(*) FROM labelled_delta").fetchone()[0]
    base_rows = con.execute(f"SELECT count(*) FROM {base_sql}").fetchone()[0] if not whole else 0
    old = [n for n in (state.base, state.delta) if n]
    if whole or delta_rows > FOLD * base_rows:
        kept = kept_files.write(con, f"(SELECT * FROM {TABLE})", folder(ws), PREFIX)
        if kept is None:
            return False
        state.base, state.delta = kept.name, None
    else:
        kept = kept_files.write(con, "labelled_delta", folder(ws), PREFIX)
        if kept is None:
            return False
        old = [state.delta] if state.delta else []
        state.delta = kept.name
    now = time.time()
    state.superseded |= {name: now for name in old}
    return True
