"""Results kept as Parquet files under a cache folder, for the modules that keep what they found in the log (the
labels' map, the labelled requests): one process keeps at a time (a `flock`, released by the system if it dies),
each file is written under a hidden name and renamed, and a file replaced by another is left a while for readers
that listed it before it is deleted.

A cache: anything under cache/ may be deleted at any time; a folder that cannot be written only means nothing is
kept."""

from __future__ import annotations

import fcntl
import os
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb

from core.workspace import log_table

GRACE_S = 600.0  # a replaced kept file stays on disk this long for readers that listed it


@contextmanager
def holding(folder: Path, lock: str) -> Iterator[bool]:
    """The hold on keeping in `folder` (True when this process has it; False when another has, or it cannot be
    written: then look up, keep nothing)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(folder / lock, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:
        yield False
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            held = True
        except OSError:
            held = False
        yield held
    finally:
        os.close(fd)


def write(con: duckdb.DuckDBPyConnection, relation: str, folder: Path, prefix: str) -> Path | None:
    """Keep `relation` (a table or a parenthesised query) as a new file named `prefix` + a fresh id; None when it
    cannot be (then it is computed again next time)."""
    path = folder / f"{prefix}{uuid.uuid4().hex}.parquet"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        con.execute(f"COPY {relation} TO {log_table.sql_path(tmp)} (FORMAT parquet)")
        os.replace(tmp, path)
    except (duckdb.Error, OSError):
        return None
    return path


def current(folder: Path, prefix: str, superseded: dict[str, float], writer: bool) -> list[Path]:
    """The kept files named `prefix`* that were not replaced (`superseded`: name -> when). One replaced more than
    GRACE_S ago is deleted by the process that keeps; `superseded` is left naming only the files still there."""
    now, out = time.time(), []
    for path in sorted(folder.glob(f"{prefix}*.parquet")):
        when = superseded.get(path.name)
        if when is None:
            out.append(path)
        elif writer and now - when > GRACE_S:
            path.unlink(missing_ok=True)
    names = {p.name for p in folder.glob(f"{prefix}*.parquet")}
    for name in [k for k in superseded if k not in names]:
        del superseded[name]
    return out


def readable(con: duckdb.DuckDBPyConnection, *paths: Path) -> bool:
    """Whether every one of `paths` reads as Parquet (a damaged kept file is computed again, never trusted)."""
    try:
        con.execute(f"SELECT count(*) FROM read_parquet([{', '.join(log_table.sql_path(p) for p in paths)}])").fetchone()
    except duckdb.Error:
        return False
    return True
