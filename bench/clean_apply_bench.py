"""What one Apply on the Clean page costs: the re-scoring of every image after a few choices.

    .venv/bin/python bench/clean_apply_bench.py [--data ../shared/data/bears_small] [--rounds 3]

Gathers the folder into a fresh workspace, trains the default recipe, then per round: applies 3 relabels and
2 deletions (cleaning.apply, files moved and audited) and scores every image again (cleaning.score_images, what
the page calls after an Apply, database reads included), once with the version's feature cache as the Apply
leaves it (after) and once with the cache removed (before: every image through the network, as each Apply did).
Prints mean (sd) over rounds; asserts nothing. Leaves out: drawing the page's tiles (thumbnails are cached).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from core.data import gather  # noqa: E402
from core.model import cleaning, runs  # noqa: E402
from core.model.cleaning import Decision  # noqa: E402
from core.workspace import store, workspaces  # noqa: E402


def timed(work) -> float:
    t0 = time.perf_counter()
    work()
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "bears_small")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    os.environ[workspaces.DATA_ROOT_ENV] = tempfile.mkdtemp(prefix="clean-bench-")
    ws = workspaces.resolve("clean-bench", create=True)
    gather.ingest(ws, gather.folder_items(args.data.resolve())[0])
    version = runs.train_workspace(ws, runs.defaults(ws))["version"]
    first = timed(lambda: cleaning.score_images(ws, version))
    print(f"{len(store.images(ws))} images, model {version}: first scoring {first:.1f} s (every image through the network)")
    before, after = [], []
    rng = np.random.default_rng(0)
    for _ in range(args.rounds):
        catalog = store.images(ws)
        picked = catalog.iloc[rng.choice(len(catalog), 5, replace=False)]
        labels = sorted(set(catalog["label"]))
        choices = [
            Decision(r.id, "relabel", next(c for c in labels if c != r.label), r.label) for r in picked.iloc[:3].itertuples()
        ] + [Decision(r.id, "delete", None, r.label) for r in picked.iloc[3:].itertuples()]
        apply_s = timed(lambda chosen=choices: cleaning.apply(ws, chosen))
        after.append(apply_s + timed(lambda: cleaning.score_images(ws, version)))
        (ws.models_dir / version / cleaning.FEATURES).unlink()
        before.append(apply_s + timed(lambda: cleaning.score_images(ws, version)))
    for name, values in (("before (every image again)", before), ("after (cached features)", after)):
        spread = f"{np.mean(values):.1f} s (sd {np.std(values):.1f}) over {len(values)} rounds"
        print(f"Apply of 5 choices, then re-scoring, {name}: {spread}")


if __name__ == "__main__":
    main()
