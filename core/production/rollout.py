"""Rollout stages for a candidate version beside production, as the fastai book's "How to avoid disaster" lays
them out: shadow (the candidate scores every request too; logged, never shown or acted on), limited (it acts
on a share of requests chosen by image hash, within a scope the analyst states), expanded (it becomes
production; rollback one click away). The state is the latest row of the `rollouts` table; every change is
also an audit row, with the figures the analyst saw when deciding.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

import duckdb

from core.drivetrain import accepted
from core.drivetrain.accepted import AcceptedPolicy
from core.drivetrain.decisions import DecideFn
from core.errors import UserError
from core.model import registry
from core.production import prediction
from core.production.prediction import Prediction
from core.progress import ProgressFn
from core.workspace import stamps, store
from core.workspace.paths import Workspace

if TYPE_CHECKING:  # torch comes with a model, when one scores
    from core.model.scoring import Predictor

ACTIVE = ("shadow", "limited")  # stages in which a candidate scores beside production
PRODUCTION = "production"  # the stage of production's own predictions in the log


@dataclass(frozen=True)
class Scope:
    """Where a limited candidate acts: a share of requests (by image hash), and only where it is sure enough."""

    share: float = 0.1  # of requests, chosen by image hash: the same image always goes the same way
    min_confidence: float = 0.0  # the candidate acts only at or above this confidence
    in_domain_only: bool = False  # ... and only on inputs it does not flag as out of domain

    def words(self) -> str:
        parts = [f"{self.share:.0%} of requests (by image hash)"]
        if self.min_confidence > 0:
            parts.append(f"where its confidence is at least {self.min_confidence:.0%}")
        if self.in_domain_only:
            parts.append("on in-domain inputs only")
        return ", ".join(parts)


@dataclass(frozen=True)
class Rollout:
    """A candidate beside production now."""

    candidate: str
    stage: str  # shadow / limited
    production: str  # the production version it runs beside
    scope: Scope
    since: datetime


def check_scope(scope: Scope) -> Scope:
    if not 0.0 < scope.share <= 1.0:
        raise UserError(f"The share of requests must be above 0 and at most 1 (got {scope.share}).")
    if not 0.0 <= scope.min_confidence <= 1.0:
        raise UserError(f"The minimum confidence must be between 0 and 1 (got {scope.min_confidence}).")
    return scope


def current(ws: Workspace, con: duckdb.DuckDBPyConnection | None = None) -> Rollout | None:
    """The candidate beside production, if any (through the given connection, else a new one)."""
    with store.reuse(ws, con) as c:
        row = c.execute(
            "SELECT candidate, stage, production, scope, ts FROM rollouts ORDER BY ts DESC, rowid DESC LIMIT 1"
        ).fetchone()
    if row is None or row[1] not in ACTIVE:
        return None
    return Rollout(row[0], row[1], row[2], Scope(**json.loads(row[3] or "{}")), row[4])


def history(ws: Workspace) -> list[dict[str, Any]]:
    """Every stage change, latest first, with the figures recorded at the decision."""
    with store.connect(ws) as con:
        cursor = con.execute("SELECT * FROM rollouts ORDER BY ts DESC, rowid DESC")
        names = [d[0] for d in cursor.description]
        rows = [dict(zip(names, r, strict=True)) for r in cursor.fetchall()]
    return [{**r, "scope": json.loads(r["scope"] or "null"), "figures": json.loads(r["figures"] or "null")} for r in rows]


@contextmanager
def _changing(ws: Workspace) -> Iterator[duckdb.DuckDBPyConnection]:
    """One stage change (its rollouts row, its audit row, a promotion or rollback with it) in one transaction; then
    every process serving predictions is told, and picks it up on its next request."""
    with store.transaction(ws) as con:
        yield con
    stamps.touch_serving(ws)


def _record(
    con: duckdb.DuckDBPyConnection,
    ws: Workspace,
    action: str,
    stage: str,
    candidate: str | None,
    production: str | None,
    scope: Scope | None,
    figures: dict[str, Any] | None,
    note: str,
    before: Rollout | None,
) -> None:
    """A stage change's rollouts row and audit row, on the connection of `_changing`."""
    con.execute(
        "INSERT INTO rollouts VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        [
            store.now(),
            candidate,
            stage,
            production,
            json.dumps(asdict(scope)) if scope else None,
            action,
            json.dumps(figures) if figures is not None else None,
            note or None,
        ],
    )
    store.audit(
        ws,
        f"rollout_{action}",
        before=_state(before),
        after={"candidate": candidate, "stage": stage, "production": production, "scope": asdict(scope) if scope else None},
        detail={"figures": figures, "note": note or None},
        con=con,
    )


