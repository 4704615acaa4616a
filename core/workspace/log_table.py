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

The tables are under the workspace's logs/ unless logs/location.json points them elsewhere: an object store's URI
(s3://bucket/prefix, gs://, az://) and delta-rs's storage options (endpoint, region; credentials come from the
environment, AWS_ACCESS_KEY_ID and the like, never from the file). Serving replicas on several machines then append to
one table, and the analyst's side ingests it from there. Files are read through the same storage (delta-rs's object
store, handed to DuckDB as a file system); fsync is for a local disk only (an object store's write is durable once
answered).
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
    """The kind's folder under the workspace's logs/: its Delta table when the log is local, and, in a workspace not
    yet migrated, its earlier files under replica=*/."""
    return ws.root / "logs" / kind


# --- where the tables are: the workspace's logs/, or an object store (logs/location.json) ----------------------------

LOCATION_FILE = "location.json"
REMOTE_SCHEMES = ("s3", "s3a", "gs", "az", "abfs", "abfss", "memory")


@dataclass(frozen=True)
class Location:
    """Where the tables are: `uri` None is the workspace's logs/ folder; else the object store's prefix (each kind a
    table under it) with delta-rs's storage options."""

    uri: str | None = None
    options: tuple[tuple[str, str], ...] = ()

    @property
    def storage_options(self) -> dict[str, str] | None:
        return dict(self.options) if self.uri else None


_LOCATIONS: dict[str, tuple[tuple[int, int] | None, Location]] = {}  # workspace -> (location.json's stat, Location)


def location_file(ws: Workspace) -> Path:
    return ws.root / "logs" / LOCATION_FILE


def location(ws: Workspace) -> Location:
    """The workspace's log location (a stat per call; the file is read again when it changes)."""
    path = location_file(ws)
    try:
        st = path.stat()
        stamp: tuple[int, int] | None = (st.st_mtime_ns, st.st_size)
    except OSError:
        stamp = None
    held = _LOCATIONS.get(str(path))
    if held is not None and held[0] == stamp:
        return held[1]
    found = Location()
    if stamp is not None:
        try:
            data = json.loads(path.read_text())
            options = data.get("storage_options", {}).items()
            found = Location(str(data["uri"]), tuple(sorted((str(k), str(v)) for k, v in options)))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise UserError(
                f"{path} does not say where the prediction log is ({exc}): set it again with `python -m core log "
                f"location --workspace {ws.name} URI`, or remove the file to keep the log under {ws.root / 'logs'}."
            ) from exc
    _LOCATIONS[str(path)] = (stamp, found)
    return found


def check_uri(uri: str) -> str:
    """An object store's URI as the log's location, or a UserError that says what is accepted."""
    scheme, sep, rest = uri.partition("://")
    if not sep or scheme.lower() not in REMOTE_SCHEMES or not rest.strip("/"):
        raise UserError(
            f"{uri!r} is not an object store's URI: give one such as s3://bucket/prefix ({', '.join(REMOTE_SCHEMES)}). "
            "A local log stays under the workspace's logs/ (--local)."
        )
    return uri.rstrip("/")


def write_location(ws: Workspace, found: Location) -> None:
    """logs/location.json written atomically (removed for the local folder)."""
    path = location_file(ws)
    path.parent.mkdir(parents=True, exist_ok=True)
    if found.uri is None:
        path.unlink(missing_ok=True)
    else:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"uri": found.uri, "storage_options": dict(found.options)}, indent=1))
        os.replace(tmp, path)
    _LOCATIONS.pop(str(path), None)


def is_local(ws: Workspace) -> bool:
    return location(ws).uri is None


def table_uri(ws: Workspace, kind: str) -> str:
    """The kind's table as delta-rs opens it: a folder, or a URI in the object store."""
    found = location(ws)
    return str(root(ws, kind)) if found.uri is None else f"{found.uri}/{kind}"


@dataclass(frozen=True)
class LogFile:
    """A file a table's latest version names: its path under the table, the size its commit recorded, its day."""

    kind: str
    rel: str
    size: int
    day: str | None
    shown: str  # as messages and check name it: logs/<kind>/<rel> under the workspace, or its URI


