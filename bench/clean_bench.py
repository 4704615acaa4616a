"""Planted label errors on real photos: how many does the cleaner rank among the first 30 of their label?

    .venv/bin/python bench/clean_bench.py [--folder ../shared/data/bears_small] [--planted 10]

Copies the folder, moves `planted` images into a wrong label (grizzlies into black, teddies into
grizzly), trains the default recipe, and compares three rankings per label: the trained model's
in-sample loss (what fastai's ImageClassifierCleaner sorts by), out-of-fold loss, and confident
learning. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.data import gather  # noqa: E402
from core.model import cleaning, datasets, runs, weights  # noqa: E402
from core.model.config import DataConfig, TrainConfig  # noqa: E402
from core.workspace import paths, store, workspaces  # noqa: E402


def plant(src: Path, dst: Path, n: int) -> set[str]:
    shutil.copytree(src, dst)
    moves = [("grizzly", "black"), ("teddy", "grizzly")]
    planted = set()
    for k in range(n):
        source, target = moves[k % 2]
        victim = sorted((dst / source).iterdir())[k * 7]
        moved = dst / target / f"planted-{victim.name}"
        victim.rename(moved)
        planted.add(str(moved))
    return planted


def in_sample_loss(ws: paths.Workspace, version: str, scores: object) -> np.ndarray:
    model, meta = weights.load_version(ws, version)
    pre = meta["preprocessing"]
    pixels = datasets.load_pixels(ws, scores, DataConfig(size=pre["size"], resize=pre["resize"]))
    with torch.inference_mode():
        probs = torch.cat(
            [model(datasets.to_batch(pixels[i : i + 64], pre["mean"], pre["std"])).softmax(1) for i in range(0, len(pixels), 64)]
        ).numpy()
    labels = scores["label"].map({c: i for i, c in enumerate(meta["classes"])}).to_numpy()
    return -np.log(np.clip(probs[np.arange(len(labels)), labels], 1e-12, 1))


def found_in_top(scores: object, planted: set[str], column: str, ascending: bool, top: int = 30) -> str:
    """How many planted images rank within the first `top` of their label, and their mean rank (1 = first)."""
    ranks = []
    for _, group in scores.groupby("label"):
        ranked = group.sort_values(column, ascending=ascending, kind="stable").reset_index(drop=True)
        ranks += [i + 1 for i in ranked.index[ranked["source"].isin(planted)]]
    return f"{sum(r <= top for r in ranks)}/{len(planted)} (mean rank {np.mean(ranks):.1f})"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--folder", default=str(Path(__file__).resolve().parents[2] / "shared/data/bears_small"))
    parser.add_argument("--planted", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as root:
        os.environ[workspaces.DATA_ROOT_ENV] = root
        planted = plant(Path(args.folder), Path(root) / "bears", args.planted)
        ws = workspaces.create_workspace("bears")
        gather.ingest(ws, gather.folder_items(Path(root) / "bears")[0])
        start = time.perf_counter()
        summary = runs.train_workspace(ws, TrainConfig())
        trained = time.perf_counter() - start
        start = time.perf_counter()
        scores = cleaning.score_images(ws, summary["version"])
        scored = time.perf_counter() - start
        scores = scores.assign(
            in_sample=in_sample_loss(ws, summary["version"], scores),
            cl_rank=np.where(scores["label_issue"], 1e6, 0) + scores["cl_margin"],
        )
        print(
            f"{len(store.images(ws))} images, {len(planted)} planted label errors; "
            f"trained {summary['version']} in {trained:.1f} s (valid error {summary['valid_error']:.3f}), "
            f"scored out of fold in {scored:.1f} s"
        )
        print(
            f"in the first 30 of their label: in-sample loss {found_in_top(scores, planted, 'in_sample', False)}, "
            f"out-of-fold loss {found_in_top(scores, planted, 'loss', False)}, "
            f"confident learning {found_in_top(scores, planted, 'cl_rank', False)}"
        )
        print(
            f"confident learning flags {int(scores['label_issue'].sum())} images, "
            f"{int(scores.loc[scores['source'].isin(planted), 'label_issue'].sum())} of them planted"
        )


if __name__ == "__main__":
    main()
