"""A file that changes whenever what the Predict page serves changes (settings, accepted policies), so that
any process caching them can tell without opening the database: a stat, not a connection."""

from __future__ import annotations

import os
import time

from core.workspace.paths import Workspace, write_atomic

SERVING_STAMP = "serving.stamp"  # replaced after every write that changes what the Predict page serves


def touch_serving(ws: Workspace) -> None:
    """Tell every process that caches the serving settings to read them again (a new file, so a new inode)."""
    write_atomic(ws.root / SERVING_STAMP, f"{time.time_ns()}\n")  # a new file, so a new inode


def serving_stamp(ws: Workspace) -> tuple[int, int] | None:
    """The stamp's identity: changes whenever touch_serving runs, in any process; None before the first."""
    try:
        st = os.stat(ws.root / SERVING_STAMP)
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns
