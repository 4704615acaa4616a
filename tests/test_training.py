"""Training on a tiny synthetic dataset at a small size: versions, cancel, refusals, registry."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from core.data import gather, images
from core.errors import UserError
from core.model import backbones, config, datasets, registry, runs, weights
from core.model.config import DataConfig
from core.model.events import BatchEvent, Cancelled, DoneEvent, EpochMetrics, StageEvent, TrainEvent
from core.workspace import store
from core.workspace.paths import Workspace
from tests.helpers import TINY, fill


@pytest.fixture
def tiny(ws: Workspace) -> Workspace:
    fill(ws, {"red": 8, "blue": 8})
    return ws


def test_offline_weights_pass_the_load_check() -> None:
    top, _ = backbones.check_offline_load()
    assert top == 985  # ImageNet "daisy" for scikit-learn's flower photo


def test_a_run_registers_a_version_that_loads_back_and_predicts_the_same(tiny: Workspace) -> None:
    events: list[TrainEvent] = []
    summary = runs.train_workspace(tiny, TINY, events.append)
    assert summary["version"] == "v1" and summary["valid_accuracy"] == 1.0
    assert [e.stage for e in events if isinstance(e, EpochMetrics)] == ["frozen", "unfrozen"]
    batch = [e for e in events if isinstance(e, BatchEvent) and e.stage == "unfrozen"]
    assert batch[-1].done == batch[-1].total and all(e.eta_s is not None and e.eta_s >= 0 for e in batch)
    assert events[-1] == DoneEvent(summary)
    model, meta = weights.load_version(tiny, "v1")
    reference = registry.load_reference(tiny, "v1")
    catalog = store.images(tiny).set_index("id").loc[meta["valid_ids"]].reset_index()
    pixels = datasets.load_pixels(tiny, catalog, replace(TINY.data, size=meta["preprocessing"]["size"]))
    x = datasets.to_batch(pixels, meta["preprocessing"]["mean"], meta["preprocessing"]["std"])
    with torch.inference_mode():
        probs = model(x).softmax(1).numpy()
    np.testing.assert_allclose(probs, reference["valid_probs"], atol=1e-5)
    assert sorted(p.name for p in (tiny.models_dir / "v1").iterdir()) == [
        "model.json",
        "model.safetensors",
        "reference.safetensors",
    ]
    assert set(meta["train_ids"]).isdisjoint(meta["valid_ids"]) and meta["classes"] == ["blue", "red"]
    assert runs.run_history(tiny)["status"].tolist() == ["finished"]
    assert len(runs.epochs_of(tiny, meta["run_id"])) == 2


@pytest.mark.parametrize(
    "threshold,stages",
    [(0.05, ["frozen"]), (-1.0, ["frozen", "unfrozen", "unfrozen"])],
    ids=["frozen-good-enough", "frozen-short"],
)
def test_automatic_unfrozen_epochs(tiny: Workspace, threshold: float, stages: list[str]) -> None:
    events: list[TrainEvent] = []
    runs.train_workspace(tiny, replace(TINY, epochs=None, auto_threshold=threshold), events.append)
    assert [e.stage for e in events if isinstance(e, EpochMetrics)] == stages
    assert any("unfrozen epoch(s)" in e.message for e in events if isinstance(e, StageEvent))


def test_cancel_leaves_no_version_and_releases_the_lock(tiny: Workspace) -> None:
    cancel = threading.Event()

    def on_event(event: TrainEvent) -> None:
        if isinstance(event, EpochMetrics):
            cancel.set()

    with pytest.raises(Cancelled):
        runs.train_workspace(tiny, TINY, on_event, cancel)
    assert [p.name for p in tiny.models_dir.iterdir()] == []
    assert registry.list_versions(tiny).empty
    assert runs.run_history(tiny)["status"].tolist() == ["cancelled"]
    assert not (tiny.root / runs.LOCK).exists()


def test_an_unexpected_error_leaves_the_run_failed_with_its_reason(tiny: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(runs, "fine_tune", broken)
    with pytest.raises(RuntimeError, match="disk on fire"):
        runs.train_workspace(tiny, TINY)
    history = runs.run_history(tiny)
    assert history["status"].tolist() == ["failed"]
    assert history["message"].iloc[0] == "internal error: RuntimeError: disk on fire"
    assert history["finished_at"].notna().all() and not (tiny.root / runs.LOCK).exists()


def test_one_training_at_a_time(tiny: Workspace) -> None:
    runs.acquire_lock(tiny)
    try:
        with pytest.raises(UserError, match="already running"):
            runs.train_workspace(tiny, TINY)
    finally:
        runs.release_lock(tiny)


def test_a_lock_left_by_a_dead_process_is_taken_over(tiny: Workspace) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (tiny.root / runs.LOCK).write_text(json.dumps({"pid": int(dead.stdout), "host": socket.gethostname()}))
    runs.acquire_lock(tiny)
    assert json.loads((tiny.root / runs.LOCK).read_text())["pid"] == os.getpid()
    runs.release_lock(tiny)


def test_an_empty_lock_blocks_nothing_and_check_names_it(tiny: Workspace) -> None:
    """What a kill between creating and writing the lock (or a full disk) left with the old two-step write."""
    from core.production import check

    (tiny.root / runs.LOCK).write_text("")
    assert [p.kind for p in check.check(tiny).problems] == ["lock"]
    runs.acquire_lock(tiny)
    assert json.loads((tiny.root / runs.LOCK).read_text())["pid"] == os.getpid()
    runs.release_lock(tiny)


HOLDER = """
import sys, time
from pathlib import Path
from core.errors import UserError
from core.model import runs
from core.workspace import workspaces
ws = workspaces.resolve(sys.argv[1])
folder = Path(sys.argv[2])
(folder / f"ready-{sys.argv[3]}").touch()
while not (folder / "go").exists():
    time.sleep(0.002)