_STORES: dict[tuple[str, tuple[tuple[str, str], ...]], Any] = {}  # (uri, options) -> the object store as fsspec's


def _store(found: Location) -> Any:
    """The object store under the location's prefix, as an fsspec file system (delta-rs's own object store, so its
    options and credentials are the writers'); DuckDB reads through it (register_filesystem) under its own protocol."""
    assert found.uri is not None
    key = (found.uri, found.options)
    with _GUARD:
        if key not in _STORES:
            import hashlib

            import pyarrow.fs as pafs
            from deltalake.fs import DeltaStorageHandler
            from fsspec.implementations.arrow import ArrowFSWrapper

            protocol = "imagedplog" + hashlib.sha256(repr(key).encode()).hexdigest()[:12]

            class Store(ArrowFSWrapper):  # type: ignore[misc]
                cachable = False

                @classmethod
                def _strip_protocol(cls, path: Any) -> str:
                    text = str(path[0] if isinstance(path, list) else path)
                    return text.split("://", 1)[1] if "://" in text else text

            Store.protocol = protocol
            _STORES[key] = Store(pafs.PyFileSystem(DeltaStorageHandler(found.uri, dict(found.options))))
        return _STORES[key]


def _file_path(ws: Workspace, kind: str, rel: str) -> str:
    found = location(ws)
    return str(root(ws, kind) / rel) if found.uri is None else f"{kind}/{rel}"


def shown(ws: Workspace, kind: str, rel: str) -> str:
    found = location(ws)
    return f"logs/{kind}/{rel}" if found.uri is None else f"{found.uri}/{kind}/{rel}"


def parse_shown(ws: Workspace, text: str) -> tuple[str, str] | None:
    """(kind, rel) of a file as `shown` names it, or None."""
    found = location(ws)
    head = "logs/" if found.uri is None else f"{found.uri}/"
    kind, sep, rel = text.removeprefix(head).partition("/")
    return (kind, rel) if text.startswith(head) and sep and kind in COLUMNS else None


def read_path(con: duckdb.DuckDBPyConnection, ws: Workspace, kind: str, rel: str) -> str:
    """The file as DuckDB's read_parquet takes it on this connection: a local path, or the object store's (registered
    on the connection first)."""
    found = location(ws)
    if found.uri is None:
        return str(root(ws, kind) / rel)
    fs = _store(found)
    if fs.protocol not in con.list_filesystems():
        con.register_filesystem(fs)
    return f"{fs.protocol}://{kind}/{rel}"


def file_size(ws: Workspace, kind: str, rel: str) -> int | None:
    """The file's size in storage (None: not there)."""
    found = location(ws)
    try:
        if found.uri is None:
            return (root(ws, kind) / rel).stat().st_size
        return int(_store(found).size(_file_path(ws, kind, rel)))
    except (OSError, ValueError):
        return None


def file_stat(ws: Workspace, kind: str, rel: str) -> str:
    """The file's size and modification time as one string ("gone": not there): what tells that it changed."""
    found = location(ws)
    try:
        if found.uri is None:
            st = (root(ws, kind) / rel).stat()
            return f"{st.st_size}:{st.st_mtime_ns}"
        info = _store(found).info(_file_path(ws, kind, rel))
        return f"{info['size']}:{info.get('mtime')}"
    except (OSError, ValueError):
        return "gone"


def _read_text(ws: Workspace, kind: str, rel: str) -> str:
    """A file under the table as text (OSError: not there)."""
    found = location(ws)
    if found.uri is None:
        return (root(ws, kind) / rel).read_text()
    try:
        return bytes(_store(found).cat_file(_file_path(ws, kind, rel))).decode()
    except FileNotFoundError:
        raise
    except Exception as exc:  # noqa: BLE001 - the object store's errors: one kind here, "cannot be read now"
        raise OSError(f"{shown(ws, kind, rel)} cannot be read: {exc}") from exc


