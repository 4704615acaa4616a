"""The production log as two Delta Lake tables (delta-rs), one per kind, that every serving process appends to.

    logs/<kind>/                      kind: predictions or feedback, a Delta table partitioned by date
        _delta_log/<version>.json     the commits: a version names the files that are the table's rows
        date=<YYYY-MM-DD>/part-*.parquet

Appends from many processes commit atomically (delta-rs: a commit is a file created only if absent), each carrying a
transaction of its writer (an id and a batch number), so a batch retried after a failure that came once it was
committed is not written again. delta-rs does not fsync on a local disk: after a commit its data files, its commit
entry and their folders are fsynced before the rows count as logged. The workspace database ingests the table's commits
(core.workspace.log_ingest) and readers query it; any engine that reads Delta (DuckDB through the file list, Polars,
pyarrow, Spark) sees the same rows. `compact` is delta-rs's optimize
(a partition's files folded into one, in one commit) and vacuum (files no version in the retention names, deleted after
an audit row lists them). core.workspace.log_migration folds a workspace's earlier layout into the table.
"""

from __future__ import annotations

import json
import os
import re
import socket
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd

from core.errors import UserError
from core.workspace import failpoints
from core.workspace.paths import Workspace

# column -> type, as the database's tables hold them (store.SCHEMA): every append is cast to these types
COLUMNS: dict[str, dict[str, str]] = {
    "predictions": {
        "id": "VARCHAR", "ts": "TIMESTAMP", "source": "VARCHAR", "model_version": "VARCHAR", "name": "VARCHAR",
        "sha256": "VARCHAR", "width": "INTEGER", "height": "INTEGER", "brightness": "DOUBLE", "contrast": "DOUBLE",
        "saturation": "DOUBLE", "sharpness": "DOUBLE", "probs": "FLOAT[]", "predicted": "VARCHAR", "confidence": "DOUBLE",
        "energy": "DOUBLE", "ood_score": "DOUBLE", "ood": "BOOLEAN", "embedding": "FLOAT[]", "action": "VARCHAR",
        "latency_ms": "DOUBLE", "image_path": "VARCHAR", "stage": "VARCHAR", "served": "BOOLEAN", "request_id": "VARCHAR",
        "referred": "BOOLEAN", "audit": "BOOLEAN", "audit_p": "DOUBLE",
    },
    "feedback": {"prediction_id": "VARCHAR", "ts": "TIMESTAMP", "label": "VARCHAR", "source": "VARCHAR", "reviewer": "VARCHAR"},
}  # fmt: skip
VIEWS = {"predictions": "log_predictions", "feedback": "log_feedback"}  # the relation readers query, per kind
REPLICA_ENV = "IMAGEDP_REPLICA"
RETENTION_H = 24  # vacuum deletes a file only once no version of the last day names it (readers list files for seconds)
CONFIGURATION = {  # the tables' own settings (Delta table properties)
    "delta.checkpointInterval": "100",  # a reader loads the latest checkpoint and at most 99 commits after it
    "delta.logRetentionDuration": "interval 30 days",  # time travel this far back; older commit entries are cleaned up
    "delta.deletedFileRetentionDuration": f"interval {RETENTION_H} hours",
}
COMMIT_RETRIES = 1000  # appends from many processes never conflict: a commit that lost the race takes the next version
TARGET_FILE_BYTES = 256 * 1024 * 1024  # optimize folds a partition into files of about this size
_NAME = re.compile(r"[^A-Za-z0-9_.-]+")


def root(ws: Workspace, kind: str) -> Path:
    """The kind's Delta table (and, in a workspace not yet migrated, its earlier files under replica=*/)."""
    return ws.root / "logs" / kind


def replica_name(name: str | None = None) -> str:
    """This process's name in the log: the name given (serve --replica), else $IMAGEDP_REPLICA, else the host's."""
    chosen = name or os.environ.get(REPLICA_ENV) or socket.gethostname() or "local"
    return _NAME.sub("-", chosen).strip("-.")[:64] or "local"


def sql_path(path: Path | str) -> str:
    """A path as a SQL string literal (COPY and read_parquet take no parameter for it)."""
    return "'" + str(path).replace("'", "''") + "'"