def _state(r: Rollout | None) -> dict[str, Any] | None:
    if r is None:
        return None
    return {"candidate": r.candidate, "stage": r.stage, "production": r.production, "scope": asdict(r.scope)}


def _candidate_ok(ws: Workspace, version: str) -> str:
    """A candidate must exist, know the workspace's classes (or the production model's), and not be production."""
    meta = registry.require_intact(ws, version)
    production = registry.production_version(ws)
    if production is None:
        raise UserError("There is no production model yet: promote a version first, then run a candidate beside it.")
    if version == production:
        raise UserError(f"{version} is the production model already: choose another version as the candidate.")
    known = registry.read_meta(ws, production)["classes"]
    if sorted(meta["classes"]) != sorted(known):
        raise UserError(
            f"{version} knows classes {meta['classes']}, production {production} knows {known}: a candidate must "
            "answer the same question."
        )
    return production


def start(
    ws: Workspace, version: str, stage: str, scope: Scope = Scope(), figures: dict[str, Any] | None = None, note: str = ""
) -> Rollout:
    """Put version beside production in shadow or limited (replacing any candidate there now)."""
    if stage not in ACTIVE:
        raise UserError(f"A candidate runs in one of {', '.join(ACTIVE)} (got {stage!r}).")
    production = _candidate_ok(ws, version)
    scope = check_scope(scope) if stage == "limited" else Scope(share=0.0)
    before = current(ws)
    if before is not None and (before.candidate, before.stage, before.scope) == (version, stage, scope):
        return before  # asked again (a command run twice, or after it was killed): nothing changes, nothing recorded
    with _changing(ws) as con:
        _record(con, ws, stage, stage, version, production, scope, figures, note, before)
    return current(ws)  # type: ignore[return-value]


def expand(ws: Workspace, figures: dict[str, Any] | None = None, note: str = "") -> str:
    """The candidate becomes production (a promotion: rollback returns the one before); returns its version."""
    active = current(ws)
    if active is None:
        latest = history(ws)[:1]
        if latest and latest[0]["action"] == "expanded" and latest[0]["candidate"] == registry.production_version(ws):
            return latest[0]["candidate"]  # expanded already (a command run twice, or after it was killed)
        raise UserError("No candidate is in shadow or limited: start one before expanding it (rollout --shadow VERSION).")
    registry.check_classes(ws, registry.require_intact(ws, active.candidate))
    with _changing(ws) as con:  # the promotion and the stage change land together or not at all
        registry.promote_rows(ws, active.candidate, con)
        _record(con, ws, "expanded", "expanded", active.candidate, active.candidate, None, figures, note, active)
    return active.candidate


def rollback(ws: Workspace, note: str = "") -> dict[str, Any]:
    """With a candidate in shadow or limited: stop it (production alone answers again). Without one: production
    returns to the version before the latest promotion (an expansion included)."""
    active = current(ws)
    if active is not None:
        with _changing(ws) as con:
            _record(con, ws, "rolled_back", "ended", active.candidate, active.production, None, None, note, active)
        return {"stopped": active.candidate, "production": active.production}
    before = registry.production_version(ws)
    with _changing(ws) as con:
        restored = registry.rollback_rows(ws, con)
        _record(con, ws, "rolled_back", "ended", before, restored, None, None, note, None)
    return {"stopped": before, "production": restored}


