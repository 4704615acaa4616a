"""The log's Delta tables folded into the workspace database, incrementally: one watermark per kind, the table's version.

    log_rows_<kind>   the Delta table's rows as of the version ingested (the log's columns, replica, _seq)
    log_ingests       one row per ingest: its number (seq, what every kept figure is keyed by), kind, version, the
                      days whose rows changed, and whether everything was read again
    log_days          per kind and day: rows, and the ingest that last changed them

Each ingest reads the commits after the watermark (`_delta_log/<version>.json`): the files they added as new data
are read in; an optimize's files (no new data) are not. A day is read again whole when a commit removed data from it
(check --repair's removal of a lost file) or when a file it added is no longer in the table (folded by an optimize, and
maybe vacuumed, before it was read). Everything is read again when the table is not the one ingested (made again),
the watermark's commits are no longer on disk, or nothing was ingested yet. The rows and the watermark are committed
in one transaction of the database: an ingest cut short leaves the previous one, never half of one.

A file the table names that cannot be read (gone or another size than its commit says: check names it) is left out
and listed in log_ingest_pending; the next ingest reads it once it is whole again, or drops it once the table no
longer names it (check --repair removed it: its day is read again then).

The ingest runs in every read-write connection (store.connect), before any reader asks; readers query the views
log_predictions and log_feedback (the analyst's labels in the database's feedback table and the served feedback).
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import duckdb

from core.workspace import failpoints, log_table
from core.workspace.paths import Workspace

ROWS = {kind: f"log_rows_{kind}" for kind in log_table.COLUMNS}
JOURNAL = "log_ingests"
DAYS = "log_days"
PENDING = "log_ingest_pending"
_META = "log_ingested_{kind}"  # meta key: {"version": ..., "birth": [...]}
_GUARD = threading.Lock()  # the threads of one process ingest one at a time (processes: one holds the database)


def _schema(con: duckdb.DuckDBPyConnection) -> None:
    for kind, table in ROWS.items():
        cols = ", ".join(f"{c} {t}" for c, t in log_table.COLUMNS[kind].items())
        con.execute(f"CREATE TABLE IF NOT EXISTS {table} ({cols}, replica VARCHAR, _seq BIGINT)")
    con.execute(
        f"""CREATE TABLE IF NOT EXISTS {JOURNAL} (seq BIGINT PRIMARY KEY, kind VARCHAR, version BIGINT, whole BOOLEAN,
            days DATE[], redone DATE[], files INTEGER, rows BIGINT, ingested_at TIMESTAMP DEFAULT current_timestamp)"""
    )
    con.execute(f"CREATE TABLE IF NOT EXISTS {DAYS} (kind VARCHAR, day DATE, rows BIGINT, seq BIGINT, PRIMARY KEY (kind, day))")
    con.execute(f"CREATE TABLE IF NOT EXISTS {PENDING} (kind VARCHAR, path VARCHAR, day DATE, stat VARCHAR)")


@dataclass
class Plan:
    """What one ingest of a kind reads: every file (whole), or the new files and the days read again."""

    version: int
    whole: bool
    files: list[tuple[str, str | None]] = field(default_factory=list)  # (path under the table, its day)
    days: set[str] = field(default_factory=set)  # days whose rows are deleted first and read again from the table


@dataclass(frozen=True)
class Ingested:
    kind: str
    seq: int
    version: int
    whole: bool
    days: tuple[str, ...]
    files: int
    rows: int


def _day(path: str, values: dict[str, Any] | None) -> str | None:
    if values and values.get("date"):
        return str(values["date"])
    return log_table.day_of(Path(path))


def _plan(ws: Workspace, kind: str, done: dict[str, Any] | None, version: int, listed: dict[str, str | None]) -> Plan:
    """The files and days to read to bring the ingested rows from `done` (the watermark) to `version`."""
    birth = log_table._birth(ws, kind)
    whole = Plan(version, True, sorted(listed.items()))
    if not done or list(done.get("birth") or []) != list(birth or []) or int(done["version"]) > version:
        return whole
    plan = Plan(version, False)
    added: list[tuple[str, str | None]] = []
    for v in range(int(done["version"]) + 1, version + 1):
        try:
            actions = log_table.commit_actions(ws, kind, v)
        except (OSError, ValueError):
            return whole  # the commit is no longer on disk (cleaned up after a checkpoint): read everything
        for action in actions:
            for verb in ("add", "remove"):
                entry = action.get(verb)
                if not isinstance(entry, dict) or not entry.get("dataChange", True):
                    continue  # an optimize's files: the same rows
                path = unquote(str(entry["path"]))
                day = _day(path, entry.get("partitionValues"))
                if verb == "add":
                    added.append((path, day))
                else:
                    plan.days.add(day or "")
    for path, day in added:
        if path not in listed:
            plan.days.add(day or "")  # folded (or removed) before it was read: its day is read again
    if "" in plan.days:
        return whole
    plan.files = [(p, d) for p, d in added if d not in plan.days and p in listed]
    plan.files += sorted((p, d) for p, d in listed.items() if d in plan.days)
    return plan


def seq(con: duckdb.DuckDBPyConnection) -> int:
    """The latest ingest's number (0: none yet)."""
    try:
        return int(con.execute(f"SELECT coalesce(max(seq), 0) FROM {JOURNAL}").fetchone()[0])
    except duckdb.CatalogException:
        return 0


