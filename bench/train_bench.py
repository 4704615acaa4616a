"""Training benchmarks, each run through the real command line in a fresh data root.

    .venv/bin/python bench/train_bench.py [--bears ../shared/data/bears_small] [--fastai-python PATH]

1. Demo digits, default recipe: wall time from a cold start (new process, empty pixel cache) to the
   first epoch at >= 97% valid accuracy, and the whole run.
2. bears_small at 224 px and at smaller sizes: valid error and wall time of the default recipe,
   side by side with fastai's recipe (../shared/bench/fastai_anchor.py) when a fastai venv is given.
Prints figures; asserts nothing about time.
"""

from __future__ import annotations

import argparse
import json
import os
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
        f"digits   default recipe at {summary['size']} px: accuracy {summary['valid_accuracy']:.4f}; >= 97% at {reached}; "
        f"run {summary['wall_seconds']:.1f} s, process wall (cold start) {wall:.1f} s"
    )


def bench_bears(env: dict[str, str], folder: Path, sizes: list[int], fastai_python: str | None) -> None:
    cli(env, "gather", "--workspace", "bears", "--folder", str(folder))
    for size in sizes:
        summary, wall = cli(env, "train", "--workspace", "bears", "--size", str(size))
        print(
            f"bears    ours at {size} px: valid error {summary['valid_error']:.4f} (best epoch {summary['best_epoch']}), "
            f"run {summary['wall_seconds']:.1f} s, process wall {wall:.1f} s"
        )
    if not fastai_python:
        print("bears    fastai: skipped (pass --fastai-python /path/to/fastai-venv/bin/python)")
        return
    start = time.perf_counter()
    result = subprocess.run(
        [fastai_python, str(SHARED / "bench" / "fastai_anchor.py"), str(folder), "4", "224"], capture_output=True, text=True
    )
    wall = time.perf_counter() - start
    line = next((x for x in result.stdout.splitlines() if x.startswith("{")), None)
    if line is None:
        print(f"bears    fastai failed: {result.stderr[-1500:]}")
        return
    anchor = json.loads(line)
    print(
        f"bears    fastai fine_tune(4) at 224 px: valid error {anchor['valid_error']:.4f}, "
        f"train {anchor['train_wall_s']} s, total {anchor['total_wall_s']} s, process wall {wall:.1f} s"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bears", default=str(SHARED / "data" / "bears_small"))
    parser.add_argument("--sizes", type=int, nargs="+", default=[224, 160, 128])
    parser.add_argument("--fastai-python", default=None)
    parser.add_argument("--skip-digits", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as root:
        env = {**os.environ, "IMAGEDP_DATA_ROOT": root}
        print(f"machine: {os.cpu_count()} cores")
        if not args.skip_digits:
            bench_digits(env)
        if Path(args.bears).is_dir():
            bench_bears(env, Path(args.bears), args.sizes, args.fastai_python)
        else:
            print(f"bears: no folder at {args.bears}")


if __name__ == "__main__":
    main()