def routed(sha256: str, candidate: str, share: float) -> bool:
    """Whether a limited candidate takes this image: a fixed function of the image's hash and the candidate
    (the same image always goes the same way; another candidate gets another sample)."""
    digest = hashlib.sha256(f"rollout:{candidate}:{sha256}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64 < share


@dataclass(frozen=True)
class Routed:
    """One request after routing: what the user sees, and every prediction to log with its stage."""

    shown: Prediction  # shown and acted on
    logged: tuple[Prediction, Prediction]  # production's and the candidate's, stage and served set


def route(rollout: Rollout, production: Prediction, candidate: Prediction, refer: Sequence[str | None] = (None, None)) -> Routed:
    """Set each prediction's stage and whether it is served: in shadow, production's always; in limited, the
    candidate's where the request is routed to it and within its scope. `refer` holds each model's referral
    action (its accepted policy's), so a referral is marked for the review queue."""
    acts = rollout.stage == "limited" and routed(candidate.sha256, rollout.candidate, rollout.scope.share)
    acts = acts and candidate.confidence >= rollout.scope.min_confidence
    acts = acts and not (rollout.scope.in_domain_only and candidate.ood)
    disagree = production.label != candidate.label
    first = replace(production, stage=PRODUCTION, served=not acts, disagrees=disagree, referred=production.action == refer[0])
    second = replace(candidate, stage=rollout.stage, served=acts, disagrees=disagree, referred=candidate.action == refer[1])
    return Routed(second if acts else first, (first, second))


@dataclass(frozen=True)
class Scored:
    """A set of requests scored as production serves them now."""

    shown: list[Prediction]  # one per readable input: what the user sees and what is acted on
    logged: list[Prediction]  # every prediction made, production's and the candidate's, with its stage
    failed: list[dict[str, str]]


@dataclass(frozen=True)
class Deciders:
    """Each model's accepted decision function and its referral action (None: the label is the action)."""

    production: DecideFn | None = None
    production_refer: str | None = None
    candidate: DecideFn | None = None
    candidate_refer: str | None = None

    @staticmethod
    def of(production: AcceptedPolicy | None, candidate: AcceptedPolicy | None = None) -> Deciders:
        return Deciders(
            production.decider() if production else None,
            production.utility.refer if production else None,
            candidate.decider() if candidate else None,
            candidate.utility.refer if candidate else None,
        )


def score(
    predictor: Predictor,
    candidate: Predictor | None,
    active: Rollout | None,
    items: Sequence[tuple[str, bytes]],
    deciders: Deciders = Deciders(),
    batch_size: int = 32,
    on_progress: ProgressFn | None = None,
    keep_bytes: bool = False,
    defer_properties: bool = False,
) -> Scored:
    """Score requests with production, and with the candidate beside it when one is in shadow or limited (one
    decode per image); route each request; mark referrals, out-of-domain inputs and disagreements for review."""
    if candidate is None or active is None or candidate.version == predictor.version:
        preds, failed = prediction.predict_images(
            predictor, items, batch_size, on_progress, keep_bytes, deciders.production, defer_properties
        )
        preds = [replace(p, referred=p.action == deciders.production_refer) for p in preds]
        return Scored(preds, preds, failed)
    pairs, failed = prediction.predict_pairs(
        predictor,
        candidate,
        items,
        batch_size,
        on_progress,
        keep_bytes,
        (deciders.production, deciders.candidate),
        defer_properties,
    )
    routes = [route(active, p.production, p.candidate, (deciders.production_refer, deciders.candidate_refer)) for p in pairs]
    return Scored([r.shown for r in routes], [p for r in routes for p in r.logged], failed)


def load_candidate(ws: Workspace, production: str) -> tuple[Rollout | None, Predictor | None, Deciders]:
    """What batch scoring and the simulator serve with beside `production`: the rollout now, its candidate ready to
    score (torch), and both models' accepted policies; (None, None, production's policy) when it runs alone."""
    active = current(ws)
    active = active if active is not None and active.candidate != production else None
    deciders = Deciders.of(accepted.active(ws, production), accepted.active(ws, active.candidate) if active else None)
    if active is None:
        return None, None, deciders
    from core.model import scoring

    return active, scoring.load_predictor(ws, active.candidate), deciders
