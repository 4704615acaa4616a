"""Choosing the default training recipe on evidence: several recipes over several split seeds, chosen on
validation error, reported on test error (never chosen on).

    .venv/bin/python bench/recipe_bench.py [--data ../shared/data/bears_small | --demo] [--seeds 1 2 3 4 5]
        [--recipes default frozen2 frozen3 frozen4 unfrozen2 size224] [--valid 0.2 --test 0.2]

Each seed re-splits the same images (train / valid / test by content hash) and trains every recipe on
that split, in-process, with the pixel cache warmed first: the wall times are training only (the first
run's decoding is printed apart). Prints one line per run, then mean and standard deviation per recipe.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

RECIPES = {  # name -> changes to the built-in TrainConfig
    "default": {},
    "frozen2": {"freeze_epochs": 2, "epochs": 0},
    "frozen3": {"freeze_epochs": 3, "epochs": 0},
    "frozen4": {"freeze_epochs": 4, "epochs": 0},
    "frozen6": {"freeze_epochs": 6, "epochs": 0},
    "unfrozen2": {"freeze_epochs": 2, "epochs": 2},
    "unfrozen2-slow": {"freeze_epochs": 2, "epochs": 2, "body_lr_factor": 0.3},
    "size224": {"freeze_epochs": 2, "epochs": 0, "size": 224},
    "size128": {"freeze_epochs": 2, "epochs": 0, "size": 128},
    "auto15": {"auto_threshold": 0.15},
    "frozen1-unfrozen3": {"freeze_epochs": 1, "epochs": 3},
    "frozen2-unfrozen2": {"freeze_epochs": 2, "epochs": 2},
    "frozen2-auto": {"freeze_epochs": 2, "epochs": None},
}


def recipe(ws, name: str):  # noqa: ANN001, ANN201
    """The workspace's saved training settings (the built-in defaults unless the workspace saved its own, as the
    demo does), changed as the recipe says."""
    from core.model import runs

    changes = dict(RECIPES[name])
    cfg = runs.defaults(ws)
    if "size" in changes:
        cfg = replace(cfg, data=replace(cfg.data, size=changes.pop("size")))
    return replace(cfg, **changes)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "bears_small"))
    parser.add_argument("--demo", action="store_true", help="the bundled digits instead of --data")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    parser.add_argument("--recipes", nargs="+", default=["default", "frozen2", "frozen3", "frozen4", "unfrozen2", "size224"])
    parser.add_argument("--valid", type=float, default=0.2)
    parser.add_argument("--test", type=float, default=0.2)
    args = parser.parse_args()
    os.environ["IMAGEDP_DATA_ROOT"] = tempfile.mkdtemp(prefix="recipe-bench-")

    from core.data import gather
    from core.model import datasets, runs
    from core.workspace import split_ops, workspaces
    from core.workspace.splits import SplitPlan

    ws = workspaces.resolve("bench", create=True)
    if args.demo:
        gather.add_demo(ws)
    else:
        gather.ingest(ws, gather.folder_items(Path(args.data))[0])
    results: dict[str, list[tuple[float, float, float]]] = {r: [] for r in args.recipes}
    print(f"machine: {os.cpu_count()} cores; data: {'demo digits' if args.demo else args.data}")
    for seed in args.seeds:
        counts = split_ops.resplit(ws, SplitPlan(seed=seed, valid=args.valid, test=args.test))
        print(f"seed {seed}: train {counts['train']}, valid {counts['valid']}, test {counts['test']}")
        for name in args.recipes:
            cfg = recipe(ws, name)
            run = runs.prepare(ws, cfg)
            start = time.perf_counter()
            datasets.load_pixels(ws, run.catalog, run.config.data)  # warm the cache: time training only
            decode = time.perf_counter() - start
            start = time.perf_counter()
            s = runs.train_workspace(ws, cfg)
            wall = time.perf_counter() - start
            stages = "+".join(sorted({e["stage"] for e in s["epochs"]}))
            results[name].append((s["valid_error"], s["test_error"], wall))
            print(
                f"  {name:<15} size {s['size']}: valid error {s['valid_error']:.4f}  test error {s['test_error']:.4f} "
                f"({s['test_images']} images)  best epoch {s['best_epoch']} [{stages}]  train {wall:.1f} s"
                + (f"  (cold decode {decode:.1f} s)" if decode > 1 else "")
            )
    print("\nper recipe over seeds: mean (sd) -- chosen on valid, reported on test")
    for name, rows in results.items():
        valid, test, wall = zip(*rows, strict=True)

        def ms(xs: tuple[float, ...], pct: bool = True) -> str:
            k = 100 if pct else 1
            sd = statistics.stdev(xs) * k if len(xs) > 1 else 0.0
            return f"{statistics.mean(xs) * k:.2f} ({sd:.2f})"

        print(f"  {name:<15} valid error % {ms(valid)}  test error % {ms(test)}  train s {ms(wall, False)}")


if __name__ == "__main__":
    main()
