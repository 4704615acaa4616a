"""SIGKILL a real `python -m core gather --folder` at seeded random moments of its run; after each kill
`check --repair` leaves a consistent workspace, and gathering again completes the import with no image twice
and none lost."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from core.production import check
from core.workspace import store, workspaces
from tests.helpers import colour_image

pytestmark = pytest.mark.faults
ROOT = Path(__file__).resolve().parents[2]
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


def gather(folder: Path, data_root: Path) -> subprocess.Popen:
    env = {**os.environ, "IMAGEDP_DATA_ROOT": str(data_root)}
    cmd = [sys.executable, "-m", "core", "gather", "--workspace", "w", "--folder", str(folder), "--json"]
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_a_killed_folder_import_loses_nothing_and_duplicates_nothing(folder: Path, tmp_path: Path) -> None:
    started = time.monotonic()
    whole = gather(folder, tmp_path / "timing")
    assert whole.wait(timeout=300) == 0
    duration = time.monotonic() - started  # the whole command, imports included, on this machine now
    rng = np.random.default_rng(0)
    interrupted = 0
    for k in range(KILLS):
        root = tmp_path / f"kill{k}"
        proc = gather(folder, root)
        time.sleep(float(rng.uniform(0.2, 0.95)) * duration)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        os.environ["IMAGEDP_DATA_ROOT"] = str(root)  # the fixture's monkeypatch restores it after the test
        ws = workspaces.resolve("w", create=True)
        interrupted += proc.returncode == -signal.SIGKILL and len(store.images(ws, status=None)) < IMAGES

        if k % 2:  # the user runs check --repair: repairable leftovers allowed, and repaired
            check.check(ws, repair=True)
            assert check.check(ws).problems == (), f"kill {k}"
        else:  # the user runs verify, which adopts image files placed by hand: none of ours may look like one
            assert subprocess.run(
                [sys.executable, "-m", "core", "verify", "--workspace", "w"],
                cwd=ROOT, env={**os.environ, "IMAGEDP_DATA_ROOT": str(root)}, capture_output=True, timeout=300,
            ).returncode == 0  # fmt: skip
        again = gather(folder, root)
        out, err = again.communicate(timeout=300)
        assert again.returncode == 0, err.decode()
        assert json.loads(out)["images"] == IMAGES
        catalog = store.images(ws)
        assert len(catalog) == IMAGES and catalog["sha256"].nunique() == IMAGES, f"kill {k}"  # none lost, none twice
        files = [p for p in ws.images_dir.rglob("*") if p.is_file()]
        assert sorted(str(p.relative_to(ws.root)) for p in files) == sorted(catalog["path"]), f"kill {k}"
        check.check(ws, repair=True)  # hidden staged files an earlier kill left, if any, go to quarantine
        assert check.check(ws).problems == (), f"kill {k}"
    assert interrupted >= KILLS // 2, f"only {interrupted} of {KILLS} kills landed before the import finished"
