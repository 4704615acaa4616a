"""SIGKILL a real `python -m core train` at seeded moments of its run; after each kill `check --repair` leaves
a consistent workspace (no run says running, no lock, no half-written model registered), and training again
succeeds with every registered model intact."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from core.model import registry
from core.production import check
from core.workspace import store, workspaces
from tests.helpers import fill

pytestmark = pytest.mark.faults
ROOT = Path(__file__).resolve().parents[2]
KILLS = 4
TRAIN = ["--size", "32", "--freeze-epochs", "2", "--epochs", "1", "--batch-size", "8"]


def train(data_root: Path) -> subprocess.Popen:
    env = {**os.environ, "IMAGEDP_DATA_ROOT": str(data_root)}
    cmd = [sys.executable, "-m", "core", "train", "--workspace", "w", *TRAIN, "--json"]
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_a_killed_training_leaves_nothing_a_repair_cannot_fix(data_root: Path) -> None:
    ws = workspaces.resolve("w", create=True)
    fill(ws, {"red": 12, "blue": 12, "green": 12})
    started = time.monotonic()
    first = train(data_root)
    _, err = first.communicate(timeout=600)
    assert first.returncode == 0, err.decode()
    duration = time.monotonic() - started
    rng = np.random.default_rng(0)
    interrupted = 0
    for k in range(KILLS):
        proc = train(data_root)
        time.sleep(float(rng.uniform(0.3, 0.97)) * duration)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        interrupted += proc.returncode == -signal.SIGKILL

        check.check(ws, repair=True)
        assert check.check(ws).problems == (), f"kill {k}"
        with store.connect(ws) as con:
            assert con.execute("SELECT count(*) FROM runs WHERE status = 'running'").fetchone()[0] == 0
        again = train(data_root)
        _, err = again.communicate(timeout=600)
        assert again.returncode == 0, f"kill {k}: {err.decode()}"
        versions = registry.list_versions(ws)["version"].tolist()
        assert all(registry.problems(ws, v) == [] for v in versions), f"kill {k}"
        assert sorted(p.name for p in ws.models_dir.iterdir()) == sorted(versions), f"kill {k}"  # no leftover folder
    assert interrupted >= KILLS // 2, f"only {interrupted} of {KILLS} kills landed before training finished"
