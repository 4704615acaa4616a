"""Who may use a workspace database now. Between processes, one at a time: an exclusive `flock` on
`workspace.duckdb.lock`, taken when this process opens its first connection to the database and released when its
last one closes.

DuckDB's own file lock is not enough between processes: with four processes each opening the file, inserting
a row and closing it, 60 times each, DuckDB 2.0.1 lost committed rows in 8 of 10 trials on a busy 2-core machine
(2 to 112 of 240, though every insert had returned) and failed opens with "Could not read enough bytes" (a file
another process was still writing); with this lock around each connection, none in 10 of 10
(tests/test_store.py races our own writers the same way). Within one process, connections share one DuckDB
instance, which orders its own transactions, so the lock is counted, not taken again: a connection opened while
another of this process is open (a nested read, another session) never waits for itself.

A `flock` belongs to the open file, so closing another descriptor of the same file in this process does not drop
it (as it would a POSIX `fcntl` lock), and the kernel drops it when the process dies: a killed holder leaves no
stale lock. Within a process, `serial` lets one transaction run at a time (store.transaction), so what it reads
is still true when it writes."""

from __future__ import annotations

import errno
import fcntl
import os
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class _Hold:
    ready: threading.Condition = field(default_factory=threading.Condition)
    count: int = 0  # connections of this process open now
    fd: int | None = None
    taking: bool = False  # a thread of this process is waiting for the lock


_HOLDS: dict[str, _Hold] = {}
_GUARD = threading.Lock()


class Busy(Exception):
    """Another process held the database past the deadline."""


_SERIAL: dict[str, threading.RLock] = {}


def serial(db_path: Path) -> threading.RLock:
    """The lock that lets one transaction at a time run on this database within this process (store.transaction)."""
    with _GUARD:
        return _SERIAL.setdefault(str(db_path), threading.RLock())


def lock_path(db_path: Path) -> Path:
    return db_path.with_name(db_path.name + ".lock")


def acquire(db_path: Path, deadline: float, waiting: Callable[[], None]) -> None:
    """Hold the database for this process (counted). `waiting` is called once when another process holds it;
    Busy when it is still held at `deadline` (time.monotonic())."""
    with _GUARD:
        hold = _HOLDS.setdefault(str(db_path), _Hold())
    with hold.ready:
        while hold.taking:
            hold.ready.wait()
        if hold.count:
            hold.count += 1
            return
        hold.taking = True
    try:
        fd = _take(lock_path(db_path), deadline, waiting)
    except BaseException:
        with hold.ready:
            hold.taking = False
            hold.ready.notify_all()
        raise
    with hold.ready:
        hold.fd, hold.count, hold.taking = fd, 1, False
        hold.ready.notify_all()


def release(db_path: Path) -> None:
    with _GUARD:
        hold = _HOLDS[str(db_path)]
    with hold.ready:
        hold.count -= 1
        if hold.count == 0 and hold.fd is not None:
            fcntl.flock(hold.fd, fcntl.LOCK_UN)
            os.close(hold.fd)
            hold.fd = None


def _open(path: Path) -> int | None:
    """The lock file's descriptor; None where it cannot be made (a read-only or full disk: nothing can write the
    database there either, and opening it says why)."""
    for flags in (os.O_RDWR | os.O_CREAT, os.O_RDONLY):
        try:
            return os.open(path, flags, 0o644)
        except OSError as exc:
            if exc.errno not in (errno.EROFS, errno.EACCES, errno.ENOSPC, errno.EPERM, errno.EDQUOT):
                raise
    return None


def _take(path: Path, deadline: float, waiting: Callable[[], None]) -> int | None:
    fd = _open(path)
    if fd is None:
        return None
    delay, told = 0.005, False
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            if not told:
                waiting()
                told = True
            if time.monotonic() > deadline:
                os.close(fd)
                raise Busy() from None
            time.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, 0.05)  # short: writers hold the file for milliseconds