try:
    runs.acquire_lock(ws)
except UserError:
    print("refused", flush=True)
    sys.exit(0)
print("held", flush=True)
while not (folder / "release").exists():
    time.sleep(0.01)
runs.release_lock(ws)
"""


def test_six_processes_taking_over_a_stale_lock_at_once_give_it_to_one(tiny: Workspace, tmp_path: Path) -> None:
    dead = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True).stdout)
    root = Path(__file__).resolve().parent.parent
    for trial in range(3):
        folder = tmp_path / f"trial{trial}"
        folder.mkdir()
        (tiny.root / runs.LOCK).write_text(json.dumps({"pid": dead, "host": socket.gethostname()}))
        procs = [subprocess.Popen([sys.executable, "-c", HOLDER, str(tiny.root), str(folder), str(i)], cwd=root,
                                  stdout=subprocess.PIPE, text=True) for i in range(6)]  # fmt: skip
        while len(list(folder.glob("ready-*"))) < 6:
            procs[0].poll()
            threading.Event().wait(0.01)
        (folder / "go").touch()
        said = sorted(p.stdout.readline().strip() for p in procs)  # each holds (if it won) until all have said
        (folder / "release").touch()
        for p in procs:
            p.communicate(timeout=60)
        assert said == ["held"] + ["refused"] * 5, f"trial {trial}: {said}"


def test_a_run_cut_off_is_marked_interrupted(tiny: Workspace) -> None:
    with store.connect(tiny) as con:
        con.execute("INSERT INTO runs VALUES ('old', now(), NULL, 'running', '{}', NULL, NULL)")
    runs.train_workspace(tiny, TINY)
    assert sorted(runs.run_history(tiny)["status"]) == ["finished", "interrupted"]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize(
    "case,message",
    [
        ("one-class", "at least two labels"),
        ("empty-class", "have no usable images"),
        ("single-image-class", "single image"),
        ("unknown-backbone", "Unknown backbone"),
        ("failed-download", "Could not download the ImageNet weights for resnet18"),
        ("no-epochs", "at least one epoch"),
        ("bad-resize", "Resize method"),
    ],
    ids=lambda v: v if isinstance(v, str) and " " not in v else None,
)
def test_refusals_have_messages(ws: Workspace, case: str, message: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    cfg = TINY
    fill(ws, {"red": 4} if case == "one-class" else {"red": 4, "blue": 1 if case == "single-image-class" else 4})
    if case == "empty-class":
        (ws.images_dir / "green").mkdir()
    if case == "unknown-backbone":
        cfg = replace(cfg, backbone="alexnet9000")
    if case == "failed-download":  # a real failed download: a proxy nobody listens on, an empty cache
        monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
        monkeypatch.setenv("https_proxy", f"http://127.0.0.1:{closed_port()}")
        monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{closed_port()}")
        cfg = replace(cfg, backbone="resnet18")
    if case == "no-epochs":
        cfg = replace(cfg, freeze_epochs=0, epochs=0)
    if case == "bad-resize":
        cfg = replace(cfg, data=replace(cfg.data, resize="stretch"))
    with pytest.raises(UserError, match=message):
        runs.train_workspace(ws, cfg)
    assert registry.list_versions(ws).empty and not (ws.root / runs.LOCK).exists()


def test_pixel_cache_is_reused_without_decoding(tiny: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    catalog = store.images(tiny)
    first = datasets.load_pixels(tiny, catalog, DataConfig(size=32))

    def no_decoding(_: Path) -> None:
        raise AssertionError("decoded again")

    monkeypatch.setattr(datasets, "load_rgb", no_decoding)
    np.testing.assert_array_equal(datasets.load_pixels(tiny, catalog.iloc[::-1], DataConfig(size=32)), first[::-1])


@pytest.mark.parametrize("method", config.RESIZE_METHODS)
def test_resize_methods_give_square_images(method: str) -> None:
    img = Image.new("RGB", (100, 50), (255, 255, 255))
    out = images.resize_item(img, 40, method)
    assert out.size == (40, 40)
    corner = out.getpixel((0, 0))
    assert corner == ((0, 0, 0) if method == "pad" else (255, 255, 255))


def test_augmented_views_preview() -> None:
    pixels = np.zeros((32, 32, 3), np.uint8)
    views = datasets.augmented_views(pixels, DataConfig(size=32), n=8)
    assert len(views) == 8 and all(v.shape == (32, 32, 3) and v.dtype == np.uint8 for v in views)


def test_promote_rollback_and_class_mismatch(tiny: Workspace) -> None:
    runs.train_workspace(tiny, TINY)
    runs.train_workspace(tiny, TINY)
    registry.promote(tiny, "v1")
    registry.promote(tiny, "v2")
    assert registry.production_version(tiny) == "v2"
    assert registry.rollback(tiny) == "v1" and registry.production_version(tiny) == "v1"
    with pytest.raises(UserError, match="no earlier production model"):
        registry.rollback(tiny)
    assert registry.list_versions(tiny).set_index("version")["production"].to_dict() == {"v1": True, "v2": False}
    assert registry.compare(tiny, ["v1", "v2"])["valid_accuracy"].tolist() == [1.0, 1.0]
    fill(tiny, {"green": 3})
    with pytest.raises(UserError, match="knows classes"):
        registry.promote(tiny, "v2")
    with pytest.raises(UserError, match="No model version 'v9'"):
        weights.load_version(tiny, "v9")


def test_workspace_training_defaults(tiny: Workspace) -> None:
    assert runs.defaults(tiny).data.flip is True
    gather.add_demo(tiny, ["0"])
    assert runs.defaults(tiny).data.flip is False
    runs.save_defaults(tiny, replace(TINY, epochs=7))
    assert runs.defaults(tiny).epochs == 7 and runs.defaults(tiny).data.size == 32


def test_retraining_a_version_uses_its_own_settings_not_the_workspace_defaults(tiny: Workspace) -> None:
    from core.model import jobs

    trained_with = replace(TINY, lr=3e-3, data=replace(TINY.data, resize="pad"))
    runs.train_workspace(tiny, trained_with)
    runs.save_defaults(tiny, replace(TINY, lr=1e-4))  # the Train page's form moved on since
    assert runs.config_of(tiny, "v1") == trained_with
    job = jobs.retrain(tiny, "v1")
    job.thread.join(timeout=300)
    assert job.status == "finished", job.error
    assert runs.config_of(tiny, "v2") == trained_with
    assert runs.defaults(tiny).lr == 1e-4  # a retrain leaves the workspace defaults alone
    jobs.forget(tiny)


def test_automatic_size_is_224_for_photos_and_the_images_own_size_when_smaller() -> None:
    photos = pd.DataFrame({"width": [275, 300, 4000], "height": [183, 200, 3000]})
    assert runs.auto_size(photos) == 224  # thumbnails too: the pretrained body sees objects at its scale
    assert runs.auto_size(pd.DataFrame({"width": [64, 64], "height": [64, 64]})) == 64
    assert runs.auto_size(pd.DataFrame({"width": [100], "height": [90]})) == 64


def test_the_pixel_cache_grows_by_the_images_not_in_it_and_keeps_those_in_it(ws: Workspace) -> None:
    """Images added after a run are decoded into the cache beside those already there (written one at a time into
    a new cache file, never all held): the cache then gives what decoding everything from nothing gives."""
    fill(ws, {"red": 4, "blue": 4})
    catalog = store.images(ws)
    cfg = DataConfig(size=32)
    half = datasets.load_pixels(ws, catalog.iloc[:3], cfg)
    grown = datasets.load_pixels(ws, catalog, cfg)
    np.testing.assert_array_equal(grown[:3], half)
    folder = datasets._cache_dir(ws, cfg)
    assert np.load(folder / "pixels.npy", mmap_mode="r").shape == (8, 32, 32, 3)
    assert sorted(json.loads((folder / "index.json").read_text()).values()) == list(range(8))
    assert not list(folder.glob("*.tmp*"))
    shutil.rmtree(folder)
    np.testing.assert_array_equal(datasets.load_pixels(ws, catalog, cfg), grown)


@pytest.mark.parametrize("damage", ["truncated-pixels", "index-past-the-pixels"])
def test_a_damaged_pixel_cache_is_decoded_again(ws: Workspace, damage: str) -> None:
    fill(ws, {"red": 3, "blue": 3})
    catalog = store.images(ws)
    cfg = DataConfig(size=32)
    first = np.asarray(datasets.load_pixels(ws, catalog, cfg))  # read now: the damage below rewrites the file in place
    folder = datasets._cache_dir(ws, cfg)
    if damage == "truncated-pixels":
        (folder / "pixels.npy").write_bytes((folder / "pixels.npy").read_bytes()[:100])
    else:
        index = json.loads((folder / "index.json").read_text())
        (folder / "index.json").write_text(json.dumps({k: v + 100 for k, v in index.items()}))
    np.testing.assert_array_equal(datasets.load_pixels(ws, catalog, cfg), first)


def test_pixels_are_read_from_the_cache_a_batch_at_a_time(ws: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    """load_pixels hands out Rows over the memory-mapped cache: a batch reads its images only, in the order asked,
    and a run's train and valid parts reach fine_tune unread (a copy of every image per split was 6 GB at 20,000)."""
    fill(ws, {"red": 4, "blue": 4})
    catalog = store.images(ws)
    cfg = DataConfig(size=32)
    rows = datasets.load_pixels(ws, catalog.iloc[::-1], cfg)
    whole = np.load(datasets._cache_dir(ws, cfg) / "pixels.npy")  # the cache's images, in its own order
    order = [json.loads((datasets._cache_dir(ws, cfg) / "index.json").read_text())[i] for i in catalog["id"][::-1]]
    assert isinstance(rows, datasets.Rows) and rows.shape == (8, 32, 32, 3) and len(rows) == 8
    np.testing.assert_array_equal(rows[1:4], whole[order[1:4]])
    np.testing.assert_array_equal(rows[np.array([6, 0, 6])], whole[[order[6], order[0], order[6]]])
    np.testing.assert_array_equal(rows[2], whole[order[2]])
    np.testing.assert_array_equal(np.stack(list(rows)), whole[order])
    mask = np.arange(8) % 3 == 0
    part = rows.subset(mask)
    assert isinstance(part, datasets.Rows) and len(part) == 3
    np.testing.assert_array_equal(np.asarray(part), whole[np.array(order)[mask]])

    seen: list[type] = []
    real = runs.fine_tune

    def spy(train_px, y_train, valid_px, *rest, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        seen.extend([type(train_px), type(valid_px)])
        return real(train_px, y_train, valid_px, *rest, **kwargs)

    monkeypatch.setattr(runs, "fine_tune", spy)
    runs.train_workspace(ws, replace(TINY, data=replace(TINY.data, size=32)))
    assert seen == [datasets.Rows, datasets.Rows]
