"""The log's earlier layouts, folded into its Delta tables once: Parquet files per replica and day
(logs/<kind>/replica=*/date=*/, with their compaction journals) and, before them, the spool (logs/spool/).

`migrate` commits one folder at a time, each file under its own transaction id (migrate:<path under logs/>), so a
migration cut short and run again writes no file twice; a folder's files are deleted only after its commit is
fsynced and an audit row (the caller's `before_delete`) names them, a compaction's inputs before its output (left
behind, they would be data again). The database's own rows of that time are moved by store.migrate_log.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import duckdb

from core.workspace import failpoints, log_table
from core.workspace.paths import Workspace


def legacy_files(ws: Workspace, kind: str) -> list[Path]:
    """The earlier layouts' files that were data: logs/<kind>/replica=*/date=*/, less the inputs of a compaction of
    that layout whose output was in view, and (predictions) the spool of the layout before, logs/spool/."""
    spool = ws.root / "logs" / "spool"
    files = sorted(spool.glob("*.parquet")) if kind == "predictions" and spool.is_dir() else []
    for folder in sorted(log_table.root(ws, kind).glob("replica=*/date=*")):
        if folder.is_dir():
            names = {n for n in os.listdir(folder) if n.endswith(".parquet") and not n.startswith(".")}
            files += [folder / n for n in sorted(names - _superseded(folder, names))]
    return files


def _superseded(folder: Path, names: set[str]) -> set[str]:
    """Inputs of the earlier layout's compactions whose output is in `names` (their rows are in it)."""
    out: set[str] = set()
    for journal in folder.glob(".compact-*.json"):
        try:
            body = json.loads(journal.read_text())
        except (OSError, ValueError):
            continue  # cut short while written: its output never came into view
        if body.get("output") in names:
            out |= set(body.get("inputs", [])) & names
    return out


@contextmanager
def _migrating(ws: Workspace, kind: str) -> Iterator[None]:
    """One migration of a kind at a time (released by the system if the process dies)."""
    log_table.root(ws, kind).mkdir(parents=True, exist_ok=True)
    fd = os.open(log_table.root(ws, kind) / ".migrate.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


@dataclass
class Migration:
    files: int = 0  # earlier files whose rows are now in the table
    rows: int = 0
    removed: list[str] = field(default_factory=list)  # earlier files and folders deleted (their rows in the table)


def migrate(ws: Workspace, kind: str, before_delete: log_table.Deleting | None = None) -> Migration:
    """Fold the earlier layout's files into the table, one commit per partition folder, each file under its own
    transaction id (migrate:<path>), so a run cut short and run again skips what was committed; then delete them
    (said first to `before_delete`). What cannot be read is left where it is for check to name."""
    out = Migration()
    with _migrating(ws, kind):
        files = legacy_files(ws, kind)
        by_folder: dict[Path, list[Path]] = {}
        for f in files:
            if fault_legacy(f, kind) is None:
                by_folder.setdefault(f.parent, []).append(f)
        for folder, group in by_folder.items():
            out.files += len(group)
            out.rows += _migrate_folder(ws, kind, folder, group)
            # the inputs of a compaction go before its output: were they left alone, they would be data again
            stale = sorted(folder / n for n in _superseded(folder, {p.name for p in folder.glob("*.parquet")}))
            going = [*stale, *group]
            names = [str(p.relative_to(ws.root)) for p in going]
            if before_delete is not None:
                before_delete(names)
            for i, path in enumerate(going):
                path.unlink()
                if i == 0:
                    failpoints.hit("log.migrated_deleted")
            out.removed += names
            _clear_folder(folder)
    return out


def _migrate_folder(ws: Workspace, kind: str, folder: Path, group: list[Path]) -> int:
    dl = log_table.delta()
    txns = {f: f"migrate:{f.relative_to(ws.root / 'logs').as_posix()}" for f in group}
    with log_table.using(ws, kind, create=True) as dt:
        todo = [f for f in group if dt.transaction_version(txns[f]) is None]
    if not todo:
        return 0
    replica = folder.parent.name.removeprefix("replica=") if folder.parent.name.startswith("replica=") else folder.name
    con = duckdb.connect()
    try:
        listed = ", ".join(log_table.sql_path(f) for f in todo)
        frame = con.sql(f"SELECT * FROM read_parquet([{listed}], union_by_name = true, hive_partitioning = false)").df()
    finally:
        con.close()
    rows = log_table.arrow_rows(kind, frame, replica)
    with log_table.using(ws, kind) as dt:
        before = int(dt.version())
        dl.write_deltalake(
            dt, rows, mode="append", partition_by=["date"],
            commit_properties=dl.CommitProperties(app_transactions=[dl.Transaction(txns[f], 0) for f in todo],
                                                  max_commit_retries=log_table.COMMIT_RETRIES),
        )  # fmt: skip
    batch = log_table.Batch(txns[todo[0]], 0)
    log_table.sync_commit(ws, kind, before, batch)
    failpoints.hit("log.migrated")
    return len(frame)


def _clear_folder(folder: Path) -> None:
    """An emptied partition folder of the earlier layout: its compaction journals and lock (the rows they spoke of
    are in the table), then the folder and its replica's, if empty."""
    for leftover in [*folder.glob(".compact-*.json"), folder / ".compact.lock"]:
        leftover.unlink(missing_ok=True)
    for f in (folder, folder.parent):
        try:
            f.rmdir()
        except OSError:
            return  # something else is there (a temporary a dead writer left: check names it)


_REQUIRED = {"predictions": ("id", "ts", "model_version", "probs", "predicted"), "feedback": ("prediction_id", "ts", "label")}


def fault_legacy(path: Path, kind: str) -> str | None:
    """What makes a file of the earlier layout unfit to fold in (not Parquet, other columns), or None."""
    con = duckdb.connect()
    try:
        listed = log_table.sql_path(path)
        rows = con.execute(f"DESCRIBE SELECT * FROM read_parquet({listed}, hive_partitioning = false)").fetchall()
    except duckdb.Error as exc:
        return f"not a readable Parquet file ({str(exc).splitlines()[0][:200]})"
    finally:
        con.close()
    missing = sorted(set(_REQUIRED[kind]) - {str(r[0]) for r in rows})  # an earlier version's may lack later columns
    return f"its columns are not the log's {kind} (missing {missing[:4]})" if missing else None


@dataclass(frozen=True)
class LegacyFile:
    path: Path
    detail: str  # why it cannot be folded in, or that it waits to be


def problems(ws: Workspace) -> list[LegacyFile]:
    """The earlier layout's files not folded into the tables yet (check's log_legacy; repair folds them in)."""
    return [LegacyFile(path, fault_legacy(path, kind) or "a file of the earlier log layout, not yet in the table")
            for kind in log_table.COLUMNS for path in legacy_files(ws, kind)]  # fmt: skip
