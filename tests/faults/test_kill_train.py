"""Crash a real `python -m core train` at its failpoints (taking over a stale lock, the files written and not
registered, registered and the run not finished) and at seeded moments of its run; after each crash `check --repair` leaves
a consistent workspace (no run says running, no lock, no half-written model registered), and training again
succeeds with every registered model intact."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from core.model import registry
from core.workspace import store, workspaces
from core.workspace.paths import Workspace
from tests.faults import harness
from tests.helpers import fill

pytestmark = pytest.mark.faults
KILLS = 3  # time-based, a cross-check beside the failpoints
TRAIN = ["--size", "32", "--freeze-epochs", "2", "--epochs", "1", "--batch-size", "8"]


def epochs(ws: Workspace) -> int:
    """Runs and epochs recorded: grows as a training goes."""
    return harness.count(ws.db_path, "SELECT (SELECT count(*) FROM runs) + (SELECT count(*) FROM epochs)")


def test_a_killed_training_leaves_nothing_a_repair_cannot_fix(data_root: Path) -> None:
    ws = workspaces.resolve("w", create=True)
    fill(ws, {"red": 12, "blue": 12, "green": 12})
    args = ("train", "--workspace", "w", *TRAIN, "--json")
    duration, _ = harness.timed(data_root, *args)
    tally = harness.Tally("train")
    dead = harness.finish(harness.start(data_root, code="import os; print(os.getpid())")).strip()
    (ws.root / "training.lock").write_text(json.dumps({"pid": int(dead), "host": socket.gethostname()}))
    harness.crash_at(data_root, "lock.taking_over", *args, tally=tally)  # crashed while taking over a stale lock
    harness.repaired(ws, tally)  # the stale lock goes
    assert not (ws.root / "training.lock").exists()
    for point in ("registry.registering", "registry.registered"):
        before = set(registry.list_versions(ws)["version"])
        harness.crash_at(data_root, point, *args, tally=tally)
        harness.repaired(ws, tally)  # an unregistered folder goes to quarantine; a registered run is marked interrupted
        after = set(registry.list_versions(ws)["version"])
        assert len(after - before) == (point == "registry.registered"), point  # registered whole, or not at all
        assert all(registry.problems(ws, v) == [] for v in after), point
        assert sorted(p.name for p in ws.models_dir.iterdir()) == sorted(after), point
    for k in harness.kills(data_root, duration, KILLS, 0, *args, lo=0.55, hi=0.98, tally=tally, progress=lambda: epochs(ws)):
        harness.repaired(ws, tally)
        with store.connect(ws) as con:
            assert con.execute("SELECT count(*) FROM runs WHERE status = 'running'").fetchone()[0] == 0
        harness.opens_in_app(ws)
        harness.finish(harness.start(data_root, *args))
        versions = registry.list_versions(ws)["version"].tolist()
        assert all(registry.problems(ws, v) == [] for v in versions), f"kill {k}"
        assert sorted(p.name for p in ws.models_dir.iterdir()) == sorted(versions), f"kill {k}"  # no leftover folder
    tally.print()
