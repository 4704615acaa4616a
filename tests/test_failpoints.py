"""The failpoints: the list equals the points the code names, every one is crashed at by the fault suite, arming
parses strictly, and a pause or a mark behaves as the fault and race tests rely on."""

from __future__ import annotations

import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from core.model import registry
from core.production import rollout
from core.workspace import failpoints
from core.workspace.paths import Workspace
from tests import helpers
from tests.helpers import derived_version, reached

ROOT = Path(__file__).resolve().parent.parent


def named_in(folder: Path, pattern: str) -> set[str]:
    return {m for p in folder.rglob("*.py") for m in re.findall(pattern, p.read_text())}


def test_the_list_is_the_points_the_code_names_and_the_fault_suite_crashes_at_each() -> None:
    in_code = named_in(ROOT / "core", r'failpoints\.hit\("([\w.]+)"\)')
    assert in_code == set(failpoints.POINTS)
    faults = "\n".join(p.read_text() for p in (ROOT / "tests" / "faults").glob("test_*.py"))
    crashed = {name for name in failpoints.POINTS if re.search(rf'"{re.escape(name)}"', faults)}
    raced = {"store.lock_wait"} if "store.lock_wait" in (ROOT / "tests" / "test_failpoints.py").read_text() else set()
    assert set(failpoints.POINTS) - crashed - raced == set(), "failpoints no test arms"


def test_arming_is_parsed_strictly() -> None:
    assert failpoints.parse("") == {}
    armed = failpoints.parse("gather.renamed:150, rollout.deciding:1:pause=/tmp/x")
    assert armed["gather.renamed"] == failpoints.Armed("gather.renamed", 150)
    assert armed["rollout.deciding"].action == "pause" and armed["rollout.deciding"].path == "/tmp/x"
    for bad in ("gather.nowhere", "gather.staged:x", "gather.staged:1:sleep=3", "gather.staged:1:pause="):
        with pytest.raises(ValueError):
            failpoints.parse(bad)


def test_a_mark_goes_on_and_a_pause_waits_for_its_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mark, gate = tmp_path / "mark", tmp_path / "gate"
    monkeypatch.setattr(failpoints, "_ARMED", failpoints.parse(f"gather.staged:2:mark={mark},gather.committed:1:pause={gate}"))
    monkeypatch.setattr(failpoints, "_HITS", {})
    failpoints.hit("gather.staged")
    assert not mark.exists()  # the first time: not the nth
    failpoints.hit("gather.staged")
    assert mark.exists()
    passed = threading.Event()
    thread = threading.Thread(target=lambda: (failpoints.hit("gather.committed"), passed.set()), daemon=True)
    thread.start()
    reached = gate.with_name("gate.reached")
    while not reached.exists():
        thread.join(0.01)
    assert not passed.is_set()  # held at the point until the gate opens
    gate.touch()
    thread.join(30)
    assert passed.is_set()


def rollout_process(data_root: Path, *args: str, armed: str = "") -> subprocess.Popen:
    import os

    env = {k: v for k, v in os.environ.items() if k != failpoints.ENV} | {"IMAGEDP_DATA_ROOT": str(data_root)}
    if armed:
        env[failpoints.ENV] = helpers.armed(armed)
    return subprocess.Popen([sys.executable, "-m", "core", "rollout", "--workspace", "prod", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip


def test_two_expansions_at_once_promote_once(prod: Workspace, data_root: Path, tmp_path: Path) -> None:
    """The first holds still right after reading the rollout state; the second starts meanwhile and either waits
    for the database (marked) or finishes. Then the first goes on. Read outside the transaction, both promoted and
    it took two rollbacks to return to v1; read inside it, the second finds the expansion done."""
    v1 = registry.production_version(prod)
    v2 = derived_version(prod, v1)
    rollout.start(prod, v2, "shadow")
    gate, waiting = tmp_path / "gate", tmp_path / "waiting"
    first = rollout_process(data_root, "--expand", armed=f"rollout.deciding:1:pause={gate}")
    reached(gate.with_name("gate.reached"), first)
    assert first.poll() is None, first.communicate()[1].decode()
    second = rollout_process(data_root, "--expand", armed=f"store.lock_wait:1:mark={waiting}")
    reached(waiting, second)  # the second waits on the database the first holds (or has finished: the old race)
    gate.touch()
    outs = [p.communicate(timeout=300) for p in (first, second)]
    assert [p.returncode for p in (first, second)] == [0, 0], [o[1].decode() for o in outs]
    with registry.store.connect(prod) as con:
        promotions = con.execute("SELECT count(*) FROM deployments WHERE version = ? AND action = 'promote'", [v2]).fetchone()[0]
        expansions = con.execute("SELECT count(*) FROM rollouts WHERE action = 'expanded'").fetchone()[0]
    assert (promotions, expansions) == (1, 1) and registry.production_version(prod) == v2
    assert rollout.rollback(prod)["production"] == v1  # one rollback returns to v1


def test_two_imports_of_the_same_images_at_once_add_each_once(data_root: Path, tmp_path: Path) -> None:
    """The first holds still with its batch staged and not committed; the second imports the same folder whole;
    then the first commits. It used to fail with a duplicate key (an internal error) and leave its staged files."""
    import json
    import os

    from core.workspace import store, workspaces
    from tests.helpers import colour_image

    folder = tmp_path / "incoming"
    for i in range(30):
        (folder / ("red", "blue", "green")[i % 3]).mkdir(parents=True, exist_ok=True)
        (folder / ("red", "blue", "green")[i % 3] / f"{i}.png").write_bytes(colour_image(i % 3, 500 + i))
    ws = workspaces.resolve("w", create=True)
    args = [sys.executable, "-m", "core", "gather", "--workspace", "w", "--folder", str(folder), "--json"]
    env = {k: v for k, v in os.environ.items() if k != failpoints.ENV} | {"IMAGEDP_DATA_ROOT": str(data_root)}
    gate = tmp_path / "gate"
    first = subprocess.Popen(args, cwd=ROOT, env=env | {failpoints.ENV: helpers.armed(f"gather.staged:1:pause={gate}")},
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    reached(gate.with_name("gate.reached"), first)
    second = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, timeout=300)
    assert second.returncode == 0 and json.loads(second.stdout)["images"] == 30, second.stderr.decode()
    gate.touch()
    out, err = first.communicate(timeout=300)
    assert first.returncode == 0, err.decode()
    assert "added meanwhile by another import" in out.decode()
    catalog = store.images(ws)
    assert len(catalog) == 30 and catalog["sha256"].nunique() == 30
    assert [p.name for p in ws.images_dir.rglob(".*")] == []  # no staged copy left behind