def select_sql(kind: str, present: set[str] | None = None) -> str:
    """The kind's columns in order and with their types (NULL for one the frame lacks)."""
    return ", ".join(
        f"CAST({c} AS {t}) AS {c}" if present is None or c in present else f"CAST(NULL AS {t}) AS {c}"
        for c, t in COLUMNS[kind].items()
    )


def _fsync(path: Path, directory: bool = False) -> None:
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if directory else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# --- the tables, one DeltaTable per process and kind, brought up to date on each use -------------------------------

_TABLES: dict[str, tuple[tuple[int, int] | None, Any]] = {}  # path -> (its first commit's identity, DeltaTable)
_GUARD = threading.RLock()  # a DeltaTable is one Rust object: one thread at a time uses it (and the cache)


def delta():  # noqa: ANN202 - deltalake is imported where the log is used (commands that never log stay light)
    import deltalake

    return deltalake


def _create(ws: Workspace, kind: str) -> None:
    """The empty table with the log's schema (two processes creating it at once: one commit wins, both go on)."""
    dl = delta()
    try:
        dl.write_deltalake(
            str(root(ws, kind)), arrow_rows(kind, None, ""), mode="error", partition_by=["date"], configuration=CONFIGURATION,
            name=f"imagedp {kind}", description=f"The production log's {kind} (core.workspace.log_table)",
        )  # fmt: skip
    except dl.exceptions.DeltaError:
        if _birth(ws, kind) is None:
            raise  # not "another process made it first"
    _fsync_version(ws, kind, 0)


def _birth(ws: Workspace, kind: str) -> tuple[int, int] | None:
    """The identity of the table's first commit (inode, mtime): a table deleted and made again under the same path
    (a workspace removed and created anew) is another table."""
    try:
        st = os.stat(root(ws, kind) / "_delta_log" / f"{0:020d}.json")
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns


@contextmanager
def using(ws: Workspace, kind: str, create: bool = False) -> Iterator[Any]:
    """This process's DeltaTable of the kind at its latest version, held for the block (None when there is none yet;
    made first with `create`)."""
    key = str(root(ws, kind))
    with _GUARD:
        born = _birth(ws, kind)
        held = _TABLES.get(key)
        if held is not None and held[0] == born:
            dt = held[1]
            dt.update_incremental()
        else:
            if born is None:
                if not create:
                    _TABLES.pop(key, None)
                    yield None
                    return
                _create(ws, kind)
                born = _birth(ws, kind)
            dt = delta().DeltaTable(key)
            _TABLES[key] = (born, dt)
        yield dt


def version(ws: Workspace, kind: str) -> int | None:
    """The table's latest version (None: no table yet): what a figure computed from the log is keyed by."""
    with using(ws, kind) as dt:
        return None if dt is None else int(dt.version())


# --- appending ------------------------------------------------------------------------------------------------------


_ARROW = {"VARCHAR": "string", "TIMESTAMP": "timestamp[us]", "INTEGER": "int32", "DOUBLE": "float64", "BOOLEAN": "bool",
          "FLOAT[]": "list<float>"}  # the log's types as Arrow's (what DuckDB reads back as COLUMNS)  # fmt: skip


def _arrow_type(name: str) -> Any:
    import pyarrow as pa

    return pa.list_(pa.float32()) if name == "list<float>" else pa.type_for_alias(name)


