"""The random audit sample: a share of served predictions (2% unless the deployment says otherwise) enters the review
queue whatever the model said, so that some labels are chosen by chance and not by the model.

Every label the queue collects otherwise is a hard case (referred, out of domain, disputed): accuracy on them is
accuracy on the hard cases. A request is drawn when a hash of the workspace's stored seed and the request's id falls
below the share: the same request is drawn in every process and on every replay, and the probability it had is
logged with it (`audit_p`), so every estimate can weigh its labels by how likely they were to be asked for.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import duckdb

from core import bounds
from core.workspace import store
from core.workspace.paths import Workspace

AUDIT_SHARE = "audit_share"  # deployment setting: the share of served predictions drawn for the audit
DEFAULT_SHARE = 0.02


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
    return sampling_of(store.get_settings(ws, (AUDIT_SHARE, store.AUDIT_SEED), con))


def sampling_of(values: dict[str, object]) -> Sampling:
    """The sampling the workspace's setting values (key -> value) set."""
    share = values.get(AUDIT_SHARE)
    return Sampling(DEFAULT_SHARE if share is None else float(share), str(values.get(store.AUDIT_SEED) or ""))  # type: ignore[arg-type]


def current(ws: Workspace) -> Sampling:
    """The sampling in force, as the deployment snapshot says (a stat per call, no connection). A workspace never
    published is published first; when that cannot be (the database busy past its wait, damaged), those predictions
    are logged with audit_p 0 (never drawn, and said so) rather than not logged."""
    snap = store.deployed(ws)
    return OFF if snap is None else sampling_of(snap.settings)


def set_share(ws: Workspace, share: float) -> float:
    """Change the audit share (0 turns the audit off; at most half of the traffic). Recorded in the audit log."""
    share = bounds.check("audit_share", share, "the audit share")
    before = read(ws).share
    store.set_setting(ws, AUDIT_SHARE, share)
    store.audit(ws, "audit share set", None, before, share)
    return share
