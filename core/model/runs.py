"""A training run on a workspace: one at a time, recorded in DuckDB, ending in a registered version."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import socket
import threading
import time
import uuid
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import numpy as np
import pandas as pd

from core.errors import UserError
from core.model import backbones, config, datasets, outputs, registry, scoring, weights
from core.model.config import TrainConfig
from core.model.events import BatchEvent, Cancelled, DoneEvent, EpochMetrics, EventFn, StageEvent, TrainEvent
from core.model.train_report import RunPlan
from core.model.training import TrainResult, fine_tune
from core.workspace import failpoints, locks, store
from core.workspace.paths import TRAINING_LOCK, Workspace

LOCK = TRAINING_LOCK


def acquire_lock(ws: Workspace) -> None:
    """One training per workspace, across threads and processes; a lock left by a dead process is taken over.

    The lock file appears whole or not at all (written under a private name, then hard-linked to its name, which
    fails if the name is taken), so no lock is ever empty. Taking it, and taking over a stale one, happen under a
    guard (flock, released by the kernel when its process dies): two processes that both saw it stale cannot both
    take it."""
    import fcntl

    path = ws.root / LOCK
    info = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    mine = path.with_name(f".{LOCK}.{os.getpid()}.{threading.get_ident()}")
    mine.write_text(json.dumps(info))
    try:
        with open(path.with_name(f".{LOCK}.takeover"), "w") as guard:
            fcntl.flock(guard, fcntl.LOCK_EX)
            for _ in range(2):
                try:
                    os.link(mine, path)
                    return
                except FileExistsError:
                    held = locks.holder(ws)
                if held is not None and locks.is_live(held):
                    raise UserError(
                        f"A training is already running in this workspace (since {held.get('started', '?')}, "
                        f"process {held.get('pid', '?')}); wait for it to finish or cancel it on the Train page."
                    )
                failpoints.hit("lock.taking_over")
                path.unlink(missing_ok=True)  # a dead process's lock file, read under the guard: not user data
        raise UserError(f"Could not take the training lock {path}; remove it if no training is running.")
    finally:
        mine.unlink(missing_ok=True)


def release_lock(ws: Workspace) -> None:
    (ws.root / LOCK).unlink(missing_ok=True)


def auto_size(catalog: pd.DataFrame) -> int:
    """224 px for photos (128 px or more a side, thumbnails included: the pretrained body sees objects at the scale
    it learnt them; bench/recipe_bench.py), smaller images at their own size (a multiple of 32, at least 64)."""
    side = int(np.median(np.minimum(catalog["width"], catalog["height"])))
    return 224 if side >= 128 else int(max(64, side // 32 * 32))


def fingerprint(catalog: pd.DataFrame) -> str:
    text = "\n".join(f"{i}:{label}" for i, label in sorted(zip(catalog["id"], catalog["label"], strict=True)))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _versions() -> dict[str, str]:
    import PIL
    import timm
    import torch
    import torchvision

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "timm": timm.__version__,
        "numpy": np.__version__,
        "pillow": PIL.__version__,
    }


def _record_epoch(ws: Workspace, run_id: str, event: EpochMetrics) -> None:
    with store.connect(ws) as con:
        con.execute(
            "INSERT INTO epochs VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [
                run_id,
                event.epoch,
                event.stage,
                event.train_loss,
                event.valid_loss,
                event.error_rate,
                event.accuracy,
                event.seconds,
            ],
        )


def _finish_run(ws: Workspace, run_id: str, status: str, version: str | None = None, message: str | None = None) -> None:
    with store.connect(ws) as con:
        con.execute(
            "UPDATE runs SET finished_at = ?, status = ?, version = ?, message = ? WHERE run_id = ?",
            [store.now(), status, version, message, run_id],
        )


def defaults(ws: Workspace) -> TrainConfig:
    """The workspace's saved training settings over the built-in defaults."""
    return config_from(store.get_setting(ws, "train_defaults") or {})


def config_of(ws: Workspace, version: str) -> TrainConfig:
    """The settings a version was trained with (its model.json), over the built-in defaults."""
    return config_from(registry.read_meta(ws, version).get("config") or {})


