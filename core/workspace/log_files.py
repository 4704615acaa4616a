"""The production log as files: each serving process appends Parquet files, and never waits for another.

    logs/<kind>/replica=<name>/date=<YYYY-MM-DD>/<name>.parquet      kind: predictions or feedback

A file is written under a hidden temporary name, fsynced and renamed, so a name a reader sees always holds a whole
file, and no writer takes the database's write lock. Readers see the database's table and the files as one relation
(`view_sql`, made a view by every connection: store.connect), so rows logged before this layout keep their place.

`compact` folds a partition's files into one, journalled: the output is written and fsynced under a hidden name, a
journal naming its inputs is written, the output is renamed into view, and from then on readers leave the inputs
out; they are deleted by a later compaction (a reader that listed them a moment before may still be reading them).
A crash at any step leaves either the inputs in view or the output with its journal: never both, never neither.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import pandas as pd

from core.workspace import failpoints, locks
from core.workspace.paths import Workspace, write_atomic

# column -> type, as the database's tables hold them (store.SCHEMA): every file is written with these types
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
GRACE_S = 600.0  # a compaction's inputs stay on disk this long after its output is in view (readers that listed them)
ORPHAN_S = 3600.0  # a hidden temporary older than this belongs to no live writer (a writer holds one for milliseconds)
_NAME = re.compile(r"[^A-Za-z0-9_.-]+")


def root(ws: Workspace, kind: str) -> Path:
    return ws.root / "logs" / kind


def replica_name(name: str | None = None) -> str:
    """This process's partition: the name given (serve --replica), else $IMAGEDP_REPLICA, else the host's name."""
    chosen = name or os.environ.get(REPLICA_ENV) or socket.gethostname() or "local"
    return _NAME.sub("-", chosen).strip("-.")[:64] or "local"


def partition(ws: Workspace, kind: str, replica: str, day: str) -> Path:
    return root(ws, kind) / f"replica={replica}" / f"date={day}"


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "-", socket.gethostname()) or "host"


def _tmp_for(final: Path) -> Path:
    """The hidden name a file is written under: its owner (host, process) in it, so that `check` can tell a
    temporary a live writer holds from one a dead process left."""
    return final.with_name(f".{final.name}.{_host()}.{os.getpid()}.tmp")


def orphan(tmp: Path, now: float | None = None) -> bool:
    """A hidden temporary no live process will rename: its writer on this host is gone, or it is older than
    ORPHAN_S (a writer on another host, which cannot be seen from here)."""
    parts = tmp.name.rsplit(".", 3)  # .<final>.<host>.<pid>.tmp
    try:
        host, pid = parts[1], int(parts[2])
    except (IndexError, ValueError):
        host, pid = "", 0
    if host == _host():
        return not locks.pid_alive(pid)
    try:
        return (now or time.time()) - tmp.stat().st_mtime > ORPHAN_S
    except OSError:
        return False


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def select_sql(kind: str, present: set[str] | None = None) -> str:
    """The kind's columns in order and with their types (NULL for one the frame lacks)."""
    return ", ".join(
        f"CAST({c} AS {t}) AS {c}" if present is None or c in present else f"CAST(NULL AS {t}) AS {c}"
        for c, t in COLUMNS[kind].items()
    )


KEYS = {"predictions": ("id",), "feedback": ("prediction_id", "ts", "label", "source", "reviewer")}  # a row's identity


def content_name(kind: str, rows: pd.DataFrame) -> str:
    """A file's name made from the identity of the rows it holds (KEYS, in order): the same rows written again (a
    retry after a failure that came once the file was already in view: the folder's fsync, a later day's file)
    take the same name and replace the file, never doubling a row."""
    digest = hashlib.sha256(kind.encode())
    for column in KEYS[kind]:
        values = rows[column].map(str) if column in rows else pd.Series([""] * len(rows))
        digest.update("\x1f".join(values).encode())
        digest.update(b"\x1e")
    return digest.hexdigest()[:32]


