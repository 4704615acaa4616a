"""SIGKILL a real `python -m core gather --folder` at seeded random moments of its run; after each kill
`check --repair` leaves a consistent workspace, and gathering again completes the import with no image twice
and none lost."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from core.workspace import store, workspaces
from tests.faults import harness
from tests.helpers import colour_image

pytestmark = pytest.mark.faults
IMAGES = 600  # three catalog batches of 200
KILLS = 6


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("incoming")
    for i in range(IMAGES):
        label = ("red", "blue", "green")[i % 3]
        (root / label).mkdir(exist_ok=True)
        (root / label / f"{i:04d}.png").write_bytes(colour_image(i % 3, 10_000 + i))
    return root


def test_a_killed_folder_import_loses_nothing_and_duplicates_nothing(
    folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    args = ("gather", "--workspace", "w", "--folder", str(folder), "--json")
    duration, _ = harness.timed(tmp_path / "timing", *args)
    tally = harness.Tally("folder import")
    for k in range(KILLS):
        root = tmp_path / f"kill{k}"
        monkeypatch.setenv(workspaces.DATA_ROOT_ENV, str(root))
        next(harness.kills(root, duration, 1, 100 + k, *args, lo=0.2, hi=0.95, tally=tally))
        ws = workspaces.resolve("w", create=True)
        if k % 2:  # the user runs check --repair: repairable leftovers allowed, and repaired
            harness.repaired(ws, tally)
        else:  # the user runs verify, which adopts image files placed by hand: none of ours may look like one
            harness.finish(harness.start(root, "verify", "--workspace", "w"))
        harness.opens_in_app(ws)
        assert json.loads(harness.finish(harness.start(root, *args)))["images"] == IMAGES
        catalog = store.images(ws)
        assert len(catalog) == IMAGES and catalog["sha256"].nunique() == IMAGES, f"kill {k}"  # none lost, none twice
        files = [p for p in ws.images_dir.rglob("*") if p.is_file()]
        assert sorted(str(p.relative_to(ws.root)) for p in files) == sorted(catalog["path"]), f"kill {k}"
        harness.repaired(ws, tally)  # hidden staged files an earlier kill left, if any, go to quarantine
    tally.print()
    assert tally.landed >= KILLS // 2, f"only {tally.landed} of {KILLS} kills landed before the import finished"