def config_from(saved: dict[str, Any]) -> TrainConfig:
    """A TrainConfig from its JSON form; fields this version of the code does not know are ignored, and the
    permission to train on model labels is never inherited (each run asks for it)."""
    data_fields = {f.name for f in fields(config.DataConfig)}
    train_fields = {f.name for f in fields(TrainConfig)} - {"data", "allow_model_labels"}
    data = replace(config.DataConfig(), **{k: v for k, v in saved.get("data", {}).items() if k in data_fields})
    return replace(TrainConfig(data=data), **{k: v for k, v in saved.items() if k in train_fields})


def save_defaults(ws: Workspace, cfg: TrainConfig) -> None:
    store.set_setting(ws, "train_defaults", asdict(replace(cfg, allow_model_labels=False)))


@dataclass(frozen=True)
class PreparedRun:
    """Settings and data checked for a run: the automatic size filled in, the split stored."""

    config: TrainConfig
    catalog: pd.DataFrame  # usable images with their split (train, valid and test)
    classes: list[str]
    split_notes: tuple[str, ...] = ()  # moves made so that every label has a train and a valid image

    @property
    def fitting(self) -> pd.DataFrame:
        """The images a run may learn from or select on: train and valid, never test."""
        return self.catalog[self.catalog["split"].isin(("train", "valid"))]

    @property
    def test(self) -> pd.DataFrame:
        """Held out for reporting: scored once the model is final, used for nothing else."""
        return self.catalog[self.catalog["split"] == "test"]


def prepare(ws: Workspace, cfg: TrainConfig) -> PreparedRun:
    """Check the config and data, fill in the automatic size, store the split; nothing trains yet."""
    backbones.spec(cfg.backbone)
    catalog = store.images(ws)
    datasets.check_dataset(ws, catalog)
    if not cfg.data.size:
        cfg = replace(cfg, data=replace(cfg.data, size=auto_size(catalog)))
    config.check_train(cfg)
    if cfg.freeze_epochs == 0 and cfg.epochs == 0:  # each within its bounds (check_train): both may not be 0
        raise UserError("Train at least one epoch (frozen or unfrozen).")
    catalog, notes = datasets.usable_split(ws, catalog)
    notes += _model_labels(catalog, cfg)
    return PreparedRun(cfg, catalog, sorted(catalog["label"].unique()), tuple(notes))


def plan_of(ws: Workspace, run: PreparedRun) -> RunPlan:
    """What the run will do, for its overall progress bar: images per split, how many to decode, the epochs."""
    cfg = run.config
    return RunPlan(
        train=int((run.catalog["split"] == "train").sum()),
        valid=int((run.catalog["split"] == "valid").sum()),
        test=len(run.test),
        to_decode=datasets.uncached(ws, run.fitting, cfg.data),
        test_to_decode=datasets.uncached(ws, run.test, cfg.data),
        batch_size=cfg.batch_size,
        freeze_epochs=cfg.freeze_epochs,
        epochs=cfg.epochs,
        auto_epochs=cfg.auto_epochs,
    )


def _model_labels(catalog: pd.DataFrame, cfg: TrainConfig) -> list[str]:
    """Refuse, unless allowed, labels no human confirmed (production images the model labelled itself): training
    on them feeds the model its own mistakes. Allowed, the run says how many it took."""
    fitting = catalog["split"].isin(["train", "valid"])
    mine = int((fitting & (catalog["label_source"] == "model")).sum())
    if not mine:
        return []
    if not cfg.allow_model_labels:
        raise UserError(
            f"{mine} training or validation image(s) carry labels only the model gave (production images no person "
            "confirmed): training on them teaches the model its own mistakes (a feedback loop). Review them on the "
            "Review page, or allow them explicitly (Train page: 'train on model labels too'; CLI: --allow-model-labels)."
        )
    return [f"{mine} image(s) labelled only by the model are in the training data: allowed by this run's settings."]


@dataclass(frozen=True)
class TrainingData:
    """The decoded train and valid images of one run, with their labels and split (no test image)."""

    catalog: pd.DataFrame
    classes: list[str]
    pixels: datasets.Rows  # uint8 [N, S, S, 3], read a batch at a time
    y: np.ndarray  # class index per image
    train: np.ndarray  # bool per image: True for training, False for validation


def _start_run(ws: Workspace, run_id: str, cfg: TrainConfig) -> None:
    with store.connect(ws) as con:
        # we hold the lock, so a run still marked running was cut off (the app or the process stopped)
        con.execute(
            "UPDATE runs SET status = 'interrupted', finished_at = ?, message = 'the process stopped' WHERE status = 'running'",
            [store.now()],
        )
        con.execute(
            "INSERT INTO runs VALUES (?, ?, NULL, 'running', ?, NULL, NULL)", [run_id, store.now(), json.dumps(asdict(cfg))]
        )


