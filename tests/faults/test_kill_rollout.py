"""SIGKILL real `python -m core rollout` stage changes (shadow, expand, rollback) at seeded moments; after each
kill the production pointer, the rollout state and the audit agree (a change lands whole or not at all), `check`
finds nothing, the workspace opens in the app, and the command run again succeeds without recording it twice."""

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
CYCLES = 3  # each: shadow, expand, rollback


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


def test_killed_stage_changes_land_whole_or_not_at_all(prod: Workspace, data_root: Path) -> None:
    v1 = registry.production_version(prod)
    v2 = derived_version(prod, v1)
    steps = [("--shadow", v2), ("--expand",), ("--rollback",)]
    duration, _ = harness.timed(data_root, "rollout", "--workspace", "prod", "--status")
    tally = harness.Tally("rollout")
    for k in range(CYCLES * len(steps)):
        step = steps[k % len(steps)]
        args = ("rollout", "--workspace", "prod", *step, "--note", f"step {k}")
        before = agree(prod)
        next(harness.kills(data_root, duration, 1, 20 + k, *args, lo=0.5, hi=1.1, tally=tally))
        after = agree(prod)
        harness.repaired(prod, tally)
        harness.opens_in_app(prod)
        if step[0] != "--rollback" or after == before:  # a rollback that landed is not asked for again
            harness.finish(harness.start(data_root, *args))
        again = agree(prod)
        assert again[0] - before[0] == 1, f"step {k}: {again[0] - before[0]} stage changes recorded"
        expected = {"--shadow": (v1, v2), "--expand": (v2, None), "--rollback": (v1, None)}[step[0]]
        active = rollout.current(prod)
        assert (registry.production_version(prod), active.candidate if active else None) == expected, f"step {k}"
    tally.print()
    assert tally.landed >= len(steps), f"only {tally.landed} kills landed before the command finished"
