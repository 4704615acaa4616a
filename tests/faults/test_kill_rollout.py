"""Crash real `python -m core rollout` stage changes (shadow, expand, rollback) and `models --promote/--rollback` at
each of their failpoints (before, inside and after the transaction); after each crash the production pointer, the
rollout state and the audit agree (a change lands whole or not at all), `check` finds nothing, the workspace opens
in the app, and the command run again succeeds without recording it twice: the production version and stage are
compared with the ones expected, kept outside the workspace."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.model import registry
from core.production import rollout
from core.workspace import store
from core.workspace.paths import Workspace
from tests.faults import harness
from tests.helpers import derived_version

pytestmark = pytest.mark.faults
POINTS = ("rollout.deciding", "rollout.changing", "rollout.changed")


def agree(ws: Workspace) -> tuple[int, int]:
    """Rollout rows equal their audit rows, deployments equal theirs, and an expansion is production."""
    with store.connect(ws) as con:
        stages, deployments, stage_audits, deployment_audits = con.execute(
            "SELECT (SELECT count(*) FROM rollouts), (SELECT count(*) FROM deployments), "
            "(SELECT count(*) FROM audit WHERE action LIKE 'rollout_%'), "
            "(SELECT count(*) FROM audit WHERE action IN ('model_promoted', 'model_rolled_back'))"
        ).fetchone()
    assert (stages, deployments) == (stage_audits, deployment_audits)
    latest = rollout.history(ws)[:1]
    if latest and latest[0]["action"] == "expanded":
        assert registry.production_version(ws) == latest[0]["candidate"]
    return stages, deployments


def test_crashed_stage_changes_land_whole_or_not_at_all(prod: Workspace, data_root: Path) -> None:
    v1 = registry.production_version(prod)
    v2 = derived_version(prod, v1)
    steps = [("--shadow", v2), ("--expand",), ("--rollback",)]
    tally = harness.Tally("rollout")
    for k in range(len(POINTS) * len(steps)):
        step, point = steps[k % len(steps)], POINTS[(k + k // len(steps)) % len(POINTS)]  # each point on each step
        args = ("rollout", "--workspace", "prod", *step, "--note", f"step {k}")
        before = agree(prod)
        harness.crash_at(data_root, point, *args, tally=tally)
        after = agree(prod)
        assert (after != before) == (point == "rollout.changed"), f"step {k}: {point}"  # committed only after the commit
        harness.repaired(prod, tally)
        harness.opens_in_app(prod)
        if step[0] != "--rollback" or after == before:  # a rollback that landed is not asked for again
            harness.finish(harness.start(data_root, *args))
        again = agree(prod)
        tally.doubled += max(0, again[0] - before[0] - 1)
        tally.lost += again[0] - before[0] < 1
        assert again[0] - before[0] == 1, f"step {k}: {again[0] - before[0]} stage changes recorded"
        expected = {"--shadow": (v1, v2), "--expand": (v2, None), "--rollback": (v1, None)}[step[0]]
        active = rollout.current(prod)
        assert (registry.production_version(prod), active.candidate if active else None) == expected, f"step {k}"
    for point, args, expected in (  # promotions and rollbacks outside a rollout
        ("registry.promoting", ("--promote", v2), v2),
        ("registry.rolling_back", ("--rollback",), v1),
        ("registry.promoted", ("--promote", v2), v2),
    ):
        before = agree(prod)
        harness.crash_at(data_root, point, "models", "--workspace", "prod", *args, tally=tally)
        assert (agree(prod) != before) == (point == "registry.promoted"), point
        harness.repaired(prod, tally)
        harness.opens_in_app(prod)
        harness.finish(harness.start(data_root, "models", "--workspace", "prod", *args))  # asked again: recorded once
        assert agree(prod)[1] - before[1] == 1 and registry.production_version(prod) == expected, point
    tally.print()
    assert tally.lost == 0 and tally.doubled == 0