def _load_data(ws: Workspace, cfg: TrainConfig, catalog: pd.DataFrame, classes: list[str], emit: EventFn) -> TrainingData:
    emit(StageEvent("cache", "decoding and resizing images (cached for next time)"))
    pixels = datasets.load_pixels(ws, catalog, cfg.data, on_progress=lambda d, t, _: emit(BatchEvent("cache", d, t, None)))
    y = catalog["label"].map({c: i for i, c in enumerate(classes)}).to_numpy()
    return TrainingData(catalog, classes, pixels, y, (catalog["split"] == "train").to_numpy())


@dataclass(frozen=True)
class TestScores:
    """The final model's probabilities on the test images, for reporting only."""

    ids: list[str]
    labels: np.ndarray  # class index; -1 for a label the model was not trained on
    probs: np.ndarray  # [n, classes]

    @property
    def known(self) -> np.ndarray:
        return self.labels >= 0

    @property
    def accuracy(self) -> float | None:
        known = self.known
        return float((self.probs[known].argmax(1) == self.labels[known]).mean()) if known.any() else None


def score_test(ws: Workspace, cfg: TrainConfig, model: Any, rows: pd.DataFrame, classes: list[str], emit: EventFn) -> TestScores:
    """Score the held-out test images with the final model: after every choice is made, so none sees them."""
    index = {c: i for i, c in enumerate(classes)}
    labels = rows["label"].map(lambda label: index.get(label, -1)).to_numpy(np.int64)
    if not len(rows):
        return TestScores([], labels, np.zeros((0, len(classes)), np.float32))
    emit(StageEvent("test", f"scoring {len(rows)} held-out test image(s): reported, never used to choose"))
    pixels = datasets.load_pixels(ws, rows, cfg.data)
    spec = backbones.spec(cfg.backbone)
    probs = scoring.probabilities(model, pixels, spec.mean, spec.std, cfg.batch_size)
    return TestScores(rows["id"].tolist(), labels, probs)


def _version_meta(
    run_id: str, cfg: TrainConfig, data: TrainingData, result: TrainResult, test: TestScores, wall: float
) -> dict[str, Any]:
    """model.json: classes, preprocessing, config, metrics, the images each split used, library versions."""
    best = next(m for m in result.history if m.epoch == result.best_epoch)
    spec = backbones.spec(cfg.backbone)
    return {
        "classes": data.classes,
        "backbone": cfg.backbone,
        "run_id": run_id,
        "created_at": str(store.now()),
        "preprocessing": {"size": cfg.data.size, "resize": cfg.data.resize, "mean": spec.mean, "std": spec.std},
        "config": asdict(cfg),
        "device": result.device,
        "library_versions": _versions(),
        "metrics": {
            "valid_accuracy": best.accuracy,
            "valid_error": best.error_rate,
            "valid_loss": best.valid_loss,
            "test_accuracy": test.accuracy,
            "test_error": None if test.accuracy is None else 1 - test.accuracy,
            "test_images": int(test.known.sum()),
            "best_epoch": result.best_epoch,
            "wall_seconds": wall,
            "history": [asdict(m) for m in result.history],
        },
        "train_ids": data.catalog.loc[data.train, "id"].tolist(),
        "valid_ids": data.catalog.loc[~data.train, "id"].tolist(),
        "test_ids": test.ids,
        "dataset_fingerprint": fingerprint(data.catalog),
    }


def property_reference(data: TrainingData) -> np.ndarray:
    """Image properties of every train and valid image [N, len(PROPERTIES)], measured by the function the
    production log uses, on the same input (the model's resized image, the full size after orientation)."""
    from PIL import Image

    from core.data.images import PROPERTIES, properties

    sizes = zip(data.catalog["width"], data.catalog["height"], strict=True)
    rows = [properties((int(w), int(h)), Image.fromarray(px)) for (w, h), px in zip(sizes, data.pixels, strict=True)]
    return np.array([[row[k] for k in PROPERTIES] for row in rows], np.float64).reshape(len(rows), len(PROPERTIES))


