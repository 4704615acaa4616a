"""The Monitor's figures per window, kept per group of days for as long as the rows they come from stay the same.

A time window (hour, day, week) takes its rows from the log's files of its days (a file holds the rows of the day
its partition names: every writer splits its rows by day, and compaction folds one day's files) and from the
database's table. So what a query finds for the windows of one group of days (the day, for hour and day windows;
the week, for week windows) depends only on that group's files (their names and sizes: a file never changes once
named), the table's rows, the filter and this code. Kept under cache/log-windows/ by that key, it is computed again
only when one of them changes: a new file on one of those days, a compaction, rows in the table. The group that holds
today (UTC) is computed each time and not kept (its files arrive every second), as are blocks of N predictions, which
span days. Feedback is never part of what is kept: labels arrive at any time, for any window (queries joins them).

A cache it is: anything under cache/ may be deleted at any time, and one that cannot be written (a read-only
workspace) only means the figures are computed each time.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import duckdb
import pandas as pd

from core.workspace import log_table, store
from core.workspace.paths import Workspace

VERSION = 1  # of what is kept: raise it when a query's columns or meaning change
GROUP_VIEW = "log_window_group"  # the relation a query reads for one group of days
Query = Callable[[str], tuple[str, list[object]]]  # the relation's name -> a SELECT over it, and its parameters


def folder(ws: Workspace) -> Path:
    return ws.root / "cache" / "log-windows"


@dataclass(frozen=True)
class Group:
    start: date
    end: date  # exclusive
    files: tuple[Path, ...]
    inputs: tuple[object, ...]  # what its figures depend on besides the query: file names and sizes


def _start(day: date, window: str) -> date:
    return day - timedelta(days=day.weekday()) if window == "week" else day  # weeks start on Monday, as date_trunc's


def groups(ws: Workspace, window: str, con: duckdb.DuckDBPyConnection) -> list[Group] | None:
    """The groups of days the log's rows fall in, oldest first; None when a file's day cannot be told (then every
    query runs over the whole log)."""
    by_day: dict[date, list[Path]] = {}
    for f in log_table.readable(ws, "predictions"):
        day = log_table.day_of(f)
        if day is None:
            return None
        by_day.setdefault(date.fromisoformat(day), []).append(f)
    table = con.execute("SELECT count(*), max(ts) FROM predictions").fetchone()
    days = set(by_day)
    if table[0]:
        days |= {r[0] for r in con.execute("SELECT DISTINCT CAST(ts AS DATE) FROM predictions").fetchall()}
    found: dict[date, list[date]] = {}
    for day in sorted(days):
        found.setdefault(_start(day, window), []).append(day)
    span = timedelta(days=7 if window == "week" else 1)
    out = []
    for start, members in sorted(found.items()):
        files = tuple(f for d in members for f in by_day.get(d, ()))
        sizes = tuple((f.name, _size(f)) for f in files)
        out.append(Group(start, start + span, files, (sizes, tuple(map(str, table)))))
    return out


def _size(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except OSError:
        return None


def _key(*parts: object) -> str:
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:16]


def _literal(day: date) -> str:
    return f"TIMESTAMP '{day.isoformat()} 00:00:00'"


def grouped(
    ws: Workspace, con: duckdb.DuckDBPyConnection, window: str, what: str, query: Query, order: list[str], key: object
) -> pd.DataFrame:
    """query's rows over the whole log, found group by group (kept where the group's inputs are unchanged); ordered
    by `order`. `what` names the query and `key` says everything else its rows depend on (the filter)."""
    found = groups(ws, window, con) if window in ("hour", "day", "week") else None
    if found is None:
        sql, params = query("log_predictions")
        return con.execute(sql, params).df()
    today = store.now().date()
    kept = folder(ws)
    asked = _key(VERSION, what, window, key)
    frames: list[pd.DataFrame] = []
    read: list[tuple[Group, Path]] = []
    for g in found:
        path = kept / f"{what}-{window}-{g.start.isoformat()}-{asked}-{_key(g.inputs)}.parquet"
        if path.exists():
            read.append((g, path))
            continue
        sql, params = _over(con, g, query)
        if g.end > today or not _keep(con, sql, params, path):
            frames.append(con.execute(sql, params).df())
            continue
        read.append((g, path))
    if read:
        try:
            frames.insert(0, con.execute("SELECT * FROM read_parquet(?)", [[str(p) for _, p in read]]).df())
        except duckdb.Error:  # one was replaced (another process kept newer rows) or damaged: each on its own
            for g, path in read:
                try:
                    frames.append(con.execute("SELECT * FROM read_parquet(?)", [str(path)]).df())
                except duckdb.Error:
                    sql, params = _over(con, g, query)
                    _keep(con, sql, params, path)  # written again over a damaged one
                    frames.append(con.execute(sql, params).df())
    frames = [f for f in frames if len(f)]
    if not frames:
        sql, params = query("log_predictions")
        return con.execute(f"SELECT * FROM ({sql}) LIMIT 0", params).df()
    out = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    return out.sort_values(order, kind="stable").reset_index(drop=True)


def relation(ws: Workspace, con: duckdb.DuckDBPyConnection, window: str, what: str, query: Query, key: object, name: str) -> str:
    """query's rows over the whole log as a temporary view `name` of this connection, found group by group as
    `grouped` finds them (kept where the group's inputs are unchanged), for rows too many to bring into Python: the
    view reads the kept files where it is queried (only the columns asked for), the other groups' rows from a
    temporary table. Returns `name`. A query over it can fail with duckdb.IOException when another process replaced
    a kept file meanwhile (a late file on an old day): make the view again and ask again."""
    live = f"{name}_live"
    found = groups(ws, window, con) if window in ("hour", "day", "week") else None
    if found is None:
        sql, params = query("log_predictions")
        con.execute(f"CREATE OR REPLACE TEMP TABLE {live} AS {sql}", params)
        con.execute(f"CREATE OR REPLACE TEMP VIEW {name} AS SELECT * FROM {live}")
        return name
    today = store.now().date()
    kept = folder(ws)
    asked = _key(VERSION, what, window, key)
    paths: list[tuple[Group, Path]] = []
    made = False
    for g in found:
        path = kept / f"{what}-{window}-{g.start.isoformat()}-{asked}-{_key(g.inputs)}.parquet"
        if not path.exists():
            sql, params = _over(con, g, query)
            if g.end > today or not _keep(con, sql, params, path):
                verb = f"INSERT INTO {live}" if made else f"CREATE OR REPLACE TEMP TABLE {live} AS"
                con.execute(f"{verb} {sql}", params)
                made = True
                continue
        paths.append((g, path))
    if not made:
        sql, params = query("log_predictions")
        con.execute(f"CREATE OR REPLACE TEMP TABLE {live} AS SELECT * FROM ({sql}) LIMIT 0", params)
    if paths:
        try:  # every footer read: a damaged file is found here, not halfway through a page's query
            con.execute(f"SELECT count(*) FROM read_parquet([{', '.join(log_table.sql_path(p) for _, p in paths)}])")
        except duckdb.Error:
            for g, path in paths:
                try:
                    con.execute("SELECT count(*) FROM read_parquet(?)", [str(path)])
                except duckdb.Error:
                    sql, params = _over(con, g, query)
                    if not _keep(con, sql, params, path):  # written again over a damaged one, else read now
                        path.unlink(missing_ok=True)
                        con.execute(f"INSERT INTO {live} {sql}", params)
            paths = [(g, p) for g, p in paths if p.exists()]
    sources = [f"SELECT * FROM read_parquet([{', '.join(log_table.sql_path(p) for _, p in paths)}])"] if paths else []
    con.execute(f"CREATE OR REPLACE TEMP VIEW {name} AS {' UNION ALL BY NAME '.join([*sources, f'SELECT * FROM {live}'])}")
    return name


def _over(con: duckdb.DuckDBPyConnection, g: Group, query: Query) -> tuple[str, list[object]]:
    """query over the rows of one group of days (its files and the table's rows on those days)."""
    where = f"ts >= {_literal(g.start)} AND ts < {_literal(g.end)}"
    group_rows = log_table.relation_sql("predictions", "predictions", list(g.files), where)
    con.execute(f"CREATE OR REPLACE TEMP VIEW {GROUP_VIEW} AS {group_rows}")
    return query(GROUP_VIEW)


def _keep(con: duckdb.DuckDBPyConnection, sql: str, params: list[object], path: Path) -> bool:
    """Write the query's rows to path (a hidden name, then renamed) and drop what was kept for the same group and
    query from other inputs; False when it cannot be written (then the rows are computed without keeping them)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        con.execute(f"COPY ({sql}) TO {log_table.sql_path(tmp)} (FORMAT parquet)", params)
        os.replace(tmp, path)
    except (duckdb.Error, OSError):
        return False
    stem = path.name.rsplit("-", 1)[0]
    for old in path.parent.glob(f"{stem}-*.parquet"):
        if old != path:
            old.unlink(missing_ok=True)
    return True