def append(ws: Workspace, kind: str, frame: pd.DataFrame, replica: str | None = None) -> list[Path]:
    """Write rows as one file per day they fall on (hidden name, fsync, rename, fsync the folder); returns the
    files. Raises OSError when the disk refuses: the caller keeps the rows and may write them again (the files are
    named by their rows, so what was already in view is replaced, not doubled)."""
    if frame.empty:
        return []
    name = replica_name(replica)
    days = pd.to_datetime(frame["ts"]).dt.strftime("%Y-%m-%d")
    written = []
    con = _writer()
    for day in sorted(days.unique()):
        folder = partition(ws, kind, name, day)
        folder.mkdir(parents=True, exist_ok=True)
        rows = frame[(days == day).to_numpy()]
        final = folder / f"{content_name(kind, rows)}.parquet"
        tmp = _tmp_for(final)
        con.register("rows", rows)
        try:
            con.execute(f"COPY (SELECT {select_sql(kind, set(frame.columns))} FROM rows) TO {sql_path(tmp)} (FORMAT parquet)")
        finally:
            con.unregister("rows")
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        failpoints.hit("log.file_written")
        os.rename(tmp, final)
        _fsync_dir(folder)
        failpoints.hit("log.file_renamed")
        written.append(final)
    return written


_WRITERS = threading.local()


def _writer() -> duckdb.DuckDBPyConnection:
    """This thread's in-memory connection for writing files (opening one per write cost 20-60 ms of each append)."""
    con = getattr(_WRITERS, "con", None)
    if con is None:
        con = _WRITERS.con = duckdb.connect()
    return con


@dataclass(frozen=True)
class Journal:
    path: Path
    inputs: tuple[str, ...]  # file names in the partition the output replaces
    output: str
    done_at: float | None  # when the output came into view (None: not yet: the inputs are still the data)


def _journals(folder: Path) -> list[Journal]:
    found = []
    for path in folder.glob(".compact-*.json"):
        try:
            body = json.loads(path.read_text())
            found.append(Journal(path, tuple(body["inputs"]), str(body["output"]), body.get("done_at")))
        except (OSError, ValueError, KeyError, TypeError):
            continue  # cut short while written (write_atomic makes that rare): its output never came into view
    return found


def _partitions(ws: Workspace, kind: str) -> Iterator[Path]:
    base = root(ws, kind)
    if not base.is_dir():
        return
    for replica in sorted(base.iterdir()):
        if replica.name.startswith("replica=") and replica.is_dir():
            yield from (d for d in sorted(replica.iterdir()) if d.name.startswith("date=") and d.is_dir())


def visible(ws: Workspace, kind: str) -> list[Path]:
    """The files that are data now: whole files (not hidden), less the inputs of a compaction whose output is in
    view."""
    files: list[Path] = []
    for folder in _partitions(ws, kind):
        names = {n for n in os.listdir(folder) if n.endswith(".parquet") and not n.startswith(".")}
        for journal in _journals(folder):
            if journal.output in names:
                names -= set(journal.inputs)
        files += [folder / n for n in sorted(names)]
    return files


def sql_path(path: Path) -> str:
    """A path as a SQL string literal (COPY and read_parquet take no parameter for it)."""
    return "'" + str(path).replace("'", "''") + "'"


_CHECKED: dict[tuple[str, int, int], str | None] = {}  # (path, size, mtime) -> what is wrong with it (None: nothing)


