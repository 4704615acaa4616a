"""SIGKILL a real `python -m core predict` scoring a folder and logging as it goes, at seeded moments; after each
kill every logged row is whole and logged once, every kept image is whole, `check --repair` leaves nothing,
the workspace opens in the app, and predicting again logs each image exactly once more."""

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
IMAGES = 800
KILLS = 5


def logged(ws: Workspace) -> tuple[int, int, int]:
    """Rows in the log, distinct ids, rows with a missing required field."""
    with store.connect(ws) as con:
        return con.execute(
            "SELECT count(*), count(DISTINCT id), count(*) FILTER (WHERE predicted IS NULL OR probs IS NULL "
            "OR request_id IS NULL OR len(probs) <> 3) FROM predictions"
        ).fetchone()


def test_a_killed_batch_prediction_logs_each_image_once(prod: Workspace, data_root: Path, tmp_path: Path) -> None:
    folder = tmp_path / "incoming"
    folder.mkdir()
    for i in range(IMAGES):
        (folder / f"{i:04d}.png").write_bytes(colour_image(i % 3, 70_000 + i))
    store.set_setting(prod, prediction_log.KEEP_IMAGES, True)
    args = ("predict", "--workspace", "prod", str(folder), "--batch-size", "8", "--json")
    duration, out = harness.timed(data_root, *args)
    assert json.loads(out)["logged"] == IMAGES

    tally = harness.Tally("predict")
    previous = IMAGES
    for k in harness.kills(data_root, duration, KILLS, 3, *args, lo=0.4, hi=0.97, tally=tally, progress=lambda: logged(prod)[0]):
        harness.repaired(prod, tally)  # spooled rows, if any, are ingested
        rows, ids, incomplete = logged(prod)
        assert rows == ids and incomplete == 0, f"kill {k}"
        assert previous <= rows <= previous + IMAGES, f"kill {k}: {rows} rows after {previous}"  # this run's, at most once
        for kept in (prod.root / "production").iterdir():  # named by content: a half-written one would not match
            assert not kept.name.startswith("."), f"kill {k}: a temporary file {kept.name} was left"
            assert hashlib.sha256(kept.read_bytes()).hexdigest()[:16] == kept.stem, f"kill {k}: {kept.name}"
        harness.opens_in_app(prod)
        again = json.loads(harness.finish(harness.start(data_root, *args)))
        assert again["logged"] + again["spooled"] == IMAGES and not again["failed"], f"kill {k}"
        rows_after, ids_after, _ = logged(prod)
        assert rows_after == ids_after == rows + IMAGES, f"kill {k}"
        previous = rows_after
    tally.print()
    assert tally.landed >= KILLS // 2, f"only {tally.landed} of {KILLS} kills landed before predict finished"