def refresh(con: duckdb.DuckDBPyConnection, ws: Workspace) -> list[Ingested]:
    """Fold what the log's tables committed since the last ingest into the database; returns what each kind read."""
    with _GUARD:
        try:
            con.execute(f"SELECT 1 FROM {PENDING} LIMIT 0")
        except duckdb.CatalogException:
            _schema(con)
        return [found for kind in log_table.COLUMNS if (found := _refresh(con, ws, kind)) is not None]


def _refresh(con: duckdb.DuckDBPyConnection, ws: Workspace, kind: str) -> Ingested | None:
    row = con.execute("SELECT value FROM meta WHERE key = ?", [_META.format(kind=kind)]).fetchone()
    done = json.loads(row[0]) if row else None
    pending = con.execute(f"SELECT path, CAST(day AS VARCHAR), stat FROM {PENDING} WHERE kind = ?", [kind]).fetchall()
    retry = any(log_table.file_stat(ws, kind, p) != was for p, _, was in pending)  # changed on disk since: read again
    with log_table.using(ws, kind) as dt:
        version = -1 if dt is None else int(dt.version())
        if (version < 0 and not done) or (done and int(done["version"]) == version and not retry):
            return None  # nothing new (the common case: no file list read)
        named = {f.rel: f for f in log_table.files_of(ws, kind, dt)} if dt is not None else {}
    listed = {rel: f.day for rel, f in named.items()}
    plan = _plan(ws, kind, done, version, listed)
    if not plan.whole:  # the files left out before: read now if whole again, dropped if the table no longer names them
        plan.files += [(p, d) for p, d, _ in pending if p in listed and d not in plan.days]
    files = list(dict.fromkeys(plan.files))
    good = [(p, d) for p, d in files if log_table.whole(ws, named[p])]
    try:
        return _write(con, ws, kind, plan, good, [f for f in files if f not in good])
    except duckdb.Error as exc:
        if not good:
            raise exc
    # a file of the right size that cannot be read (damaged inside): each one tried alone, the bad ones left out
    bad = [f for f in good if not _reads(con, log_table.read_path(con, ws, kind, f[0]))]
    return _write(con, ws, kind, plan, [f for f in good if f not in bad], [f for f in files if f not in good] + bad)


def _reads(con: duckdb.DuckDBPyConnection, path: str) -> bool:
    try:
        con.execute(f"CREATE OR REPLACE TEMP TABLE log_ingest_probe AS SELECT * FROM read_parquet({log_table.sql_path(path)})")
    except duckdb.Error:
        return False
    finally:
        con.execute("DROP TABLE IF EXISTS log_ingest_probe")
    return True


