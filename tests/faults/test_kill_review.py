"""Crash a real `python -m core review --label` inside its transaction, and race two reviewers on one prediction
with the first held at the same point: a crash leaves no label (the queue still holds the item) and labelling again
records it once; the second reviewer waits for the database the first holds, then finds the label and is told
whose it is."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from core.production import review
from core.workspace import failpoints, store, workspaces
from core.workspace.paths import Workspace
from tests.faults import harness
from tests.helpers import log_scored, reached

pytestmark = pytest.mark.faults


def labels(ws: Workspace, prediction_id: str) -> list[tuple[str, str]]:
    with store.connect(ws, read_only=True) as con:
        return con.execute(
            "SELECT label, reviewer FROM log_feedback WHERE prediction_id = ? AND source = 'review'", [prediction_id]
        ).fetchall()


def test_a_killed_label_leaves_none_and_a_second_reviewer_waits_for_the_first(
    prod: Workspace, data_root: Path, tmp_path: Path
) -> None:
    log_scored(prod, 2, ood=True)
    first_item, second_item = review.pending(prod)
    label = ("review", "--workspace", "prod", "--json", "--label")

    tally = harness.Tally("review")
    harness.crash_at(data_root, "review.labelling", *label, first_item.id, "red", "--reviewer", "ana", tally=tally)
    assert labels(prod, first_item.id) == [] and first_item.id in [i.id for i in review.pending(prod)]
    done = json.loads(harness.finish(harness.start(data_root, *label, first_item.id, "red", "--reviewer", "ana")))
    assert done["done"] == {"labelled": first_item.id, "why": "out of domain"} and labels(prod, first_item.id) == [("red", "ana")]
    harness.repaired(prod, tally)

    gate, waiting = tmp_path / "gate", tmp_path / "waiting"
    first = harness.start(data_root, *label, second_item.id, "red", "--reviewer", "ana",
                          env={failpoints.ENV: f"review.labelling:1:pause={gate}"})  # fmt: skip
    reached(gate.with_name("gate.reached"), first)
    assert first.poll() is None, first.communicate()[1].decode()  # held inside its transaction, label written
    second = harness.start(data_root, *label, second_item.id, "blue", "--reviewer", "bo",
                           env={failpoints.ENV: f"store.lock_wait:1:mark={waiting}"})  # fmt: skip
    reached(waiting, second)
    assert waiting.exists(), second.communicate()[1].decode()  # it waits on the database the first holds
    gate.touch()
    outs = [p.communicate(timeout=300) for p in (first, second)]
    assert [p.returncode for p in (first, second)] == [0, 2], [o[1].decode() for o in outs]
    assert "already labelled 'red' by ana" in outs[1][1].decode()
    assert labels(prod, second_item.id) == [("red", "ana")]
    tally.print()


def test_a_killed_undo_or_import_changes_nothing_and_running_it_again_changes_it_once(prod: Workspace, data_root: Path) -> None:
    preds = log_scored(prod, 4, ood=True)
    review.label(prod, preds[0].id, "red", "ana")
    tally = harness.Tally("review undo and import")
    undo = ("review", "--workspace", "prod", "--json", "--undo", "--reviewer", "ana")
    harness.crash_at(data_root, "review.undoing", *undo, tally=tally)
    assert labels(prod, preds[0].id) == [("red", "ana")]  # the label stands: the undo never happened
    harness.repaired(prod, tally)
    assert json.loads(harness.finish(harness.start(data_root, *undo)))["done"]["undone"]["prediction_id"] == preds[0].id
    assert labels(prod, preds[0].id) == [] and actions(prod, "undo review label") == 1

    csv = prod.root.parent / "labels.csv"
    csv.write_text("prediction_id,label\n" + "".join(f"{p.id},blue\n" for p in preds))
    load = ("review", "--workspace", "prod", "--json", "--import", str(csv), "--reviewer", "lab")
    harness.crash_at(data_root, "review.importing", *load, tally=tally)
    assert imported(prod) == 0 and actions(prod, "labels_imported") == 0
    harness.repaired(prod, tally)
    assert json.loads(harness.finish(harness.start(data_root, *load)))["done"]["imported"]["labelled"] == 4
    again = json.loads(harness.finish(harness.start(data_root, *load)))["done"]["imported"]
    tally.doubled += imported(prod) - len(preds)
    assert (again["labelled"], again["unchanged"], imported(prod)) == (0, 4, 4)
    tally.print()
    assert tally.doubled == 0


def test_a_crashed_or_doubled_add_to_data_adds_each_reviewed_image_once(prod: Workspace, data_root: Path, tmp_path: Path) -> None:
    """Reviewed production images join the data through gather's steps: crashed at each, then run again (and two
    runs at once, the first held with its batch staged), every labelled prediction is in the data exactly once, with
    its kept bytes: compared with the labelled predictions and their images, kept outside the workspace."""
    preds = log_scored(prod, 6, ood=True)
    truth = {p.id: hashlib.sha256(p.data).hexdigest() for p in preds}  # outside the workspace
    for p in preds:
        review.label(prod, p.id, "red", "ana")
    add = ("review", "--workspace", "prod", "--json", "--add-to-data")
    tally = harness.Tally("add to data")
    for point, nth in (("gather.staged", 1), ("gather.committed", 1), ("gather.renamed", 3)):
        harness.crash_at(data_root, point, *add, nth=nth, tally=tally)
        harness.repaired(prod, tally)
        harness.opens_in_app(prod)
        harness.finish(harness.start(data_root, *add))
        assert joined(prod, truth, tally) == truth, point
        with store.transaction(prod) as con:  # the next round starts from none of them in the data
            paths = [r[0] for r in con.execute("DELETE FROM images WHERE prediction_id IS NOT NULL RETURNING path").fetchall()]
        for path in paths:
            (prod.root / path).unlink()
    gate = tmp_path / "gate"
    first = harness.start(data_root, *add, env={failpoints.ENV: f"gather.staged:1:pause={gate}"})
    reached(gate.with_name("gate.reached"), first)
    harness.finish(harness.start(data_root, *add))
    gate.touch()
    harness.finish(first)
    assert joined(prod, truth, tally) == truth and [p.name for p in prod.images_dir.rglob(".*")] == []
    assert workspaces.resolve("prod") == prod
    harness.repaired(prod, tally)
    tally.print()
    assert tally.lost == 0 and tally.doubled == 0


def joined(ws: Workspace, truth: dict[str, str], tally: harness.Tally) -> dict[str, str]:
    """prediction id -> sha256 of the usable images that came from those predictions, whose files hold those bytes;
    lost and doubled are counted against the truth."""
    frame = store.images(ws)
    frame = frame[frame["prediction_id"].isin(list(truth))]
    tally.doubled += len(frame) - frame["prediction_id"].nunique()
    found = {r.prediction_id: r.sha256 for r in frame.itertuples()
             if hashlib.sha256((ws.root / r.path).read_bytes()).hexdigest() == r.sha256}  # fmt: skip
    tally.lost += len(set(truth) - set(found))
    return found


def actions(ws: Workspace, action: str) -> int:
    return int((store.audit_log(ws, limit=100_000)["action"] == action).sum())


def imported(ws: Workspace) -> int:
    with store.connect(ws, read_only=True) as con:
        return con.execute("SELECT count(*) FROM log_feedback WHERE source = 'import'").fetchone()[0]
