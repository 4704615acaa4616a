"""The accepted policy: versioned with its model and the utility matrix it was chosen under, used by
Predict, batch scoring and the traffic simulator from the moment it is accepted."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import duckdb

from core.drivetrain import optimizer
from core.drivetrain.decisions import DecideFn, Policy, decider, outcome_dict
from core.drivetrain.levers import Utility, load_utility
from core.drivetrain.optimizer import Search, Validation
from core.workspace import store
from core.workspace.paths import Workspace


@dataclass(frozen=True)
class AcceptedPolicy:
    """A policy accepted for one model version, with the utility matrix it was optimized for."""

    policy_id: str
    version: str
    policy: Policy
    utility: Utility
    seed: int | None = None  # the optimizer's fit/report split; None when accepted without one recorded
    report_ids: tuple[str, ...] = ()  # the validation images the optimizer did not fit on

    def decider(self) -> DecideFn:
        return decider(self.utility, self.policy)


@dataclass(frozen=True)
class PolicyInForce:
    """What decides for a model version now: the accepted policy, else the default one; and the workspace's
    current utility matrix, which may have changed since the acceptance (then: optimize and accept again)."""

    policy: Policy
    utility: Utility
    accepted: AcceptedPolicy | None

    @property
    def policy_id(self) -> str | None:
        return self.accepted.policy_id if self.accepted else None

    @property
    def stale(self) -> bool:
        return self.accepted is not None and self.accepted.utility != self.utility


def accept(ws: Workspace, version: str, policy: Policy, u: Utility, report: dict[str, Any] | None = None) -> str:
    """Version the policy with the model: Predict, batch scoring and the log use it from now on."""
    policy_id = uuid.uuid4().hex[:12]
    with store.transaction(ws) as con:
        con.execute(
            "INSERT INTO policies VALUES (?, ?, ?, ?, ?, ?)",
            [
                policy_id,
                version,
                store.now(),
                json.dumps(asdict(policy)),
                json.dumps(asdict(u)),
                json.dumps(report or {}, default=float),
            ],
        )
        store.audit(ws, "policy_accepted", after={"policy_id": policy_id, "model_version": version, **asdict(policy)}, con=con)
    store.publish_serving(ws)
    return policy_id


def accept_search(ws: Workspace, version: str, search: Search, u: Utility) -> str:
    """Accept an optimizer's policy, stored with what it realised on the held-out half and the interval."""
    report = {
        "held_out": [outcome_dict(o) for o in search.report],
        "interval_per_image": list(search.interval),
        "seed": search.seed,
        "report_ids": list(search.report_ids),
    }
    return accept(ws, version, search.policy, u, report)


def accept_baseline(ws: Workspace, version: str, search: Search, u: Utility, baseline: Policy) -> str:
    """Accept a baseline the optimizer's choice did not beat, recorded with the same fit/report split (the
    baseline fits nothing, so its figures on the report half stay honest)."""
    return accept(ws, version, baseline, u, {"seed": search.seed, "report_ids": list(search.report_ids), "baseline": True})


def accept_optimized(ws: Workspace, version: str, seed: int = 0) -> str:
    """The optimizer's policy for a version under the workspace's utility matrix, accepted (as the Policy page
    does for production; the Rollout page for a candidate before it acts)."""
    v = optimizer.validation(ws, version)
    u = load_utility(ws, v.classes)[0]
    return accept_search(ws, version, optimizer.optimize(u, v, seed=seed), u)


def _utility(data: dict[str, Any]) -> Utility:
    rows = tuple(tuple(r) for r in data["payoff"])
    return Utility(tuple(data["actions"]), tuple(data["costs"]), tuple(data["rows"]), rows, data["refer"], data["unit"])


def active(ws: Workspace, version: str, con: duckdb.DuckDBPyConnection | None = None) -> AcceptedPolicy | None:
    """The latest policy accepted for this model version, if any (through the given connection, else a new one)."""
    with store.reuse(ws, con) as c:
        row = c.execute(
            "SELECT policy_id, policy, utility, report FROM policies WHERE model_version = ? ORDER BY accepted_at DESC LIMIT 1",
            [version],
        ).fetchone()
    return from_row(version, row)


def from_row(version: str, row: Sequence[Any] | None) -> AcceptedPolicy | None:
    """The accepted policy a policies row (policy_id, policy, utility, report) holds, for `version`."""
    if row is None:
        return None
    report = json.loads(row[3] or "{}")
    ids = tuple(report.get("report_ids", ()))
    return AcceptedPolicy(row[0], version, Policy(**json.loads(row[1])), _utility(json.loads(row[2])), report.get("seed"), ids)


def active_decider(ws: Workspace, version: str) -> DecideFn | None:
    """The accepted policy's decision function for the prediction path; None without one (the label is the action)."""
    found = active(ws, version)
    return found.decider() if found else None


def in_force(ws: Workspace, v: Validation) -> PolicyInForce:
    """The accepted policy for v's model (else the default), with the workspace's current utility matrix."""
    found = active(ws, v.version)
    return PolicyInForce(found.policy if found else Policy(), load_utility(ws, v.classes)[0], found)
