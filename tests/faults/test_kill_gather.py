"""Crash a real `python -m core gather --folder` at each of its failpoints (and at two seeded moments, as a
cross-check); after each crash `check --repair` (itself crashed once midway) leaves a consistent workspace, and
gathering again completes the import with every source image once: compared with the source files' hashes."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from core.workspace import workspaces
from tests.faults import harness
from tests.helpers import colour_image

pytestmark = pytest.mark.faults
IMAGES = 600  # three catalog batches of 200
CRASHES = [("gather.staged", 1), ("gather.committed", 2), ("gather.renamed", 1), ("gather.renamed", 350),
           ("gather.staged", 3), ("time", 0), ("time", 1)]  # fmt: skip


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("incoming")
    for i in range(IMAGES):
        label = ("red", "blue", "green")[i % 3]
        (root / label).mkdir(exist_ok=True)
        (root / label / f"{i:04d}.png").write_bytes(colour_image(i % 3, 10_000 + i))
    return root


def test_a_crashed_folder_import_loses_nothing_and_duplicates_nothing(
    folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    args = ("gather", "--workspace", "w", "--folder", str(folder), "--json")
    truth = {hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*.png")}  # outside the workspace
    assert len(truth) == IMAGES
    duration, _ = harness.timed(tmp_path / "timing", *args)
    tally = harness.Tally("folder import")
    for k, (point, nth) in enumerate(CRASHES):
        root = tmp_path / f"crash{k}"
        monkeypatch.setenv(workspaces.DATA_ROOT_ENV, str(root))
        if point == "time":
            next(harness.kills(root, duration, 1, 100 + nth, *args, lo=0.2, hi=0.95, tally=tally))
        else:
            harness.crash_at(root, point, *args, nth=nth, tally=tally)
        ws = workspaces.resolve("w", create=True)
        if point == "gather.committed":  # 200 imports to finish: the repair itself is crashed after the 50th
            harness.crash_at(root, "check.repaired", "check", "--workspace", "w", "--repair", nth=50, tally=tally)
        if k % 2:  # the user runs check --repair: repairable leftovers allowed, and repaired
            harness.repaired(ws, tally)
        else:  # the user runs verify, which adopts image files placed by hand: none of ours may look like one
            harness.finish(harness.start(root, "verify", "--workspace", "w"))
        harness.opens_in_app(ws)
        assert json.loads(harness.finish(harness.start(root, *args)))["images"] == IMAGES
        harness.images_match(ws, truth, tally, f"crash {k} at {point}")
        harness.repaired(ws, tally)  # hidden staged files an earlier crash left, if any, go to quarantine
    tally.print()
    assert tally.lost == 0 and tally.doubled == 0