def fault(path: Path, kind: str, con: duckdb.DuckDBPyConnection | None = None) -> str | None:
    """What makes a file unfit to read as the log's `kind` (not Parquet, other columns), or None. Files never change
    once named, so each is read (its footer only) once per process; `con`, an in-memory connection, serves many
    files (opening one costs 20-60 ms, reading a footer through it under 1 ms)."""
    try:
        st = path.stat()
    except OSError:
        return "gone"
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key not in _CHECKED:
        own = con is None
        con = duckdb.connect() if con is None else con
        try:
            rows = con.execute(f"DESCRIBE SELECT * FROM read_parquet({sql_path(path)}, hive_partitioning = false)").fetchall()
            schema = {str(r[0]): str(r[1]) for r in rows}
            wrong = sorted(set(schema.items()) ^ set(COLUMNS[kind].items()))[:4]
            _CHECKED[key] = f"its columns are not the log's {kind} ({wrong})" if wrong else None
        except duckdb.Error as exc:
            _CHECKED[key] = f"not a readable Parquet file ({str(exc).splitlines()[0][:200]})"
        finally:
            if own:
                con.close()
    return _CHECKED[key]


_SIGNATURE = "name, type, repetition_type, num_children, converted_type, logical_type, duckdb_type"
_SIGNATURES: dict[str, tuple[tuple[object, ...], ...]] = {}


def _signature(con: duckdb.DuckDBPyConnection, kind: str) -> tuple[tuple[object, ...], ...]:
    """The footer's schema of a file this code writes (written once per process, empty, to a temporary folder)."""
    if kind not in _SIGNATURES:
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "reference.parquet"
            con.execute(f"COPY (SELECT {select_sql(kind, set())} LIMIT 0) TO {sql_path(path)} (FORMAT parquet)")
            rows = con.execute(f"SELECT {_SIGNATURE} FROM parquet_schema({sql_path(path)})").fetchall()
        _SIGNATURES[kind] = tuple(tuple(r) for r in rows)
    return _SIGNATURES[kind]


def _faults(files: list[Path], kind: str) -> list[str | None]:
    """fault() of each file. Those not read before are read together (their footers' schemas in one query): a file
    whose schema is the one this code writes is fine; any other, or all of them when one cannot be read, are read one
    at a time to say why. No connection is opened when every file was read before."""
    keys: dict[Path, tuple[str, int, int] | None] = {}
    for f in files:
        try:
            st = f.stat()
            keys[f] = (str(f), st.st_size, st.st_mtime_ns)
        except OSError:
            keys[f] = None
    new = [f for f, key in keys.items() if key is not None and key not in _CHECKED]
    if new:
        con = duckdb.connect()
        try:
            expected = _signature(con, kind)
            for start in range(0, len(new), 1000):
                chunk = new[start : start + 1000]
                try:
                    rows = con.execute(
                        f"SELECT file_name, {_SIGNATURE} FROM parquet_schema([{', '.join(sql_path(f) for f in chunk)}])"
                    ).fetchall()
                except duckdb.Error:
                    rows = []  # one of them is not Parquet: each is read alone below
                found: dict[str, list[tuple[object, ...]]] = {}
                for row in rows:
                    found.setdefault(str(row[0]), []).append(tuple(row[1:]))
                for f in chunk:
                    if tuple(found.get(str(f), ())) == expected:
                        _CHECKED[keys[f]] = None  # type: ignore[index]
                    else:
                        fault(f, kind, con)
        finally:
            con.close()
    return [fault(f, kind) if keys[f] is not None else "gone" for f in files]


def readable(ws: Workspace, kind: str) -> list[Path]:
    """The files in view that can be read as the log's: a damaged or foreign one is left out (check names it)."""
    files = visible(ws, kind)
    return [f for f, why in zip(files, _faults(files, kind), strict=True) if why is None]


def unreadable(ws: Workspace) -> list[Path]:
    """Files in view left out of the log because they cannot be read as the log's (the pages say so; check moves them)."""
    out: list[Path] = []
    for kind in COLUMNS:
        files = visible(ws, kind)
        out += [f for f, why in zip(files, _faults(files, kind), strict=True) if why not in (None, "gone")]
    return out


def view_sql(ws: Workspace, kind: str, table: str) -> str:
    """The table's rows and the files' as one relation (replica: the writing process, NULL for the table's)."""
    return relation_sql(kind, table, readable(ws, kind))


