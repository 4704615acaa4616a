"""Crash a real `python -m core split` (drawing a test set, re-splitting) after it has read the catalog and after
it has written its moves, inside its transaction: every image keeps the split it had (a split change lands whole
or not at all), `check --repair` finds nothing, and running it again moves each image once, to the split the rule
gives: compared with splits computed outside the workspace from the images' hashes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from core.workspace import splits, store
from core.workspace.paths import Workspace
from core.workspace.splits import SplitPlan
from tests.faults import harness
from tests.helpers import fill
from tests.test_splits import _age

pytestmark = pytest.mark.faults


def now(ws: Workspace) -> dict[str, str]:
    return store.images(ws, status=None).set_index("id")["split"].to_dict()


def moved(ws: Workspace, action: str) -> int:
    return int((store.audit_log(ws, limit=100_000)["action"] == action).sum())


def test_a_crashed_split_change_moves_all_or_nothing_and_once(ws: Workspace, data_root: Path) -> None:
    fill(ws, {"red": 20, "blue": 20})
    _age(ws, {i: "train" for i in store.images(ws)["id"]})
    store.init_db(ws)
    tally = harness.Tally("split")
    draw = ("split", "--workspace", ws.name, "--draw-test", "0.1", "--json")
    for point in ("split.deciding", "split.changing"):
        before = now(ws)
        harness.crash_at(data_root, point, *draw, tally=tally)
        assert now(ws) == before and moved(ws, "test_drawn") == 0, point
        harness.repaired(ws, tally)
    drawn = json.loads(harness.finish(harness.start(data_root, *draw)))["drawn"]
    by_sha = store.images(ws).set_index("id")["sha256"]
    plan = SplitPlan()  # the default plan: the test set is drawn by the hash position under seed + 1
    expected = sorted(by_sha.index, key=lambda i: splits.position(by_sha[i], plan.seed + 1))[:4]
    tally.lost += len(set(expected) - {i for i, s in now(ws).items() if s == "test"})
    assert drawn == 4 == moved(ws, "test_drawn") and {i for i, s in now(ws).items() if s == "test"} == set(expected)

    resplit = ("split", "--workspace", ws.name, "--resplit", "--seed", "5", "--json")
    for point in ("split.deciding", "split.changing"):
        before = now(ws)
        harness.crash_at(data_root, point, *resplit, tally=tally)
        assert now(ws) == before and moved(ws, "resplit") == 0, point
        harness.repaired(ws, tally)
    harness.finish(harness.start(data_root, *resplit))
    truth = {i: splits.split_for(by_sha[i], SplitPlan(seed=5)) for i in by_sha.index}  # outside the workspace
    wrong = sum(now(ws)[i] != s for i, s in truth.items())
    tally.lost += wrong
    tally.doubled += moved(ws, "resplit") - len(truth)
    assert wrong == 0 and moved(ws, "resplit") == len(truth)
    harness.repaired(ws, tally)
    tally.print()
    assert tally.lost == 0 and tally.doubled == 0
