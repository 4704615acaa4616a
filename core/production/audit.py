"""The random audit sample: a share of served predictions (2% unless the deployment says otherwise) enters the review
queue whatever the model said, so that some labels are chosen by chance and not by the model.

Every label the queue collects otherwise is a hard case (referred, out of domain, disputed): accuracy on them is
accuracy on the hard cases. A request is drawn when a hash of the workspace's stored seed and the request's id falls
below the share: the same request is drawn in every process and on every replay, and the probability it had is
logged with it (`audit_p`), so every estimate can weigh its labels by how likely they were to be asked for.
"""

from __future__ import annotations

import hashlib
import threading
import time
from dataclasses import dataclass

import duckdb

from core import bounds
from core.errors import UserError
from core.workspace import stamps, store
from core.workspace.paths import Workspace

AUDIT_SHARE = "audit_share"  # deployment setting: the share of served predictions drawn for the audit
DEFAULT_SHARE = 0.02
MAX_AGE_S = 30.0  # a process reads the setting again at least this often (and whenever the serving stamp changes)


@dataclass(frozen=True)
class Sampling:
    share: float  # the probability each served request has of being drawn
    seed: str  # the workspace's secret: without it nobody can tell which requests will be drawn

    def chosen(self, request_id: str) -> bool:
        return self.share > 0 and bool(self.seed) and draw(self.seed, request_id) < self.share


OFF = Sampling(0.0, "")


def draw(seed: str, request_id: str) -> float:
    """A number in [0, 1) from the seed and the request's id: uniform over requests, fixed for each."""
    digest = hashlib.sha256(f"{seed}:{request_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def read(ws: Workspace, con: duckdb.DuckDBPyConnection | None = None) -> Sampling:
    values = store.get_settings(ws, (AUDIT_SHARE, store.AUDIT_SEED), con)
    share = DEFAULT_SHARE if values[AUDIT_SHARE] is None else float(values[AUDIT_SHARE])
    return Sampling(share, str(values[store.AUDIT_SEED] or ""))


_CACHE: dict[str, tuple[object, float, Sampling]] = {}
_GUARD = threading.Lock()


def current(ws: Workspace) -> Sampling:
    """The sampling in force, read again when the serving stamp changes (a stat, not a connection). When the
    database cannot be read (busy past its wait, damaged), the last one read; before any, none: those predictions
    are logged with audit_p 0 (never drawn, and said so) rather than not logged."""
    key, stamp, now = str(ws.root), stamps.serving_stamp(ws), time.monotonic()
    with _GUARD:
        held = _CACHE.get(key)
    if held is not None and held[0] == stamp and now - held[1] < MAX_AGE_S:
        return held[2]
    try:
        aged = held is not None and held[0] == stamp  # only its age: read again if the database is free, else go on
        sampling = store.read_if_free(ws, lambda: read(ws)) if aged else read(ws)
    except (UserError, duckdb.Error):
        return held[2] if held is not None else OFF
    if sampling is None and held is not None:
        with _GUARD:
            _CACHE[key] = (stamp, now - MAX_AGE_S + store.BUSY_RETRY_S, held[2])  # tried again a little later
        return held[2]
    with _GUARD:
        _CACHE[key] = (stamp, now, sampling)
    return sampling


def set_share(ws: Workspace, share: float) -> float:
    """Change the audit share (0 turns the audit off; at most half of the traffic). Recorded in the audit log."""
    share = bounds.check("audit_share", share, "the audit share")
    before = read(ws).share
    store.set_setting(ws, AUDIT_SHARE, share)
    store.audit(ws, "audit share set", None, before, share)
    return share
