"""Figures from the log kept as tables of the database, one group of days at a time, brought up to date from what each
ingest changed (log_ingest.log_days: the ingest that last changed each day).

A time window (hour, day, week) takes its rows from its days alone, so a query's rows for one group of days (the day,
for hour and day windows; the week, for week windows) stay right until an ingest changes one of those days. Each query
is kept in its own table, named by a digest of the query's text and parameters over the group's rows (an edited query
is another table: no version tag to forget), with the ingest each group was computed at (log_figures). A call
computes again only the groups an ingest changed since; a group whose rows are all gone is dropped. Blocks of N
predictions span days: they are computed over the whole log each time. Tables not asked for in a week are dropped.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import threading
from collections.abc import Callable, Iterable
from datetime import date, datetime, timedelta
from typing import Any

import duckdb
import numpy as np
import pandas as pd

from core.workspace import log_ingest, store
from core.workspace.paths import Workspace

GROUP_VIEW = "log_window_group"  # the relation a query reads for one group of days
REGISTRY = "log_figures"  # key, group, the ingest it was computed at, when it was last asked for
UNUSED = timedelta(days=7)  # a kept query not asked for this long is dropped
TOUCH = timedelta(hours=1)  # how often a query's last use is written down
Query = Callable[[str], tuple[str, list[object]]]  # the relation's name -> a SELECT over it, and its parameters
_GUARD = threading.RLock()


def _start(day: date, window: str) -> date:
    return day - timedelta(days=day.weekday()) if window == "week" else day  # weeks start on Monday, as date_trunc's


def _key(what: str, window: str, query: Query) -> str:
    sql, params = query(GROUP_VIEW)
    return hashlib.sha256(repr((what, window, " ".join(sql.split()), params)).encode()).hexdigest()[:20]


def _over(con: duckdb.DuckDBPyConnection, start: date, end: date, query: Query) -> tuple[str, list[object]]:
    con.execute(
        f"CREATE OR REPLACE TEMP VIEW {GROUP_VIEW} AS SELECT * FROM log_predictions "
        f"WHERE ts >= TIMESTAMP '{start.isoformat()}' AND ts < TIMESTAMP '{end.isoformat()}'"
    )
    return query(GROUP_VIEW)


def kept(con: duckdb.DuckDBPyConnection, window: str, what: str, query: Query) -> str:
    """The table holding `query`'s rows over every group of days of the log, brought up to date; returns its name."""
    key = _key(what, window, query)
    table = f"log_fig_{key}"
    with _GUARD:
        try:
            kept_at = con.execute(f"SELECT grp, seq, used FROM {REGISTRY} WHERE key = ?", [key]).fetchall()
        except duckdb.CatalogException:
            con.execute(f"CREATE TABLE IF NOT EXISTS {REGISTRY} (key VARCHAR, grp DATE, seq BIGINT, used TIMESTAMP)")
            kept_at = []
        days = con.execute(f"SELECT day, seq FROM {log_ingest.DAYS} WHERE kind = 'predictions'").fetchall()
        groups: dict[date, int] = {}
        for day, seq in days:
            g = _start(day, window)
            groups[g] = max(groups.get(g, 0), int(seq))
        have = {g: int(seq) for g, seq, _ in kept_at}
        exists = con.execute("SELECT count(*) FROM duckdb_tables() WHERE table_name = ? AND NOT temporary", [table]).fetchone()[0]
        stale = sorted(g for g, s in groups.items() if not exists or g not in have or have[g] < s)
        gone = [g for g in have if g not in groups]
        asked = store.now()
        if exists and not stale and not gone and all(u is not None and asked - u < TOUCH for _, _, u in kept_at):
            return table  # up to date, and marked as asked for lately: nothing to write
        now = log_ingest.seq(con)
        with store.within(con):
            if not exists:
                sql, params = _over(con, date(1, 1, 1), date(1, 1, 2), query)
                con.execute(f"CREATE TABLE {table} AS SELECT *, CAST(NULL AS DATE) AS _grp FROM ({sql}) LIMIT 0", params)
                con.execute(f"DELETE FROM {REGISTRY} WHERE key = ?", [key])
            span = timedelta(days=7 if window == "week" else 1)
            for g in [*stale, *gone]:
                con.execute(f"DELETE FROM {table} WHERE _grp = ?", [g])
                con.execute(f"DELETE FROM {REGISTRY} WHERE key = ? AND grp = ?", [key, g])
            for g in stale:
                sql, params = _over(con, g, g + span, query)
                con.execute(f"INSERT INTO {table} SELECT *, DATE '{g.isoformat()}' FROM ({sql})", params)
                con.execute(f"INSERT INTO {REGISTRY} VALUES (?, ?, ?, NULL)", [key, g, now])
            _touch(con, key, asked)
    return table


def _touch(con: duckdb.DuckDBPyConnection, key: str, at: datetime) -> None:
    """Mark the query asked for at `at`; drop the kept queries not asked for in UNUSED."""
    con.execute(f"UPDATE {REGISTRY} SET used = ? WHERE key = ?", [at, key])
    old = [r[0] for r in con.execute(f"SELECT DISTINCT key FROM {REGISTRY} WHERE used < ?", [at - UNUSED]).fetchall()]
    for k in old:
        con.execute(f"DROP TABLE IF EXISTS log_fig_{k}")
        con.execute(f"DELETE FROM {REGISTRY} WHERE key = ?", [k])


def grouped(
    ws: Workspace, con: duckdb.DuckDBPyConnection, window: str, what: str, query: Query, order: list[str]
) -> pd.DataFrame:
    """query's rows over the whole log (kept per group of days for time windows), ordered by `order`. `what` names it."""
    del ws  # the connection's log
    if window not in ("hour", "day", "week"):
        sql, params = query("log_predictions")
        return con.execute(sql, params).df()
    table = kept(con, window, what, query)
    out = con.execute(f"SELECT * EXCLUDE (_grp) FROM {table} ORDER BY _grp").df()
    return out.sort_values(order, kind="stable").reset_index(drop=True)


def relation(ws: Workspace, con: duckdb.DuckDBPyConnection, window: str, what: str, query: Query, name: str) -> str:
    """query's rows over the whole log as a temporary view `name` of this connection (kept per group of days), for
    rows too many to bring into Python. Returns `name`."""
    del ws
    table = kept(con, window, what, query)
    con.execute(f"CREATE OR REPLACE TEMP VIEW {name} AS SELECT * EXCLUDE (_grp) FROM {table}")
    return name


# --- results computed in Python from the log's figures (a window's drift tests), kept by what they came from -------

RESULTS = "log_results"  # report, item (a window), key (a digest of its inputs), found (JSON)


def fingerprint(*arrays: Any) -> str:
    """A digest of arrays and frames (a reference's), as the key of what was computed from them."""
    digest = hashlib.sha256()
    for a in arrays:
        if isinstance(a, pd.DataFrame):
            digest.update(repr(list(a.columns)).encode())
        values = pd.util.hash_pandas_object(a).to_numpy() if isinstance(a, pd.DataFrame) else np.asarray(a)
        digest.update(repr((values.shape, values.dtype.str)).encode())
        digest.update(np.ascontiguousarray(values).tobytes() if values.dtype != object else repr(values.tolist()).encode())
    return digest.hexdigest()


def inputs_key(code: str, reference: str, counts: Iterable[object], ids: Iterable[str]) -> str:
    """The key of one window's result: the code that computes it (a digest of its source), the reference's
    fingerprint, the window's counts and its sample's ids in their order (the bootstraps draw by position)."""
    return hashlib.sha256(repr((code, reference, tuple(counts), tuple(map(str, ids)))).encode()).hexdigest()


def source_digest(*objects: Any) -> str:
    """A digest of the source of functions and modules: what a kept result computed by them is keyed by (an edited
    test is computed again; no version tag to raise by hand)."""
    return hashlib.sha256("".join(inspect.getsource(o) for o in objects).encode()).hexdigest()[:16]


class Results:
    """The kept results of one report (its filter and reference): get and put per item, then save."""

    def __init__(self, ws: Workspace, *name: object) -> None:
        self.ws = ws
        self.report = hashlib.sha256(repr(name).encode()).hexdigest()[:16]
        self.entries: dict[str, tuple[str, dict[str, Any]]] = {}
        with store.connect(ws) as con:
            con.execute(f"CREATE TABLE IF NOT EXISTS {RESULTS} (report VARCHAR, item VARCHAR, key VARCHAR, found JSON)")
            for item, key, found in con.execute(
                f"SELECT item, key, found FROM {RESULTS} WHERE report = ?", [self.report]
            ).fetchall():
                self.entries[item] = (key, json.loads(found))
        self.used: set[str] = set()
        self.changed: dict[str, tuple[str, dict[str, Any]]] = {}

    def get(self, item: str, key: str) -> dict[str, Any] | None:
        entry = self.entries.get(item)
        if entry is not None and entry[0] == key:
            self.used.add(item)
            return dict(entry[1])
        return None

    def put(self, item: str, key: str, found: dict[str, Any]) -> None:
        self.entries[item] = self.changed[item] = (key, found)
        self.used.add(item)

    def save(self) -> None:
        """Write what changed, keeping only the items this report used (a window gone from the log is dropped)."""
        unused = set(self.entries) - self.used
        if not self.changed and not unused:
            return
        with store.connect(self.ws) as con:
            gone = sorted(unused | set(self.changed))
            con.execute(f"DELETE FROM {RESULTS} WHERE report = ? AND item IN (SELECT unnest(?::VARCHAR[]))", [self.report, gone])
            for item, (key, found) in self.changed.items():
                con.execute(f"INSERT INTO {RESULTS} VALUES (?, ?, ?, ?)", [self.report, item, key, json.dumps(found)])
