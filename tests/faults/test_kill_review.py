"""Crash a real `python -m core review --label` inside its transaction, and race two reviewers on one prediction
with the first held at the same point: a crash leaves no label (the queue still holds the item) and labelling again
records it once; the second reviewer waits for the database the first holds, then finds the label and is told
whose it is."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from core.production import review
from core.workspace import failpoints, store
from core.workspace.paths import Workspace
from tests.faults import harness
from tests.helpers import reached
from tests.test_review import log_scored

pytestmark = pytest.mark.faults


def labels(ws: Workspace, prediction_id: str) -> list[tuple[str, str]]:
    with store.connect(ws, read_only=True) as con:
        return con.execute(
            "SELECT label, reviewer FROM feedback WHERE prediction_id = ? AND source = 'review'", [prediction_id]
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
    assert done["done"] == {"labelled": first_item.id} and labels(prod, first_item.id) == [("red", "ana")]
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
