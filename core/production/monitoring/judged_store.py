"""What the drift report found for each completed window (its tests before the adjustment over all windows, and its
estimates), kept under cache/log-windows/ beside the windows' figures.

A window's tests depend only on what they are computed from: the reference (its arrays), the window's sample (its
predictions' ids: a logged row never changes), its counts (images, out-of-domain images, labels and how many agree)
and its class mix. Those are the key each kept result is stored with; a window whose inputs changed (a label given
late, a file folded) is tested again, and one that still grows (it holds today, UTC; blocks of N predictions) is
never kept. The Python tests are most of the report's time (about 0.8 s of it for 30 daily windows); reading them
back takes milliseconds.

A cache: the file may be deleted at any time, and one that cannot be written only means the tests run each time.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd

from core.production.monitoring import window_store
from core.workspace.paths import Workspace, write_atomic

VERSION = 1  # raise when a test, an estimate or what they are computed from changes


def fingerprint(*arrays: Any) -> str:
    """A digest of arrays and frames (the reference's), as the key of what was computed from them."""
    digest = hashlib.sha256()
    for a in arrays:
        if isinstance(a, pd.DataFrame):
            digest.update(repr(list(a.columns)).encode())
        values = pd.util.hash_pandas_object(a).to_numpy() if isinstance(a, pd.DataFrame) else np.asarray(a)
        digest.update(repr((values.shape, values.dtype.str)).encode())
        digest.update(np.ascontiguousarray(values).tobytes() if values.dtype != object else repr(values.tolist()).encode())
    return digest.hexdigest()


def inputs_key(reference: str, counts: Iterable[object], ids: Iterable[str]) -> str:
    """The key of one window's result: the reference's fingerprint, the window's counts and its sample's ids in
    their order (the bootstraps draw by position)."""
    return hashlib.sha256(repr((VERSION, reference, tuple(counts), tuple(map(str, ids)))).encode()).hexdigest()


class Kept:
    """The kept results of one report's windows (one file per filter and reference): get, put, then save."""

    def __init__(self, ws: Workspace, *name: object) -> None:
        tag = hashlib.sha256(repr((VERSION, *name)).encode()).hexdigest()[:16]
        self.path = window_store.folder(ws) / f"drift-tests-{tag}.json"
        try:
            self.entries: dict[str, dict[str, Any]] = dict(json.loads(self.path.read_text()))
        except (OSError, ValueError, TypeError):
            self.entries = {}
        self.used: set[str] = set()
        self.changed = False

    def get(self, window: str, key: str) -> dict[str, Any] | None:
        entry = self.entries.get(window)
        if isinstance(entry, dict) and entry.get("key") == key:
            self.used.add(window)
            return dict(entry["found"])
        return None

    def put(self, window: str, key: str, found: dict[str, Any]) -> None:
        self.entries[window] = {"key": key, "found": found}
        self.used.add(window)
        self.changed = True

    def save(self) -> None:
        """Write what changed, keeping only the windows this report used (a window gone from the log is dropped)."""
        if not self.changed and set(self.entries) <= self.used:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(self.path, json.dumps({w: e for w, e in self.entries.items() if w in self.used}).encode())
        except OSError:
            return  # not kept: tested again next time