def _write(
    con: duckdb.DuckDBPyConnection,
    ws: Workspace,
    kind: str,
    plan: Plan,
    readable: list[tuple[str, str | None]],
    missing: list[tuple[str, str | None]],
) -> Ingested:
    """The plan's rows in, the watermark moved, in one transaction."""
    table = ROWS[kind]
    n = seq(con) + 1
    con.execute("BEGIN TRANSACTION")
    try:
        if plan.whole:
            con.execute(f"DELETE FROM {table}")
        elif plan.days:
            con.execute(f"DELETE FROM {table} WHERE CAST(ts AS DATE) IN (SELECT unnest(?::DATE[]))", [sorted(plan.days)])
        rows = 0
        if readable:
            cols = ", ".join(log_table.COLUMNS[kind])
            listed_sql = ", ".join(log_table.sql_path(log_table.read_path(con, ws, kind, p)) for p, _ in readable)
            rows = con.execute(
                f"INSERT INTO {table} SELECT {cols}, replica, {n} FROM read_parquet([{listed_sql}], hive_partitioning = false)"
            ).fetchone()[0]
        con.execute(f"DELETE FROM {PENDING} WHERE kind = ?", [kind])
        for p, d in missing:
            con.execute(f"INSERT INTO {PENDING} VALUES (?, ?, ?, ?)", [kind, p, d, log_table.file_stat(ws, kind, p)])
        changed = sorted({d for _, d in readable if d} | plan.days)
        _count_days(con, kind, n, plan.whole, changed)
        con.execute(
            f"INSERT INTO {JOURNAL} (seq, kind, version, whole, days, redone, files, rows) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [n, kind, plan.version, plan.whole, changed, sorted(plan.days), len(readable), rows],
        )
        birth = log_table._birth(ws, kind)
        con.execute(
            "INSERT OR REPLACE INTO meta VALUES (?, ?)",
            [_META.format(kind=kind), json.dumps({"version": plan.version, "birth": list(birth) if birth else None})],
        )
        failpoints.hit("log.ingesting")
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    return Ingested(kind, n, plan.version, plan.whole, tuple(changed), len(readable), int(rows))


def _count_days(con: duckdb.DuckDBPyConnection, kind: str, n: int, whole: bool, days: list[str]) -> None:
    """log_days for the days this ingest changed (every day, when it read everything)."""
    table = ROWS[kind]
    if whole:
        con.execute(f"DELETE FROM {DAYS} WHERE kind = ?", [kind])
        con.execute(f"INSERT INTO {DAYS} SELECT ?, CAST(ts AS DATE), count(*), ? FROM {table} GROUP BY 2", [kind, n])
        return
    if not days:
        return
    con.execute(f"DELETE FROM {DAYS} WHERE kind = ? AND day IN (SELECT unnest(?::DATE[]))", [kind, days])
    con.execute(
        f"""INSERT INTO {DAYS} SELECT ?, CAST(ts AS DATE), count(*), ? FROM {table}
            WHERE CAST(ts AS DATE) IN (SELECT unnest(?::DATE[])) GROUP BY 2""",
        [kind, n, days],
    )


@dataclass(frozen=True)
class Since:
    """What the ingests after one changed (of one kind): everything (whole), the days with rows added or read again,
    and the days read again (rows may have gone)."""

    whole: bool
    days: frozenset[str]
    redone: frozenset[str]


def changed_since(con: duckdb.DuckDBPyConnection, since: int, kind: str = "predictions") -> Since:
    rows = con.execute(f"SELECT whole, days, redone FROM {JOURNAL} WHERE seq > ? AND kind = ?", [since, kind]).fetchall()
    days = frozenset(str(d) for r in rows for d in (r[1] or []))
    return Since(any(r[0] for r in rows), days, frozenset(str(d) for r in rows for d in (r[2] or [])))


def create_views(con: duckdb.DuckDBPyConnection) -> None:
    """Every reader's relations: log_predictions (the ingested rows) and log_feedback (the analyst's labels in the
    database's feedback table and the ingested served feedback), temporary views of this connection."""
    for kind, view in log_table.VIEWS.items():
        cols = ", ".join(log_table.COLUMNS[kind])
        rows = f"SELECT {cols}, replica FROM {ROWS[kind]}"
        if kind == "feedback":
            rows = f"SELECT {cols}, CAST(NULL AS VARCHAR) AS replica FROM feedback UNION ALL {rows}"
        con.execute(f"CREATE OR REPLACE TEMP VIEW {view} AS {rows}")


def counted(con: duckdb.DuckDBPyConnection, kind: str) -> int:
    try:
        return int(con.execute(f"SELECT count(*) FROM {ROWS[kind]}").fetchone()[0])
    except duckdb.CatalogException:
        return 0


def version(con: duckdb.DuckDBPyConnection, kind: str) -> int | None:
    """The table version the database has ingested (None: none yet)."""
    try:
        row = con.execute("SELECT value FROM meta WHERE key = ?", [_META.format(kind=kind)]).fetchone()
    except duckdb.CatalogException:
        return None
    return int(json.loads(row[0])["version"]) if row else None


def forget(con: duckdb.DuckDBPyConnection, kind: str) -> None:
    """Drop the watermark: the next ingest reads the whole table again (check --repair, when the rows disagree)."""
    con.execute("DELETE FROM meta WHERE key = ?", [_META.format(kind=kind)])
