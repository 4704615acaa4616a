"""What the Train page shows before a run: augmented samples and the learning-rate finder, each one call."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from core.model import datasets, runs
from core.model.config import TrainConfig
from core.model.training import LrFinding, lr_find
from core.workspace.paths import Workspace


@dataclass(frozen=True)
class AugmentationPreview:
    """One training image augmented several times, and a batch of training images as the model sees them."""

    one: list[np.ndarray]
    one_label: str
    batch: list[np.ndarray]
    batch_labels: list[str]


def augmentation_preview(ws: Workspace, cfg: TrainConfig, n: int = 8) -> AugmentationPreview:
    """Checks the settings and the data as training would, then augments up to n training images."""
    run = runs.prepare(ws, cfg)
    cfg, train = run.config, run.catalog[run.catalog["split"] == "train"]
    sample = train.sample(min(n, len(train)), random_state=cfg.seed)
    pixels = datasets.load_pixels(ws, sample, cfg.data)
    labels = sample["label"].tolist()
    batch = [datasets.augmented_views(p, cfg.data, 1, seed=i)[0] for i, p in enumerate(pixels)]
    return AugmentationPreview(datasets.augmented_views(pixels[0], cfg.data, n), labels[0], batch, labels)


def find_learning_rate(ws: Workspace, cfg: TrainConfig) -> LrFinding:
    """fastai's learning-rate finder for the head, on the workspace's training images."""
    run = runs.prepare(ws, cfg)
    cfg, classes, train = run.config, run.classes, run.catalog[run.catalog["split"] == "train"]
    y = train["label"].map({c: i for i, c in enumerate(classes)}).to_numpy()
    return lr_find(datasets.load_pixels(ws, train, cfg.data), y, len(classes), cfg)
