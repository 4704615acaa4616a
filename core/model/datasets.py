"""The DataBlock, as plain functions: labels, the stored split, item resizing, a pixel cache, augmentation."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torchvision.transforms import v2

from core.data.images import load_rgb, resize_item
from core.errors import UserError
from core.model.config import DataConfig
from core.progress import ProgressFn
from core.workspace import split_ops
from core.workspace.paths import Workspace
from core.workspace.splits import SPLITS


def check_dataset(ws: Workspace, catalog: pd.DataFrame) -> None:
    """Refuse data a classifier cannot learn from, saying what to fix."""
    empty = [d.name for d in sorted(ws.images_dir.iterdir()) if d.is_dir() and d.name not in set(catalog["label"])]
    if empty:
        raise UserError(f"Label folder(s) {', '.join(map(repr, empty))} have no usable images: add some or remove the folder.")
    counts = catalog["label"].value_counts()
    if len(counts) < 2:
        raise UserError(f"Training needs at least two labels; this workspace has {len(counts)}. Gather images of another class.")
    tiny = counts[counts < 2]
    if len(tiny):
        raise UserError(
            f"Label(s) {', '.join(map(repr, tiny.index))} have a single image: training needs at least two "
            "per label (one to learn from, one to check)."
        )


def usable_split(ws: Workspace, catalog: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """The stored split, completed (stored, audited) where a label lacks a training or validation image;
    the sentences say what moved."""
    missing = catalog[~catalog["split"].isin(SPLITS)]
    if len(missing):  # the store gives every image a split on arrival or on opening; say so rather than guess
        raise UserError(f"{len(missing)} image(s) have no split; open the workspace again (a new process) to assign them.")
    return split_ops.complete(ws, catalog)


DECODE_WORKERS: int | None = None  # threads decoding into the cache; None: one per core


def _cache_dir(ws: Workspace, cfg: DataConfig) -> Path:
    return ws.root / "cache" / f"pixels-v2-{cfg.resize}-{cfg.size}"  # v2: decoded at reduced scale


def uncached(ws: Workspace, rows: pd.DataFrame, cfg: DataConfig) -> int:
    """How many of rows a run must decode (not in the pixel cache yet)."""
    try:
        index = json.loads((_cache_dir(ws, cfg) / "index.json").read_text())
    except (OSError, ValueError):
        return len(rows)
    return int((~rows["id"].isin(index)).sum())


class Rows:
    """Decoded images [N, S, S, 3] in the order asked for, read from the memory-mapped pixel cache a batch at a time:
    indexing with an int, a slice or an array of positions gives an array of those images only; `subset` gives
    other Rows without reading any. No copy of every image is ever held (a 20,000-image run held two: 6 GB).

    The cache file is replaced by renaming, never rewritten in place, so the map stays whole while a run reads it."""

    def __init__(self, base: np.ndarray, index: np.ndarray) -> None:
        self.base = base
        self.index = np.asarray(index, np.int64)
        self.shape = (len(self.index), *base.shape[1:])
        self.dtype = base.dtype

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, key: int | slice | np.ndarray) -> np.ndarray:
        picked = self.index[key]
        if np.ndim(picked) == 0:
            return np.array(self.base[int(picked)])
        order = np.argsort(picked, kind="stable")  # read the map in file order, then put the images back in order
        out = np.empty((len(picked), *self.base.shape[1:]), self.base.dtype)
        out[order] = self.base[picked[order]]
        return out

    def __iter__(self) -> Iterator[np.ndarray]:
        for start in range(0, len(self), 256):
            yield from self[start : start + 256]

    def __array__(self, dtype: np.dtype | None = None, copy: bool | None = None) -> np.ndarray:
        whole = self[:]  # every image at once: for small sets and tests
        return whole if dtype is None else whole.astype(dtype)

    def subset(self, keep: np.ndarray) -> Rows:
        """The rows where `keep` (a bool mask, or positions) says, still unread."""
        return Rows(self.base, self.index[keep])


def load_pixels(ws: Workspace, rows: pd.DataFrame, cfg: DataConfig, on_progress: ProgressFn | None = None) -> Rows:
    """Decoded, resized uint8 images [N, S, S, 3] for rows (as `Rows`: read a batch at a time from the cache), cached
    on disk between epochs and runs. Images not in the cache yet are decoded straight into a new cache file (the
    cached ones copied over in chunks): memory never holds every image (before 2026-12 it held three copies while the
    cache grew, then one, plus one per split)."""
    folder = _cache_dir(ws, cfg)
    index: dict[str, int] = {}
    cached = np.zeros((0, cfg.size, cfg.size, 3), np.uint8)
    if (folder / "index.json").is_file() and (folder / "pixels.npy").is_file():
        try:
            index = json.loads((folder / "index.json").read_text())
            cached = np.load(folder / "pixels.npy", mmap_mode="r")
            if cached.shape[1:] != (cfg.size, cfg.size, 3) or max(index.values(), default=-1) >= len(cached):
                raise ValueError("the cache does not match its index")
        except (OSError, ValueError, AttributeError):  # a damaged cache is only a cache: decode again
            index, cached = {}, np.zeros((0, cfg.size, cfg.size, 3), np.uint8)
    missing = [r for r in rows.itertuples() if r.id not in index]
    if missing:
        cached = _extended(ws, folder, cfg, cached, missing, on_progress)
        index.update({r.id: len(index) + i for i, r in enumerate(missing)})
        (folder / "index.tmp.json").write_text(json.dumps(index))
        os.replace(folder / "index.tmp.json", folder / "index.json")
    return Rows(cached, np.array([index[i] for i in rows["id"]], np.int64))


def _extended(
    ws: Workspace, folder: Path, cfg: DataConfig, cached: np.ndarray, missing: list, on_progress: ProgressFn | None
) -> np.ndarray:
    """A new pixels.npy: the cached images, then the missing ones decoded in order, each written as it comes (never
    all held); returned memory-mapped. The old file stays the cache until the new one is whole (rename)."""
    size = cfg.size

    def decode(row: object) -> np.ndarray:
        arr = np.asarray(resize_item(load_rgb(ws.root / row.path, size), size, cfg.resize), np.uint8)
        if arr.shape != (size, size, 3):
            raise ValueError(f"{row.path} decoded to {arr.shape}, not {(size, size, 3)}")  # a bug: never a short cache
        return arr

    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / "pixels.tmp.npy"
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.uint8)), "fortran_order": False,
              "shape": (len(cached) + len(missing), size, size, 3)}  # fmt: skip
    try:
        with open(tmp, "wb") as fh:
            np.lib.format.write_array_header_1_0(fh, header)
            for start in range(0, len(cached), 256):
                fh.write(np.ascontiguousarray(cached[start : start + 256]).tobytes())
            with ThreadPoolExecutor(max_workers=DECODE_WORKERS or os.cpu_count() or 2) as pool:
                for done, arr in enumerate(pool.map(decode, missing), 1):
                    fh.write(arr.tobytes())
                    if on_progress:
                        on_progress(done, len(missing), "decoding and resizing")
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, folder / "pixels.npy")
    return np.load(folder / "pixels.npy", mmap_mode="r")


def augmenter(cfg: DataConfig) -> v2.Compose:
    """Per-image augmentation on uint8 CHW tensors (fastai's aug_transforms, roughly)."""
    steps: list[v2.Transform] = [v2.RandomResizedCrop(cfg.size, scale=(cfg.min_scale, 1.0), antialias=True)]
    if cfg.flip:
        steps.append(v2.RandomHorizontalFlip())
    if cfg.rotate:
        steps.append(v2.RandomRotation(cfg.rotate))
    if cfg.lighting:
        steps.append(v2.ColorJitter(brightness=cfg.lighting, contrast=cfg.lighting))
    return v2.Compose(steps)


def to_batch(pixels: np.ndarray, mean: Sequence[float], std: Sequence[float], augment: v2.Compose | None = None) -> torch.Tensor:
    """uint8 [N, S, S, 3] -> normalised float [N, 3, S, S], each image augmented on its own if asked."""
    x = torch.from_numpy(np.require(pixels, np.uint8, ["C", "W"])).permute(0, 3, 1, 2)  # NHWC: already channels_last; a
    # read-only array (a decoded PIL image) is copied, as torch cannot wrap it without a warning
    if augment is not None:
        x = torch.stack([augment(img) for img in x])
    scale = 1.0 / (255.0 * torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))
    shift = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1) / torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
    x = x.contiguous(memory_format=torch.channels_last).float()  # one pass: uint8 -> float, then in place
    return x.mul_(scale).sub_(shift)


def augmented_views(pixels: np.ndarray, cfg: DataConfig, n: int = 8, seed: int = 0) -> list[np.ndarray]:
    """One image augmented n times, as the model sees it during training (uint8 HWC)."""
    torch.manual_seed(seed)
    aug = augmenter(cfg)
    img = torch.from_numpy(np.ascontiguousarray(pixels)).permute(2, 0, 1)
    return [aug(img).permute(1, 2, 0).numpy() for _ in range(n)]