def relation_sql(kind: str, table: str | None, files: list[Path], where: str = "TRUE") -> str:
    """The rows of `table` (None: none) and of `files` that satisfy `where`, as one relation with the view's columns."""
    cols = ", ".join(COLUMNS[kind])
    parts = [f"SELECT {cols}, CAST(NULL AS VARCHAR) AS replica FROM {table} WHERE {where}"] if table else []
    if files:
        listed = ", ".join(sql_path(f) for f in files)
        parts.append(f"SELECT {cols}, replica FROM read_parquet([{listed}], hive_partitioning = true) WHERE {where}")
    return " UNION ALL ".join(parts) or f"SELECT {cols}, CAST(NULL AS VARCHAR) AS replica FROM {table or kind} WHERE FALSE"


def day_of(path: Path) -> str | None:
    """The day a log file's rows fall on (its partition: every writer splits its rows by day), or None."""
    name = path.parent.name
    return name.removeprefix("date=") if re.fullmatch(r"date=\d{4}-\d{2}-\d{2}", name) else None


def create_views(con: duckdb.DuckDBPyConnection, ws: Workspace) -> None:
    """Every reader's relations: log_predictions, log_feedback (temporary views of this connection)."""
    for kind, view in VIEWS.items():
        con.execute(f"CREATE OR REPLACE TEMP VIEW {view} AS {view_sql(ws, kind, kind)}")


def stamp(ws: Workspace) -> tuple[object, ...]:
    """What changes when a file comes into view or leaves it (names and sizes): a cache key without reading one."""
    out: list[object] = []
    for kind in COLUMNS:
        for path in visible(ws, kind):
            try:
                out.append((path.name, path.stat().st_size))
            except OSError:
                out.append((path.name, None))
    return tuple(out)


