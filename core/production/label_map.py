"""Which prediction every label is on: for each prediction id that has feedback, its request and image, kept under
cache/log-labels/ and extended only by the labels not looked up before.

Labels arrive at any time, for predictions of any day, and every figure from labels (the review queue's "already
labelled" and "already reviewed", accuracy) needs the request and the image of the labelled prediction. Looking
them up joins every label with the whole log: seconds over ten million rows, again on every page. A logged row
never changes once written, so what a lookup found stays true for as long as the file it was found in is in view.
Each call therefore looks up only:
- labels whose prediction was never looked up (searched day by day, newest first: a label is given soon after its
  prediction, most often; many at once are looked up in one pass);
- labels found in a file that left the view since (compaction folded it, `check` quarantined it): searched first on
  the day that file held;
- labels found nowhere before: searched only in the files that came into view since.
The database's table (where rows logged before the log became files live) is looked up each time: it is small.

A cache it is: anything under cache/ may be deleted at any time (the next call looks everything up again), and a
workspace where it cannot be written only looks up more each time.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb

from core.production import kept_files
from core.workspace import log_table
from core.workspace.paths import Workspace, write_atomic

TABLE = "label_map"  # the view `load` leaves in the connection: prediction_id and FIELDS
# the map under the log's column names (id, request_id, ...), for queries written over log_predictions
AS_LOG = f"(SELECT prediction_id AS id, request AS request_id, * EXCLUDE (prediction_id, request) FROM {TABLE})"
# what the map keeps of a labelled prediction (a logged row never changes): name -> (type, expression over the row)
FIELDS = {
    "request": ("VARCHAR", "coalesce(request_id, id)"), "sha256": ("VARCHAR", "sha256"), "ts": ("TIMESTAMP", "ts"),
    "source": ("VARCHAR", "source"), "model_version": ("VARCHAR", "model_version"),
    "stage": ("VARCHAR", "coalesce(stage, 'production')"), "served": ("BOOLEAN", "served"),
    "predicted": ("VARCHAR", "predicted"), "ood": ("BOOLEAN", "ood"), "referred": ("BOOLEAN", "coalesce(referred, FALSE)"),
    "audit": ("BOOLEAN", "coalesce(audit, FALSE)"), "audit_p": ("DOUBLE", "coalesce(audit_p, 0.0)"),
    "name": ("VARCHAR", "name"), "image_path": ("VARCHAR", "image_path"),
}  # fmt: skip
_TYPED = ", ".join(f"{k} {t}" for k, (t, _) in FIELDS.items())
_ROW = ", ".join(f"{e} AS {k}" for k, (_, e) in FIELDS.items())
_NAMES = ", ".join(FIELDS)
PREFIX = "map-v3-"  # kept files' names: raise the version when what they hold changes
BULK = 20_000  # labels to look up at once over every file, rather than day by day


def folder(ws: Workspace) -> Path:
    return ws.root / "cache" / "log-labels"


def _key(ws: Workspace, path: Path) -> str:
    """A log file as the map names it: its place under logs/ (names alone may repeat across partitions)."""
    return path.relative_to(log_table.root(ws, "predictions")).as_posix()


@dataclass(frozen=True)
class Loaded:
    """What `load` left in the connection: TABLE, the rows of the kept files named `kept` (those this call kept of
    what it looked up among them) and the rows FRESH selects (looked up by this call, or read from the database's
    table); `whole` when every label was checked again (a compaction, a damaged kept file): what was built on the map
    then needs building again too."""

    table: str
    kept: tuple[str, ...]
    whole: bool


FRESH = "SELECT prediction_id FROM label_table UNION ALL SELECT prediction_id FROM label_found"


def load(ws: Workspace, con: duckdb.DuckDBPyConnection) -> Loaded:
    """Make TABLE in `con` (a view): every labelled prediction in the log, and the other predictions of its request
    (a candidate's beside production's), each once, with FIELDS (its request, image, class, flags, ...). Only the
    labelled ones join log_feedback. Labels on predictions that are not in the log have no row. Labels taken back
    (undo) keep theirs: join with log_feedback for the labels there are now. One process at a time keeps what it
    found (the others look up for themselves meanwhile), so no id is kept twice."""
    with kept_files.holding(folder(ws), ".lock") as writer:
        return _load(ws, con, writer)


def _load(ws: Workspace, con: duckdb.DuckDBPyConnection, writer: bool) -> Loaded:
    files = {_key(ws, f): f for f in log_table.readable(ws, "predictions")}
    feedback = {f.relative_to(log_table.root(ws, "feedback")).as_posix(): f for f in log_table.readable(ws, "feedback")}
    state = _read_state(ws)
    kept = kept_files.current(folder(ws), PREFIX, state["superseded"], writer)
    gone = set(state["log"]) - set(files)  # files that left the view: what was found in them is looked up again
    # the database's table: rows are added with the time they are given (a label taken back is deleted); the rows
    # up to the last one seen are the same as then when they still count the same
    seen_count, seen_until = state["table"] or (0, "0001-01-01 00:00:00")
    table_now = con.execute("SELECT count(*), max(ts) FROM feedback").fetchone()
    same_table = con.execute("SELECT count(*) FROM feedback WHERE ts <= ?", [seen_until]).fetchone()[0] == seen_count
    listed_kept = len(kept)
    kept = _readable(con, kept, writer)  # a damaged kept file: what it held is looked up again, all of it
    whole = bool(gone) or not state["log"] or not same_table or len(kept) < listed_kept
    for table in ("label_found", "label_new"):
        con.execute(f"CREATE OR REPLACE TEMP TABLE {table} (prediction_id VARCHAR, {_TYPED}, file VARCHAR)")
    listed = ", ".join(log_table.sql_path(p) for p in kept)
    kept_sql = f"SELECT * FROM read_parquet([{listed}])" if kept else "SELECT * FROM label_new"
    if whole:  # the first call, or after a compaction: every label checked, what lost its file dropped
        _listed(con, "label_files", "file", list(files))
        con.execute(
            f"CREATE OR REPLACE TEMP TABLE label_kept AS SELECT DISTINCT ON (prediction_id) * FROM ({kept_sql}) "
            "WHERE file IN (SELECT file FROM label_files)"
        )
        con.execute("CREATE OR REPLACE TEMP TABLE label_asked AS SELECT DISTINCT prediction_id FROM log_feedback")
        kept_sql = "SELECT * FROM label_kept"
    else:  # only the labels in feedback files not seen before, and the table's rows after the last seen
        fresh = [f for k, f in feedback.items() if k not in state["feedback"]]
        parts = ["SELECT prediction_id FROM feedback WHERE ts > CAST(? AS TIMESTAMP)"]
        if fresh:
            parts.append(f"SELECT prediction_id FROM read_parquet([{', '.join(log_table.sql_path(f) for f in fresh)}])")
        union = " UNION ALL ".join(parts)
        con.execute(f"CREATE OR REPLACE TEMP TABLE label_asked AS SELECT DISTINCT prediction_id FROM ({union})", [seen_until])
    table_rows = con.execute("SELECT count(*) FROM predictions").fetchone()[0]  # rows logged before the files: few, or none
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE label_table AS SELECT id AS prediction_id, {_ROW} FROM predictions WHERE "
        + (
            "coalesce(request_id, id) IN (SELECT coalesce(request_id, id) FROM predictions "
            "WHERE id IN (SELECT prediction_id FROM log_feedback))"
            if table_rows
            else "FALSE"
        )
    )
    known = f"SELECT prediction_id FROM ({kept_sql}) WHERE prediction_id IN (SELECT prediction_id FROM label_asked)"
    con.execute(
        f"""CREATE OR REPLACE TEMP TABLE label_todo AS SELECT prediction_id FROM label_asked
            EXCEPT SELECT prediction_id FROM ({known}) EXCEPT SELECT prediction_id FROM label_table"""
    )
    con.execute(f"CREATE OR REPLACE TEMP VIEW label_known AS SELECT prediction_id FROM ({kept_sql})")
    misses = [] if whole else sorted(state["unfound"])  # found in no file before: looked for in new files only
    _listed(con, "label_misses", "prediction_id", misses)
    new_files = [f for k, f in files.items() if k not in state["log"]]
    _search(ws, con, "SELECT prediction_id FROM label_misses", new_files, set())
    days = {log_table.day_of(Path(k)) for k in gone} - {None}
    todo = "SELECT prediction_id FROM label_todo EXCEPT SELECT prediction_id FROM label_found"
    _search(ws, con, todo, list(files.values()), days)  # type: ignore[arg-type]
    found = None
    if writer and con.execute("SELECT count(*) FROM label_found").fetchone()[0]:
        found = kept_files.write(con, "label_found", folder(ws), PREFIX)
    missing = con.execute(
        "SELECT prediction_id FROM (SELECT prediction_id FROM label_todo UNION SELECT prediction_id FROM label_misses) "
        "EXCEPT SELECT prediction_id FROM label_found"
    ).fetchall()
    names = tuple(p.name for p in kept)
    if whole:  # the view holds label_kept: kept as one file (the kept lookups, less what lost its file)
        folded = kept_files.write(con, "label_kept", folder(ws), PREFIX) if writer and kept else None
        names = (folded.name,) if folded else ()
        if folded:  # the files it replaces are left a while for readers that listed them
            now = time.time()
            state["superseded"] = {**state["superseded"], **{p.name: now for p in kept}}
    table = [int(table_now[0]), str(table_now[1])] if table_now[1] is not None else []
    state |= {"log": sorted(files), "feedback": sorted(feedback), "unfound": sorted(r[0] for r in missing), "table": table}
    if writer:
        _write_state(ws, state)
    parts = (kept_sql, "SELECT * FROM label_table", "SELECT * FROM label_found")
    union = " UNION ALL ".join(f"SELECT prediction_id, {_NAMES} FROM ({sql})" for sql in parts)
    con.execute(f"CREATE OR REPLACE TEMP VIEW {TABLE} AS {union}")
    return Loaded(TABLE, names + ((found.name,) if found else ()), whole)


def _listed(con: duckdb.DuckDBPyConnection, table: str, column: str, values: list[str]) -> None:
    """A temporary table of one VARCHAR column holding `values`, in one statement (executemany takes minutes for
    hundreds of thousands: labels whose predictions are nowhere can be that many)."""
    con.execute(f"CREATE OR REPLACE TEMP TABLE {table} AS SELECT unnest(?::VARCHAR[]) AS {column}", [values])


def _readable(con: duckdb.DuckDBPyConnection, kept: list[Path], writer: bool) -> list[Path]:
    """The kept files that can be read; one that cannot is left out (and removed by the process that keeps lookups:
    it is cache, looked up again)."""
    if not kept or kept_files.readable(con, *kept):
        return kept
    good = [path for path in kept if kept_files.readable(con, path)]
    if writer:
        for path in set(kept) - set(good):
            path.unlink(missing_ok=True)
    return good


def _search(ws: Workspace, con: duckdb.DuckDBPyConnection, ids_sql: str, files: list[Path], first: set[str]) -> int:
    """Look up the ids `ids_sql` selects in `files` (the days in `first` first, then newest day first; all at once
    when there are many); what is found is added to label_found. Returns how many were found."""
    con.execute(f"CREATE OR REPLACE TEMP TABLE label_search AS {ids_sql}")
    left = con.execute("SELECT count(*) FROM label_search").fetchone()[0]
    if not left or not files:
        return 0
    by_day: dict[str, list[Path]] = {}
    for f in files:
        by_day.setdefault(log_table.day_of(f) or "", []).append(f)
    order = sorted(d for d in by_day if d in first) + sorted((d for d in by_day if d not in first), reverse=True)
    batches = [files] if left > BULK else [by_day[d] for d in order]
    found = 0
    root = log_table.root(ws, "predictions")
    for batch in batches:
        listed = ", ".join(log_table.sql_path(f) for f in batch)
        added = con.execute(
            f"""INSERT INTO label_found
                SELECT id, {_ROW}, substr(filename, {len(str(root)) + 2})
                FROM read_parquet([{listed}], filename = true) WHERE id IN (SELECT prediction_id FROM label_search)"""
        ).fetchone()[0]
        if added:
            found += added
            con.execute("DELETE FROM label_search WHERE prediction_id IN (SELECT prediction_id FROM label_found)")
            left -= added
            # the other predictions of their requests (a candidate's beside production's: logged together, in the
            # same files), so that a request's label counts for each of them (accuracy)
            con.execute(
                f"""INSERT INTO label_found
                    SELECT id, {_ROW}, substr(filename, {len(str(root)) + 2})
                    FROM read_parquet([{listed}], filename = true)
                    WHERE request_id IN (SELECT request FROM label_found)
                      AND id NOT IN (SELECT prediction_id FROM label_found)
                      AND id NOT IN (SELECT prediction_id FROM label_known)"""
            )
        if left <= 0:
            break
    return found


def _state(ws: Workspace) -> Path:
    return folder(ws) / f"{PREFIX}state.json"


def _read_state(ws: Workspace) -> dict[str, Any]:
    """What the kept lookups cover: the log files in view and the feedback files read when they were last brought
    up to date, the feedback table's rows then (how many, the latest time), the labelled ids found in none of those
    log files, and the kept files folded into another (with when)."""
    try:
        state = json.loads(_state(ws).read_text())
        out: dict[str, Any] = {k: list(state[k]) for k in ("log", "feedback", "unfound", "table")}
        return out | {"superseded": {str(k): float(v) for k, v in dict(state["superseded"]).items()}}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {"log": [], "feedback": [], "unfound": [], "table": [], "superseded": {}}


def _write_state(ws: Workspace, state: dict[str, Any]) -> None:
    try:
        _state(ws).parent.mkdir(parents=True, exist_ok=True)
        write_atomic(_state(ws), json.dumps(state).encode())
    except OSError:
        return