def _reference(result: TrainResult, y_valid: np.ndarray, test: TestScores) -> tuple[outputs.Reference, dict[str, np.ndarray]]:
    """The OOD reference and the arrays monitoring compares production with (validation only), and the
    test probabilities kept apart for reports."""
    logits = scoring.head_logits(result.model, result.valid_features)
    ref = outputs.fit_reference(logits, result.valid_features)
    arrays = {
        "valid_logits": logits.astype(np.float32),
        "valid_probs": result.valid_probs.astype(np.float32),
        "valid_features": result.valid_features.astype(np.float32),
        "valid_labels": y_valid.astype(np.int64),
        "test_probs": test.probs.astype(np.float32),
        "test_labels": test.labels.astype(np.int64),
        **outputs.reference_arrays(ref),
    }
    return ref, arrays


def _register(
    ws: Workspace, run_id: str, cfg: TrainConfig, data: TrainingData, result: TrainResult, test: TestScores, wall: float
) -> dict[str, Any]:
    """Save the version with its metadata and reference; the run's summary."""
    meta = _version_meta(run_id, cfg, data, result, test, wall)
    ref, arrays = _reference(result, data.y[~data.train], test)
    arrays["reference_properties"] = property_reference(data)  # train and valid: every image but test
    arrays["reference_labels"] = data.y.astype(np.int64)  # their classes: the class mix monitoring expects
    meta["reference_property_ids"] = data.catalog["id"].tolist()
    meta["ood"] = {"score": ref.ood_score, "threshold": ref.ood_threshold, "valid_pass": config.VALID_PASS}
    version = weights.save_version(ws, result.model, meta, arrays)
    metrics = meta["metrics"]
    return {
        "version": version,
        "backbone": cfg.backbone,
        "valid_accuracy": metrics["valid_accuracy"],
        "valid_error": metrics["valid_error"],
        "test_accuracy": metrics["test_accuracy"],
        "test_error": metrics["test_error"],
        "test_images": metrics["test_images"],
        "wall_seconds": wall,
        "best_epoch": result.best_epoch,
        "size": cfg.data.size,
        "classes": data.classes,
        "epochs": metrics["history"],
    }


def train_workspace(
    ws: Workspace, cfg: TrainConfig, on_event: EventFn | None = None, cancel: threading.Event | None = None
) -> dict[str, Any]:
    """Train on the workspace's images and register a new version; raises Cancelled if cancelled.
    Whatever stops a run, its row ends finished, cancelled or failed with the reason, never running."""
    emit = on_event or (lambda _: None)
    acquire_lock(ws)
    run_id = uuid.uuid4().hex[:12]
    started = time.perf_counter()
    try:
        run = prepare(ws, cfg)
        cfg, classes = run.config, run.classes
        _start_run(ws, run_id, cfg)
        for note in run.split_notes:
            emit(StageEvent("split", note))
        data = _load_data(ws, cfg, run.fitting, classes, emit)

        def relay(event: TrainEvent) -> None:
            if isinstance(event, EpochMetrics):
                _record_epoch(ws, run_id, event)
            emit(event)

        train, valid = data.train, ~data.train
        train_px, valid_px = data.pixels.subset(train), data.pixels.subset(valid)  # unread: each batch reads its own
        result = fine_tune(train_px, data.y[train], valid_px, data.y[valid], len(classes), cfg, relay, cancel)
        test = score_test(ws, cfg, result.model, run.test, classes, emit)
        summary = _register(ws, run_id, cfg, data, result, test, time.perf_counter() - started)
        summary["split_notes"] = list(run.split_notes)
        _finish_run(ws, run_id, "finished", summary["version"])
        emit(DoneEvent(summary))
        return summary
    except Cancelled:
        _finish_run(ws, run_id, "cancelled", message="cancelled by the user")
        raise
    except UserError as exc:
        _finish_run(ws, run_id, "failed", message=str(exc))
        raise
    except BaseException as exc:  # a bug or an interruption: the row says so, and the error still propagates
        _finish_run(ws, run_id, "failed", message=f"internal error: {type(exc).__name__}: {exc}"[:500])
        raise
    finally:
        release_lock(ws)


def run_history(ws: Workspace) -> pd.DataFrame:
    with store.connect(ws) as con:
        return con.execute(
            "SELECT run_id, started_at, finished_at, status, version, message FROM runs ORDER BY started_at DESC"
        ).df()


def epochs_of(ws: Workspace, run_id: str) -> pd.DataFrame:
    with store.connect(ws) as con:
        return con.execute("SELECT * FROM epochs WHERE run_id = ? ORDER BY epoch", [run_id]).df()
