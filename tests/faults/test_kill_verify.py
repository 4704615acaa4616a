"""Crash a real `python -m core verify` (quarantining broken files, adopting files placed by hand) at each of its
failpoints (and at two seeded moments, as a cross-check); running it again finishes the work once: every broken
file quarantined with its row, every file placed by hand cataloged exactly once, nothing lost; then `check` finds
nothing and the workspace opens in the app."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from core.workspace import store, workspaces
from tests.faults import harness
from tests.helpers import colour_image, fill

pytestmark = pytest.mark.faults
CRASHES = [("verify.moved", 1), ("verify.moved", 20), ("verify.adopted", 1), ("verify.adopted", 100), ("time", 2), ("time", 3)]
BROKEN = 30
BY_HAND = 120


def test_a_killed_verify_finishes_once_when_run_again(data_root: Path, tmp_path: Path) -> None:
    template = workspaces.resolve("w", create=True)
    fill(template, {"red": 60, "blue": 60, "green": 60})
    catalog = store.images(template)
    broken = catalog.iloc[::6][:BROKEN]
    for path in broken["path"]:
        (template.root / path).write_bytes((template.root / path).read_bytes()[:150])  # truncated
    for i in range(BY_HAND):
        (template.images_dir / "blue" / f"by hand {i}.png").write_bytes(colour_image(1, 50_000 + i))
    pristine = tmp_path / "pristine"
    shutil.copytree(template.root, pristine)
    args = ("verify", "--workspace", "w", "--json")
    duration, _ = harness.timed(data_root, *args)
    shutil.rmtree(template.root)
    shutil.copytree(pristine, template.root)

    tally = harness.Tally("verify")
    for k, (point, nth) in enumerate(CRASHES):
        if point == "time":
            next(harness.kills(data_root, duration, 1, nth, *args, lo=0.3, hi=0.98, tally=tally))
        else:
            harness.crash_at(data_root, point, *args, nth=nth, tally=tally)
        ws = workspaces.resolve("w")
        json.loads(harness.finish(harness.start(data_root, *args)))
        after = store.images(ws, status=None).set_index("id")
        assert len(after) == len(catalog) + BY_HAND and after["sha256"].nunique() == len(after), f"kill {k}"
        assert set(after.index[after["status"] == "quarantined"]) == set(broken["id"]), f"kill {k}"
        assert (after["source_kind"] == "disk").sum() == BY_HAND, f"kill {k}"
        assert all((ws.root / p).is_file() for p in after["path"]), f"kill {k}"
        harness.repaired(ws, tally)
        harness.opens_in_app(ws)
        shutil.rmtree(ws.root)
        shutil.copytree(pristine, ws.root)
    tally.print()