def take(ws: Workspace, kind: str, rel: str, dst: Path) -> bool:
    """Move a file of the table to `dst` on this disk (from an object store: copied down, then deleted there); False
    when it is not there."""
    found = location(ws)
    if found.uri is None:
        src = root(ws, kind) / rel
        if not src.exists():
            return False
        import shutil

        shutil.move(str(src), str(dst))
        return True
    fs = _store(found)
    path = _file_path(ws, kind, rel)
    if not fs.exists(path):
        return False
    tmp = dst.with_name(dst.name + ".part")
    fs.get_file(path, str(tmp))
    _fsync(tmp)
    os.replace(tmp, dst)
    fs.rm_file(path)
    return True


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

_TABLES: dict[str, tuple[tuple[Any, ...] | None, Any]] = {}  # table URI -> (its first commit's identity, DeltaTable)
_GUARD = threading.RLock()  # a DeltaTable is one Rust object: one thread at a time uses it (and the cache)


def delta():  # noqa: ANN202 - deltalake is imported where the log is used (commands that never log stay light)
    import deltalake

    return deltalake


def _create(ws: Workspace, kind: str) -> None:
    """The empty table with the log's schema (two processes creating it at once: one commit wins, both go on)."""
    dl = delta()
    try:
        dl.write_deltalake(
            table_uri(ws, kind), arrow_rows(kind, None, ""), mode="error", partition_by=["date"], configuration=CONFIGURATION,
            name=f"imagedp {kind}", description=f"The production log's {kind} (core.workspace.log_table)",
            storage_options=location(ws).storage_options,
            commit_properties=dl.CommitProperties(max_commit_retries=0),  # a create that lost the race must not commit
        )  # fmt: skip                                                    # its metadata again as v1 (appends would fail)
    except dl.exceptions.DeltaError:
        if _birth(ws, kind) is None:
            raise  # not "another process made it first"
    _fsync_version(ws, kind, 0)


def _birth(ws: Workspace, kind: str) -> tuple[Any, ...] | None:
    """The identity of the table's first commit (on a local disk its inode and mtime; in an object store the table's
    id that commit records): a table deleted and made again under the same path (a workspace removed and created
    anew) is another table."""
    first = f"_delta_log/{0:020d}.json"
    if is_local(ws):
        try:
            st = os.stat(root(ws, kind) / first)
        except OSError:
            return None
        return st.st_ino, st.st_mtime_ns
    try:
        text = _read_text(ws, kind, first)
    except OSError:
        return None
    ids = [a["metaData"].get("id") for a in _parse(text) if isinstance(a.get("metaData"), dict)]
    return (str(ids[0]),) if ids else None


@contextmanager
def using(ws: Workspace, kind: str, create: bool = False) -> Iterator[Any]:
    """This process's DeltaTable of the kind at its latest version, held for the block (None when there is none yet;
    made first with `create`)."""
    key = table_uri(ws, kind)
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
            dt = delta().DeltaTable(key, storage_options=location(ws).storage_options)
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
        if not is_local(ws):
            raise OSError(f"the prediction log {table_uri(ws, kind)} cannot be written now: {exc}") from exc
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