def _cast(values: Any, typ: Any) -> Any:
    """An Arrow array as the log's type, as DuckDB's CAST does it (a float for an integer column is rounded)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if pa.types.is_integer(typ) and pa.types.is_floating(values.type):
        values = pc.round(values)
    return values if values.type == typ else values.cast(typ)


def arrow_rows(kind: str, frame: pd.DataFrame | None, replica: str) -> Any:
    """The rows as the table's Arrow schema (None: no rows; a column the frame lacks is null), the replica and the
    partition's day beside them. Converted by pyarrow directly (through DuckDB it cost ~20 ms an append)."""
    import pyarrow as pa

    n = 0 if frame is None else len(frame)
    columns, fields = [], []
    for column, kind_type in COLUMNS[kind].items():
        typ = _arrow_type(_ARROW[kind_type])
        present = frame is not None and column in frame
        columns.append(_cast(pa.array(frame[column], from_pandas=True), typ) if present else pa.nulls(n, typ))  # type: ignore[index]
        fields.append(pa.field(column, typ))
    ts = pd.to_datetime(frame["ts"]) if frame is not None else pd.Series([], dtype="datetime64[us]")
    columns += [pa.array([replica] * n, type=pa.string()), pa.array(ts.dt.strftime("%Y-%m-%d"), type=pa.string())]
    fields += [pa.field("replica", pa.string()), pa.field("date", pa.string())]
    return pa.Table.from_arrays(columns, schema=pa.schema(fields))


@dataclass
class Writer:
    """One appender's identity in the table: its transaction id, and the number of its next batch. A batch that
    failed is tried again under the same number (`Batch`): if it was committed after all, it is not written twice."""

    app_id: str
    next_batch: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @staticmethod
    def new(replica: str | None = None) -> Writer:
        return Writer(f"{replica_name(replica)}.{os.getpid()}.{uuid.uuid4().hex[:12]}")

    def take(self) -> Batch:
        with self.lock:
            self.next_batch += 1
            return Batch(self.app_id, self.next_batch)


@dataclass(frozen=True)
class Batch:
    app_id: str
    number: int  # the Delta transaction's version: increasing per app_id


_WRITERS: dict[str, Writer] = {}


def writer(replica: str | None = None) -> Writer:
    """This process's writer under the replica's name (one per name, for appends that are not retried)."""
    name = replica_name(replica)
    with _GUARD:
        if name not in _WRITERS:
            _WRITERS[name] = Writer.new(name)
        return _WRITERS[name]


def _committed(dt: Any, batch: Batch) -> bool:
    """Whether the batch is in the table already (a retry of one whose commit succeeded)."""
    done = dt.transaction_version(batch.app_id)
    return done is not None and int(done) >= batch.number


def append(ws: Workspace, kind: str, frame: pd.DataFrame, replica: str | None = None, batch: Batch | None = None) -> int:
    """Commit rows to the kind's table and fsync them; returns the rows newly committed (0 when the batch was in
    already). Raises OSError (or delta-rs's error) when the disk refuses: the caller keeps the rows and tries again
    with the same batch, which is then written at most once."""
    if frame.empty:
        return 0
    dl = delta()
    name = replica_name(replica)
    batch = batch or writer(name).take()
    rows = arrow_rows(kind, frame, name)
    with _said(ws, kind), using(ws, kind, create=True) as dt:
        if _committed(dt, batch):
            return 0
        before = int(dt.version())
        failpoints.hit("log.appending")
        dl.write_deltalake(
            dt, rows, mode="append", partition_by=["date"],
            commit_properties=dl.CommitProperties(app_transactions=[dl.Transaction(batch.app_id, batch.number)],
                                                  max_commit_retries=COMMIT_RETRIES),
        )  # fmt: skip
    failpoints.hit("log.committed")
    sync_commit(ws, kind, before, batch)
    failpoints.hit("log.synced")
    return len(frame)


@contextmanager
def _said(ws: Workspace, kind: str) -> Iterator[None]:
    """delta-rs's error for a log that cannot be written (a read-only or full disk) as one a user can act on; any
    other goes up as it is. Either way nothing of the batch is in the log, and its writer keeps it."""
    try:
        yield
    except delta().exceptions.DeltaError as exc:
        text = str(exc).lower()
        folder = next((p for p in (root(ws, kind), *root(ws, kind).parents) if p.exists()), ws.root)
        why = ("the disk is full" if "no space" in text else "it is read-only" if not os.access(folder, os.W_OK)
               or "read-only" in text or "permission denied" in text else None)  # fmt: skip
        if why is None:
            raise
        raise UserError(
            f"The prediction log {root(ws, kind)} cannot be written ({why}): make the data root writable (or free some "
            "space) and score again. Nothing of this batch was logged."
        ) from exc