@contextmanager
def _locked(folder: Path) -> Iterator[bool]:
    """An exclusive hold on a partition's compaction (released by the system if the process dies): True when got."""
    fd = os.open(folder / ".compact.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)


@dataclass
class Compaction:
    partitions: int = 0  # partitions folded
    files_in: int = 0
    files_out: int = 0
    rows: int = 0
    removed: int = 0  # inputs of earlier compactions deleted (their grace over)
    busy: list[str] = field(default_factory=list)  # partitions another compaction held
    removed_files: list[dict[str, object]] = field(default_factory=list)  # what was deleted, and where its rows are


def _count(con: duckdb.DuckDBPyConnection, files: list[Path]) -> int:
    return int(con.execute(f"SELECT count(*) FROM read_parquet([{', '.join(sql_path(f) for f in files)}])").fetchone()[0])


Deleting = Callable[[list[dict[str, object]]], None]  # told which files are about to go (the audit row), first


def _finish(folder: Path, out: Compaction, now: float, grace_s: float, before_delete: Deleting | None) -> None:
    """Journals of this partition: one whose output never came into view is dropped with its temporary; one whose
    output is in view has its inputs deleted once the grace is over (said first to `before_delete`), then goes."""
    for journal in _journals(folder):
        output = folder / journal.output
        if not output.exists():  # cut short before its output came into view (its compactor is gone: we hold the lock)
            for tmp in folder.glob(f".{journal.output}.*.tmp"):
                tmp.unlink()
            journal.path.unlink(missing_ok=True)
            failpoints.hit("log.compact_abandoned")
            continue
        if journal.done_at is None:  # cut between the rename and the journal's second write: its grace starts now
            write_atomic(journal.path, json.dumps({"inputs": list(journal.inputs), "output": journal.output, "done_at": now}))
            continue
        if now - float(journal.done_at) < grace_s:
            continue
        going = [folder / name for name in journal.inputs if (folder / name).exists()]
        records = [{"path": str(p), "into": str(output)} for p in going]
        if records and before_delete is not None:
            before_delete(records)
        for path in going:
            path.unlink()
            out.removed += 1
            failpoints.hit("log.compact_input_deleted")
        out.removed_files += records
        journal.path.unlink(missing_ok=True)
        _fsync_dir(folder)


def compact(
    ws: Workspace,
    kind: str,
    grace_s: float = GRACE_S,
    min_files: int = 2,
    on_progress: Callable[[int, int], None] | None = None,
    before_delete: Deleting | None = None,
) -> Compaction:
    """Fold each partition's files into one (those of a compaction still in its grace stay out of it)."""
    out = Compaction()
    folders = list(_partitions(ws, kind))
    con = duckdb.connect()
    try:
        for i, folder in enumerate(folders):
            with _locked(folder) as got:
                if not got:
                    out.busy.append(str(folder.relative_to(ws.root)))
                    continue
                _finish(folder, out, time.time(), grace_s, before_delete)
                if any(j.output for j in _journals(folder)):
                    continue  # a compaction in its grace: its inputs are still on disk, fold after they go
                inputs = sorted(p for p in folder.glob("*.parquet") if not p.name.startswith(".") and fault(p, kind) is None)
                if len(inputs) >= min_files:
                    _fold(con, folder, inputs, kind, out)
            if on_progress:
                on_progress(i + 1, len(folders))
    finally:
        con.close()
    return out


def _fold(con: duckdb.DuckDBPyConnection, folder: Path, inputs: list[Path], kind: str, out: Compaction) -> None:
    output = f"{uuid.uuid4().hex}.parquet"
    tmp = _tmp_for(folder / output)
    listed = ", ".join(sql_path(f) for f in inputs)
    con.execute(
        f"COPY (SELECT {select_sql(kind)} FROM read_parquet([{listed}], union_by_name = true) ORDER BY ts) "
        f"TO {sql_path(tmp)} (FORMAT parquet)"
    )
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    rows = _count(con, [tmp])
    if rows != _count(con, inputs):  # never: a fold that lost or doubled a row stops here, inputs untouched
        tmp.unlink()
        raise OSError(f"compaction of {folder} wrote {rows} rows from a different number")
    failpoints.hit("log.compact_written")
    journal = folder / f".compact-{output.removesuffix('.parquet')}.json"
    write_atomic(journal, json.dumps({"inputs": [p.name for p in inputs], "output": output, "done_at": None}))
    failpoints.hit("log.compact_journalled")
    os.rename(tmp, folder / output)
    _fsync_dir(folder)
    failpoints.hit("log.compact_renamed")
    write_atomic(journal, json.dumps({"inputs": [p.name for p in inputs], "output": output, "done_at": time.time()}))
    out.partitions += 1
    out.files_in += len(inputs)
    out.files_out += 1
    out.rows += rows


@dataclass(frozen=True)
class FileProblem:
    kind: str  # log_temporary / log_unreadable / log_schema / log_journal
    path: Path
    detail: str


def problems(ws: Workspace) -> list[FileProblem]:
    """What `check` finds among the log's files: a temporary its writer left (never acknowledged: the process
    stopped before the rename), a file that cannot be read as Parquet, a file whose columns are not the log's, and a
    compaction's journal whose output never came into view and whose compactor is gone."""
    found: list[FileProblem] = []
    for kind in COLUMNS:
        for folder in _partitions(ws, kind):
            for tmp in sorted(folder.glob(".*.tmp")):
                if orphan(tmp):
                    found.append(FileProblem("log_temporary", tmp, "a log file cut short while written (its rows were "
                                             "never acknowledged: the process stopped before the rename)"))  # fmt: skip
            with _locked(folder) as got:
                if got:  # no compaction runs here now: a journal without its output was abandoned
                    found += [FileProblem("log_journal", j.path, "a compaction stopped before its output came into "
                                          "view (its inputs are still the data)")
                              for j in _journals(folder) if not (folder / j.output).exists()]  # fmt: skip
            for path in sorted(p for p in folder.glob("*.parquet") if not p.name.startswith(".")):
                if (why := fault(path, kind)) is not None and why != "gone":
                    found.append(FileProblem("log_schema" if why.startswith("its columns") else "log_unreadable", path, why))
    return found