def _parse(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def _actions(path: Path) -> list[dict[str, object]]:
    return _parse(path.read_text())


def commit_actions(ws: Workspace, kind: str, v: int) -> list[dict[str, Any]]:
    """The actions of the table's commit `v` (OSError: its entry is not there, cleaned up after a checkpoint)."""
    return _parse(_read_text(ws, kind, f"_delta_log/{v:020d}.json"))


def _fsync_version(ws: Workspace, kind: str, v: int) -> None:
    """fsync one commit: the files it adds, their folders, its entry and the log's folder (and a checkpoint); nothing
    to do in an object store (a write is durable once answered)."""
    if not is_local(ws):
        return
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
    if not is_local(ws):
        return
    v = before + 1
    while _commit_path(ws, kind, v).exists():
        txns = [a["txn"] for a in _actions(_commit_path(ws, kind, v)) if "txn" in a]
        if any(t.get("appId") == batch.app_id and int(t.get("version", -1)) == batch.number for t in txns):  # type: ignore[union-attr]
            _fsync_version(ws, kind, v)
            return
        v += 1
    raise OSError(f"the log's commit of batch {batch.number} of {batch.app_id} is not in {root(ws, kind) / '_delta_log'}")


# --- reading --------------------------------------------------------------------------------------------------------


def files(ws: Workspace, kind: str) -> list[LogFile]:
    """The files that are the table's rows now (its latest version), with the size and day its commits recorded."""
    with using(ws, kind) as dt:
        return [] if dt is None else files_of(ws, kind, dt)


def files_of(ws: Workspace, kind: str, dt: Any) -> list[LogFile]:
    """The files of the version `dt` (a DeltaTable of `using`) holds."""
    found = dt.get_add_actions(flatten=True)
    actions = {name: found.column(name).to_pylist() for name in found.column_names}
    paths = [str(p) for p in actions["path"]]
    days = actions.get("partition.date") or [None] * len(paths)
    return [
        LogFile(kind, p, int(n), str(d) if d is not None else day_of(Path(p)), shown(ws, kind, p))
        for p, n, d in zip(paths, actions["size_bytes"], days, strict=True)
    ]


def rows(ws: Workspace, kind: str) -> int:
    """The table's rows as its commits count them (no file read)."""
    with using(ws, kind) as dt:
        if dt is None:
            return 0
        counts = dt.get_add_actions(flatten=True).column("num_records").to_pylist()
    return int(sum(c or 0 for c in counts))


def whole(ws: Workspace, f: LogFile) -> bool:
    """Whether the file is there with the size its commit recorded (a stat, no read): a file cut short or replaced
    is not."""
    return file_size(ws, f.kind, f.rel) == f.size


def readable(ws: Workspace, kind: str) -> list[LogFile]:
    """The table's files that are whole: one gone or of another size is left out of every figure (the pages say so;
    check names it and why)."""
    return [f for f in files(ws, kind) if whole(ws, f)]


def unreadable(ws: Workspace) -> list[LogFile]:
    """Files the tables name that are gone or not whole (left out of every figure; check names them)."""
    return [f for kind in COLUMNS for f in files(ws, kind) if not whole(ws, f)]


def fault(ws: Workspace, f: LogFile) -> str | None:
    """What makes a file the table names unfit to read (gone, another size than its commit says, damaged, other
    columns), or None: its footer is read (check's thorough look; readers only stat)."""
    found = file_size(ws, f.kind, f.rel)
    if found is None:
        return "gone"
    if found != f.size:
        return f"{found:,} bytes where its commit recorded {f.size:,}: cut short or replaced on disk"
    con = duckdb.connect()
    try:
        path = read_path(con, ws, f.kind, f.rel)
        rows = con.execute(f"DESCRIBE SELECT * FROM read_parquet({sql_path(path)}, hive_partitioning = false)").fetchall()
    except duckdb.Error as exc:
        return f"not a readable Parquet file ({str(exc).splitlines()[0][:200]})"
    finally:
        con.close()
    wrong = sorted({(str(r[0]), str(r[1])) for r in rows} ^ set((COLUMNS[f.kind] | {"replica": "VARCHAR"}).items()))[:4]
    return f"its columns are not the log's {f.kind} ({wrong})" if wrong else None


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
    file: LogFile
    detail: str


def problems(ws: Workspace) -> list[FileProblem]:
    """What `check` finds: a file the table names that is gone or cannot be read as the log's (log_migration finds
    the earlier layout's files)."""
    found: list[FileProblem] = []
    for kind in COLUMNS:
        for f in files(ws, kind):
            why = fault(ws, f)
            if why == "gone":
                found.append(FileProblem("log_missing", f, "a file the log's table names is gone (its rows are lost "
                                         "unless a backup has it)"))  # fmt: skip
            elif why is not None:
                found.append(FileProblem("log_schema" if why.startswith("its columns") else "log_unreadable", f, why))
    return found