def _commit_path(ws: Workspace, kind: str, v: int) -> Path:
    return root(ws, kind) / "_delta_log" / f"{v:020d}.json"


def _actions(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _fsync_version(ws: Workspace, kind: str, v: int) -> None:
    """fsync one commit: the files it adds, their folders, its entry and the log's folder (and a checkpoint)."""
    entry = _commit_path(ws, kind, v)
    folders = {entry.parent, root(ws, kind)}
    for action in _actions(entry):
        if "add" in action:
            path = root(ws, kind) / str(action["add"]["path"])  # type: ignore[index]
            _fsync(path)
            folders.add(path.parent)
    _fsync(entry)
    last = entry.parent / "_last_checkpoint"
    if last.exists():  # delta-rs writes one every checkpointInterval commits: a reader starts from it
        for part in entry.parent.glob(f"{v:020d}.checkpoint*.parquet"):
            _fsync(part)
        _fsync(last)
    for folder in sorted(folders):
        _fsync(folder, directory=True)


def sync_commit(ws: Workspace, kind: str, before: int, batch: Batch) -> None:
    """fsync the commit that carries the batch (delta-rs leaves it in the page cache): found among the versions
    after `before` (other writers may have committed in between)."""
    v = before + 1
    while _commit_path(ws, kind, v).exists():
        txns = [a["txn"] for a in _actions(_commit_path(ws, kind, v)) if "txn" in a]
        if any(t.get("appId") == batch.app_id and int(t.get("version", -1)) == batch.number for t in txns):  # type: ignore[union-attr]
            _fsync_version(ws, kind, v)
            return
        v += 1
    raise OSError(f"the log's commit of batch {batch.number} of {batch.app_id} is not in {root(ws, kind) / '_delta_log'}")


# --- reading --------------------------------------------------------------------------------------------------------


def _listed(ws: Workspace, kind: str) -> list[tuple[Path, int]]:
    """The files that are the table's rows now (its latest version) with the size the log recorded for each."""
    with using(ws, kind) as dt:
        if dt is None:
            return []
        actions = dt.get_add_actions(flatten=False)
    paths = actions.column("path").to_pylist()
    sizes = actions.column("size_bytes").to_pylist()
    return [(root(ws, kind) / str(p), int(n)) for p, n in zip(paths, sizes, strict=True)]


def rows(ws: Workspace, kind: str) -> int:
    """The table's rows as its commits count them (no file read)."""
    with using(ws, kind) as dt:
        if dt is None:
            return 0
        counts = dt.get_add_actions(flatten=True).column("num_records").to_pylist()
    return int(sum(c or 0 for c in counts))


def visible(ws: Workspace, kind: str) -> list[Path]:
    """The files that are the table's rows now (its latest version)."""
    return [path for path, _ in _listed(ws, kind)]


def _whole(path: Path, size: int) -> bool:
    """Whether the file is there with the size its commit recorded (a stat, no read): a file cut short or replaced
    on disk is not."""
    try:
        return path.stat().st_size == size
    except OSError:
        return False


def readable(ws: Workspace, kind: str) -> list[Path]:
    """The table's files that are whole on disk: one gone or of another size is left out of every figure (the pages
    say so; check names it and why)."""
    return [path for path, size in _listed(ws, kind) if _whole(path, size)]


def unreadable(ws: Workspace) -> list[Path]:
    """Files the tables name that are gone or not whole (left out of every figure; check names them)."""
    return [path for kind in COLUMNS for path, size in _listed(ws, kind) if not _whole(path, size)]


def fault(path: Path, kind: str, size: int | None = None) -> str | None:
    """What makes a file the table names unfit to read (gone, another size than its commit says, damaged, other
    columns), or None: its footer is read (check's thorough look; readers only stat)."""
    try:
        found = path.stat().st_size
    except OSError:
        return "gone"
    if size is not None and found != size:
        return f"{found:,} bytes where its commit recorded {size:,}: cut short or replaced on disk"
    con = duckdb.connect()
    try:
        rows = con.execute(f"DESCRIBE SELECT * FROM read_parquet({sql_path(path)}, hive_partitioning = false)").fetchall()
    except duckdb.Error as exc:
        return f"not a readable Parquet file ({str(exc).splitlines()[0][:200]})"
    finally:
        con.close()
    wrong = sorted({(str(r[0]), str(r[1])) for r in rows} ^ set((COLUMNS[kind] | {"replica": "VARCHAR"}).items()))[:4]
    return f"its columns are not the log's {kind} ({wrong})" if wrong else None


def day_of(path: Path) -> str | None:
    """The day a log file's rows fall on (its partition), or None."""
    name = path.parent.name
    return name.removeprefix("date=") if re.fullmatch(r"date=\d{4}-\d{2}-\d{2}", name) else None


# --- optimize and vacuum --------------------------------------------------------------------------------------------


@dataclass
class Compaction:
    files_in: int = 0  # files folded
    files_out: int = 0  # files they were folded into
    removed: int = 0  # files vacuumed (no version of the retention names them)
    removed_files: list[str] = field(default_factory=list)
    version: int | None = None  # the table's version after


Deleting = Callable[[list[str]], None]  # told which files are about to go (the audit row), first


def compact(ws: Workspace, kind: str, retention_h: int = RETENTION_H, before_delete: Deleting | None = None) -> Compaction:
    """Optimize (each partition's small files folded into one, one commit, readers unaffected) then vacuum: files
    that no version of the last `retention_h` hours names are listed to `before_delete` (an audit row), then deleted."""
    out = Compaction()
    with using(ws, kind) as dt:
        if dt is None:
            return out
        before = int(dt.version())
        metrics = dt.optimize.compact(target_size=TARGET_FILE_BYTES, commit_properties=delta().CommitProperties(
            max_commit_retries=COMMIT_RETRIES))  # fmt: skip
        out.files_in, out.files_out = int(metrics["numFilesRemoved"]), int(metrics["numFilesAdded"])
        after = int(dt.version())
    for v in range(before + 1, after + 1):
        _fsync_version(ws, kind, v)
    failpoints.hit("log.optimized")
    with using(ws, kind) as dt:
        going = dt.vacuum(retention_hours=retention_h, dry_run=True, enforce_retention_duration=False)
    if going and before_delete is not None:
        before_delete(sorted(going))
    failpoints.hit("log.vacuum_listed")
    with using(ws, kind) as dt:
        gone = dt.vacuum(retention_hours=retention_h, dry_run=False, enforce_retention_duration=False) if going else []
        out.version = int(dt.version())
    if (extra := sorted(set(gone) - set(going))) and before_delete is not None:
        before_delete(extra)  # crossed the retention in between: said after, never unsaid
    failpoints.hit("log.vacuumed")
    out.removed, out.removed_files = len(gone), sorted(gone)
    return out


def forget_missing(ws: Workspace, kind: str) -> list[str]:
    """Commit the removal of files the table names that are gone (delta-rs's repair: an FSCK commit), so readers stop
    looking for them; returns their paths. Their rows were lost with them (or are in quarantine/log/)."""
    with using(ws, kind) as dt:
        if dt is None:
            return []
        before = int(dt.version())
        done = dt.repair(dry_run=False)
        after = int(dt.version())
    for v in range(before + 1, after + 1):
        _fsync_version(ws, kind, v)
    return [str(p) for p in done.get("files_removed", [])]


# --- what check finds -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FileProblem:
    kind: str  # log_missing / log_unreadable / log_schema / log_legacy
    path: Path
    detail: str


def problems(ws: Workspace) -> list[FileProblem]:
    """What `check` finds: a file the table names that is gone or cannot be read as the log's (log_migration finds
    the earlier layout's files)."""
    found: list[FileProblem] = []
    for kind in COLUMNS:
        for path, size in _listed(ws, kind):
            why = fault(path, kind, size)
            if why == "gone":
                found.append(FileProblem("log_missing", path, "a file the log's table names is gone (its rows are lost "
                                         "unless a backup has it)"))  # fmt: skip
            elif why is not None:
                found.append(FileProblem("log_schema" if why.startswith("its columns") else "log_unreadable", path, why))
    return found
