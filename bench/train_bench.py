"""Training benchmarks, through the real command line in a fresh data root, over several split seeds.

    .venv/bin/python bench/train_bench.py [--bears ../shared/data/bears_small] [--seeds 1 2 3 4 5]
        [--fastai-python /path/to/fastai-venv/bin/python] [--skip-digits]

1. Demo digits, default recipe: cold-start wall time to the first epoch at >= 97% valid accuracy,
   the whole run, and test accuracy.
2. bears_small, per seed: the workspace is re-split (train 60% / valid 20% / test 20%, by content hash)
   and the default recipe trains through `python -m core train`. fastai's chapter-2 recipe
   (../shared/bench/fastai_anchor.py, in its own venv) then trains on the same training images and is
   scored on the same test images: it gets a folder of links holding our train and test images, and
   the list of our test images as its validation set. Neither tool chose anything on the test images
   (ours chose its epoch on the valid images, which fastai never sees). Mean and standard deviation
   over the seeds are printed for each tool.
Prints figures; asserts nothing about time.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"


def cli(env: dict[str, str], *args: str) -> tuple[dict, float]:
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "core", *args, "--json"], cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if result.returncode != 0:
        sys.exit(f"failed: {' '.join(args)}\n{result.stderr[-2000:]}")
    return json.loads(result.stdout), wall


def first_epoch_over(history: list[dict], target: float) -> tuple[int | None, float]:
    elapsed = 0.0
    for epoch in history:
        elapsed += epoch["seconds"]
        if epoch["accuracy"] >= target:
            return epoch["epoch"], elapsed
    return None, elapsed


def bench_digits(env: dict[str, str]) -> None:
    cli(env, "gather", "--workspace", "digits", "--demo")
    summary, wall = cli(env, "train", "--workspace", "digits")
    epoch, seconds = first_epoch_over(summary["history"], 0.97)
    setup = summary["wall_seconds"] - sum(e["seconds"] for e in summary["history"])
    reached = f"epoch {epoch}, {setup + seconds:.1f} s into training" if epoch is not None else "never"
    print(
        f"digits   default recipe at {summary['size']} px: valid accuracy {summary['valid_accuracy']:.4f}, test accuracy "
        f"{summary['test_accuracy']:.4f} on {summary['test_images']} images; >= 97% valid at {reached}; "
        f"run {summary['wall_seconds']:.1f} s, process wall (cold start) {wall:.1f} s"
    )


def catalog_of(env: dict[str, str], workspace: str) -> list[tuple[str, str, str]]:
    """(source path, label, split) of every usable image, read from the workspace database."""
    code = (
        "import json,sys; from core.workspace import workspaces, store; "
        f"c = store.images(workspaces.resolve({workspace!r})); "
        "print(json.dumps(c[['source','label','split']].values.tolist()))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    return [tuple(r) for r in json.loads(out.stdout)]


def fastai_on(python: str, rows: list[tuple[str, str, str]], work: Path) -> dict | None:
    """fastai's recipe trained on our train images, scored on our test images (a folder of links)."""
    folder = work / "data"
    chosen = []
    for source, label, split in rows:
        if split == "valid":
            continue
        link = folder / label / Path(source).name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(Path(source).resolve())
        if split == "test":
            chosen.append(f"{label}/{link.name}")
    (work / "valid.txt").write_text("\n".join(chosen) + "\n")
    start = time.perf_counter()
    result = subprocess.run(
        [python, str(SHARED / "bench" / "fastai_anchor.py"), str(folder), "4", "224", str(work / "valid.txt")],
        capture_output=True,
        text=True,
    )
    line = next((x for x in result.stdout.splitlines() if x.startswith("{")), None)
    if line is None:
        print(f"  fastai failed: {result.stderr[-1500:]}")
        return None
    return {**json.loads(line), "process_wall_s": time.perf_counter() - start}


def mean_sd(xs: list[float], scale: float = 1.0) -> str:
    sd = statistics.stdev(xs) * scale if len(xs) > 1 else 0.0
    return f"{statistics.mean(xs) * scale:.2f} (sd {sd:.2f}, {min(xs) * scale:.2f}-{max(xs) * scale:.2f})"


def bench_bears(env: dict[str, str], folder: Path, seeds: list[int], fastai_python: str | None) -> None:
    cli(env, "gather", "--workspace", "bears", "--folder", str(folder))
    ours: dict[str, list[float]] = {"valid": [], "test": [], "wall": []}
    theirs: dict[str, list[float]] = {"test": [], "wall": []}
    for seed in seeds:
        split, _ = cli(env, "split", "--workspace", "bears", "--resplit", "--seed", str(seed), "--valid", "0.2", "--test", "0.2")
        s, wall = cli(env, "train", "--workspace", "bears")
        ours["valid"].append(s["valid_error"])
        ours["test"].append(s["test_error"])
        ours["wall"].append(wall)
        stages = "+".join(sorted({e["stage"] for e in s["history"]}))
        print(
            f"seed {seed} ({split['splits']['train']}/{split['splits']['valid']}/{split['splits']['test']} train/valid/test)  "
            f"ours at {s['size']} px [{stages}]: valid error {s['valid_error']:.4f}, test error {s['test_error']:.4f}, "
            f"run {s['wall_seconds']:.1f} s, process wall {wall:.1f} s"
        )
        if fastai_python:
            with tempfile.TemporaryDirectory() as work:
                anchor = fastai_on(fastai_python, catalog_of(env, "bears"), Path(work))
            if anchor:
                theirs["test"].append(anchor["valid_error"])
                theirs["wall"].append(anchor["process_wall_s"])
                print(
                    f"        fastai fine_tune(4) at 224 px on the same {anchor['n_valid']} test images: error "
                    f"{anchor['valid_error']:.4f}, train {anchor['train_wall_s']} s, "
                    f"process wall {anchor['process_wall_s']:.1f} s"
                )
    print(f"bears    ours over {len(seeds)} seeds: test error % {mean_sd(ours['test'], 100)}; valid error % (chose the epoch)")
    print(f"         {mean_sd(ours['valid'], 100)}; process wall s {mean_sd(ours['wall'])}")
    if theirs["test"]:
        print(
            f"bears    fastai over {len(theirs['test'])} seeds: test error % {mean_sd(theirs['test'], 100)}; "
            f"process wall s {mean_sd(theirs['wall'])}"
        )
    else:
        print("bears    fastai: skipped (pass --fastai-python /path/to/fastai-venv/bin/python)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bears", default=str(SHARED / "data" / "bears_small"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    parser.add_argument("--fastai-python", default=None)
    parser.add_argument("--skip-digits", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as root:
        env = {**os.environ, "IMAGEDP_DATA_ROOT": root}
        print(f"machine: {os.cpu_count()} cores")
        if not args.skip_digits:
            bench_digits(env)
        if Path(args.bears).is_dir():
            bench_bears(env, Path(args.bears), args.seeds, args.fastai_python)
        else:
            print(f"bears: no folder at {args.bears}")


if __name__ == "__main__":
    main()
