"""Crash a real `python -m core predict` scoring a folder and logging as it goes, at each failpoint of the log: a
kept image written, a batch ready, its rows about to be committed, committed but not fsynced, fsynced but not
acknowledged (and once at a seeded moment, as a cross-check). After each crash every logged row is whole
and logged once, every kept image is whole, `check --repair` leaves nothing, the workspace opens in the app, and
predicting again logs each image exactly once more (its acknowledged ids, once each)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from core.production import prediction_log
from core.workspace import store
from core.workspace.paths import Workspace
from tests.faults import harness
from tests.helpers import colour_image

pytestmark = pytest.mark.faults
IMAGES = 400


def logged(ws: Workspace) -> tuple[int, int, int]:
    """Rows in the log, distinct ids, rows with a missing required field."""
    with store.connect(ws) as con:
        return con.execute(
            "SELECT count(*), count(DISTINCT id), count(*) FILTER (WHERE predicted IS NULL OR probs IS NULL "
            "OR request_id IS NULL OR len(probs) <> 3) FROM log_predictions"
        ).fetchone()


def test_a_crashed_batch_prediction_logs_each_image_once(prod: Workspace, data_root: Path, tmp_path: Path) -> None:
    for name, seed in (("incoming", 70_000), ("unseen", 90_000)):  # unseen: images no earlier run kept
        (tmp_path / name).mkdir()
        for i in range(IMAGES):
            (tmp_path / name / f"{i:04d}.png").write_bytes(colour_image(i % 3, seed + i))
    store.set_setting(prod, prediction_log.KEEP_IMAGES, True)
    args = ("predict", "--workspace", "prod", str(tmp_path / "incoming"), "--batch-size", "8", "--json")
    duration, out = harness.timed(data_root, *args)
    assert json.loads(out)["logged"] == IMAGES

    tally = harness.Tally("predict")
    previous = IMAGES
    crashes = ["log.appending", "log.committed", "log.synced", "log.kept", "log.writing", "time"]
    for k, point in enumerate(crashes):
        if point == "log.kept":  # a kept image is written only once per content: images no run has seen
            args = ("predict", "--workspace", "prod", str(tmp_path / "unseen"), "--batch-size", "8", "--json")
        if point == "time":
            next(harness.kills(data_root, duration, 1, 3, *args, lo=0.4, hi=0.97, tally=tally))
        else:
            nth = {"log.kept": 50, "log.writing": 4, "log.appending": 3, "log.committed": 5, "log.synced": 2}[point]
            harness.crash_at(data_root, point, *args, nth=nth, tally=tally)
        harness.repaired(prod, tally)
        rows, ids, incomplete = logged(prod)
        tally.doubled += rows - ids
        assert rows == ids and incomplete == 0, f"crash {k} at {point}"
        assert previous <= rows <= previous + 2 * IMAGES, f"crash {k}: {rows} rows after {previous}"  # at most once each
        for kept in (prod.root / "production").iterdir():  # named by content: a half-written one would not match
            assert not kept.name.startswith("."), f"crash {k}: a temporary file {kept.name} was left"
            assert hashlib.sha256(kept.read_bytes()).hexdigest()[:16] == kept.stem, f"crash {k}: {kept.name}"
        harness.opens_in_app(prod)
        again = json.loads(harness.finish(harness.start(data_root, *args)))
        assert again["logged"] == IMAGES and not again["failed"], f"crash {k}"
        ids_answered = [p["id"] for p in again["predictions"]]  # acknowledged: the truth kept outside the workspace
        with store.connect(prod) as con:
            acknowledged = con.execute("SELECT count(DISTINCT id) FROM log_predictions WHERE list_contains(?, id)",
                                       [ids_answered]).fetchone()[0]  # fmt: skip
        tally.lost += IMAGES - acknowledged
        rows_after, ids_after, _ = logged(prod)
        assert rows_after == ids_after == rows + IMAGES and acknowledged == IMAGES, f"crash {k}"
        previous = rows_after
    tally.print()
    assert tally.lost == 0 and tally.doubled == 0
