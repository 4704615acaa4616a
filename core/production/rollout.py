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
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import duckdb

from core.errors import UserError
from core.model import registry
from core.workspace import failpoints, store
from core.workspace.paths import Workspace

if TYPE_CHECKING:  # torch comes with a model, when one scores
    pass

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
    return from_row(row)


def from_row(row: Sequence[Any] | None) -> Rollout | None:
    """The rollout a latest rollouts row (candidate, stage, production, scope, ts) describes: None unless active."""
    if row is None or row[1] not in ACTIVE:
        return None
    ts = datetime.fromisoformat(row[4]) if isinstance(row[4], str) else row[4]
    return Rollout(row[0], row[1], row[2], Scope(**json.loads(row[3] or "{}")), ts)


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
        failpoints.hit("rollout.changing")
    failpoints.hit("rollout.changed")
    store.publish_serving(ws)


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


def _candidate_ok(ws: Workspace, version: str, meta: dict[str, Any], con: duckdb.DuckDBPyConnection) -> str:
    """A candidate (its files checked already: `meta`) must know the production model's classes and not be
    production; read on the stage change's connection."""
    production = registry.production_version(ws, con)
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
    scope = check_scope(scope) if stage == "limited" else Scope(share=0.0)
    meta = registry.require_intact(ws, version)  # the files, before the database is held
    with _changing(ws) as con:  # what is there now, read where the change is written: two at once cannot both act
        before = current(ws, con)
        failpoints.hit("rollout.deciding")
        if before is not None and (before.candidate, before.stage, before.scope) == (version, stage, scope):
            return before  # asked again (a command run twice, or after it was killed): nothing changes, nothing recorded
        production = _candidate_ok(ws, version, meta, con)
        _record(con, ws, stage, stage, version, production, scope, figures, note, before)
    return current(ws)  # type: ignore[return-value]


def expand(ws: Workspace, figures: dict[str, Any] | None = None, note: str = "") -> str:
    """The candidate becomes production (a promotion: rollback returns the one before); returns its version."""
    seen = current(ws)
    if seen is not None:
        registry.check_classes(ws, registry.require_intact(ws, seen.candidate))  # the files, before the database is held
    with _changing(ws) as con:  # the promotion and the stage change land together or not at all
        active = current(ws, con)  # read again where the change is written: two expansions at once promote once
        failpoints.hit("rollout.deciding")
        if active is None:
            latest = _latest(con)
            if latest and latest[0] == "expanded" and latest[1] == registry.production_version(ws, con):
                return latest[1]  # expanded already (a command run twice, at once, or after it was killed)
            raise UserError("No candidate is in shadow or limited: start one before expanding it (rollout --shadow VERSION).")
        if seen is None or active.candidate != seen.candidate:
            raise UserError(f"The candidate changed to {active.candidate} while this ran: run the command again.")
        registry.promote_rows(ws, active.candidate, con)
        _record(con, ws, "expanded", "expanded", active.candidate, active.candidate, None, figures, note, active)
    return active.candidate


def rollback(ws: Workspace, note: str = "") -> dict[str, Any]:
    """With a candidate in shadow or limited: stop it (production alone answers again). Without one: production
    returns to the version before the latest promotion (an expansion included)."""
    with _changing(ws) as con:  # the state read where the change is written: two rollbacks at once are two rollbacks
        active = current(ws, con)
        failpoints.hit("rollout.deciding")
        if active is not None:
            _record(con, ws, "rolled_back", "ended", active.candidate, active.production, None, None, note, active)
            return {"stopped": active.candidate, "production": active.production}
        before = registry.production_version(ws, con)
        restored = registry.rollback_rows(ws, con)
        _record(con, ws, "rolled_back", "ended", before, restored, None, None, note, None)
    return {"stopped": before, "production": restored}


def _latest(con: duckdb.DuckDBPyConnection) -> tuple[str, str] | None:
    """The latest stage change: its action and candidate."""
    return con.execute("SELECT action, candidate FROM rollouts ORDER BY ts DESC, rowid DESC LIMIT 1").fetchone()


def routed(sha256: str, candidate: str, share: float) -> bool:
    """Whether a limited candidate takes this image: a fixed function of the image's hash and the candidate
    (the same image always goes the same way; another candidate gets another sample)."""
    digest = hashlib.sha256(f"rollout:{candidate}:{sha256}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64 < share
