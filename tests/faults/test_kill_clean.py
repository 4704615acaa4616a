"""Crash a process applying a cleaning batch (a core call: the page's Apply button has no command) at each of its
failpoints, and one undoing it midway (and once at a seeded moment, as a cross-check); after each crash `check
--repair` leaves a consistent workspace with no image lost, the workspace opens in the app, applying the same
decisions again finishes the batch once (compared with the decisions, kept outside the workspace), and undo
reverses all of it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from core.errors import UserError
from core.model import cleaning
from core.workspace import store, workspaces
from tests.faults import harness
from tests.helpers import fill

pytestmark = pytest.mark.faults
CRASHES = [("clean.moved", 3), ("clean.applied", 1), ("clean.applied", 60), ("clean.undone", 20), ("time", 0)]
APPLY = """
import json, sys
from core.errors import UserError
from core.model import cleaning
from core.workspace import workspaces
decisions = [cleaning.Decision(**d) for d in json.load(open(sys.argv[1]))]
print(cleaning.apply(workspaces.resolve("w"), decisions))
"""
UNDO = """
from core.model import cleaning
from core.workspace import workspaces
print(cleaning.undo_last(workspaces.resolve("w")))
"""


def test_a_killed_cleaning_batch_loses_nothing_and_finishes_once(data_root: Path, tmp_path: Path) -> None:
    template = workspaces.resolve("w", create=True)
    fill(template, {"red": 50, "blue": 50, "green": 50})
    catalog = store.images(template)
    labels = ["red", "blue", "green"]
    nxt = {label: labels[(i + 1) % 3] for i, label in enumerate(labels)}
    decisions = [
        cleaning.Decision(row.id, "delete") if i % 4 == 0 else cleaning.Decision(row.id, "relabel", nxt[row.label])
        for i, row in enumerate(catalog.itertuples())
        if i % 3 != 2  # a third kept
    ]
    plan = tmp_path / "decisions.json"
    plan.write_text(json.dumps([d.__dict__ for d in decisions]))
    pristine = tmp_path / "pristine"
    shutil.copytree(template.root, pristine)
    duration, _ = harness.timed(data_root, str(plan), code=APPLY)
    shutil.rmtree(template.root)
    shutil.copytree(pristine, template.root)  # the timed run applied the batch: start from before it

    tally = harness.Tally("clean-apply")
    for k, (point, nth) in enumerate(CRASHES):
        if point == "time":
            next(harness.kills(data_root, duration, 1, 1, str(plan), code=APPLY, lo=0.3, hi=0.98, tally=tally))
        elif point == "clean.undone":  # the batch applied whole, then its undo crashed midway; applied again below
            harness.finish(harness.start(data_root, str(plan), code=APPLY))
            harness.crash_at(data_root, point, code=UNDO, nth=nth, tally=tally)
        else:
            harness.crash_at(data_root, point, str(plan), code=APPLY, nth=nth, tally=tally)
        ws = workspaces.resolve("w")
        harness.repaired(ws, tally)
        harness.opens_in_app(ws)
        harness.finish(harness.start(data_root, str(plan), code=APPLY))
        after = store.images(ws, status=None).set_index("id")
        assert len(after) == len(catalog) and set(after["sha256"]) == set(catalog["sha256"]), f"kill {k}"
        for d in decisions:
            row = after.loc[d.image_id]
            assert (row["status"], row["label"] if d.action == "relabel" else None) == (
                "quarantined" if d.action == "delete" else "ok", d.new_label), f"kill {k}: {d}"  # fmt: skip
            assert (ws.root / row["path"]).is_file(), f"kill {k}: {row['path']}"
        assert sorted(str(p.relative_to(ws.root)) for p in ws.images_dir.rglob("*") if p.is_file()) == sorted(
            after.loc[after["status"] == "ok", "path"]), f"kill {k}"  # fmt: skip
        while True:  # undo reverses every change, the interrupted batch's included
            try:
                cleaning.undo_last(ws)
            except UserError:  # there is no cleaning batch left to undo
                break
        undone = store.images(ws, status=None).set_index("id")
        assert (undone.loc[catalog["id"], "label"] == catalog.set_index("id")["label"]).all(), f"kill {k}"
        assert (undone["status"] == "ok").all(), f"kill {k}"
        shutil.rmtree(ws.root)
        shutil.copytree(pristine, ws.root)
    tally.print()
