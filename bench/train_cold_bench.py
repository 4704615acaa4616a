"""Where a default training run on camera-sized photos spends its time, cold (nothing decoded yet) and warm (the
decoded-pixel cache from an earlier run), as the Train page runs it (in-process, `runs.train_workspace`).

    .venv/bin/python bench/train_cold_bench.py [--data ../shared/data/bears_small] [--images 415]
        [--side 4032] [--rounds 3] [--workers 1 2] [--full-decode]

The folder's photos are enlarged to camera size (`--side` on the long edge, JPEG quality 90, as a phone saves
them), gathered into a fresh workspace, then per round: the cache is removed and the run timed (cold), and run
again (warm). Each stage (decoding into the cache, the validation features, the frozen epochs, the unfrozen ones,
the test images) is timed from the run's own events. `--workers` decodes with that many threads (the default
is one per core); `--full-decode` also times each photo decoded at full size, as before reduced-scale
decoding (JPEG draft mode) went in: the decoded pixels then differ slightly, the time is what it measures.
The ETA errors: the overall time left the Train page would show at the first batch of each step, minus the
time the run then really took (positive: it said too much).
Prints mean (sd) over rounds; asserts nothing. Leaves out: the gather itself (timed by bench/gather_bench.py),
the page's drawing; enlarged photos carry no more detail than the originals, which matters to accuracy only.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from core.data import gather, images  # noqa: E402
from core.model import datasets, runs, train_report  # noqa: E402
from core.model.config import TrainConfig  # noqa: E402
from core.model.events import BatchEvent, StageEvent  # noqa: E402
from core.workspace import workspaces  # noqa: E402


def camera_folder(source: Path, target: Path, images: int, side: int) -> int:
    """Up to `images` photos from source's label folders, enlarged to `side` px on the long edge, as JPEG."""
    files = sorted(p for p in source.rglob("*") if p.suffix.lower() in {".jpg", ".jpeg", ".png", ".webp"})
    per_label: dict[str, list[Path]] = {}
    for p in files:
        per_label.setdefault(p.parent.name, []).append(p)
    picked = [p for group in zip(*per_label.values(), strict=False) for p in group][:images]
    for p in picked:
        out = target / p.parent.name / f"{p.stem}.jpg"
        out.parent.mkdir(parents=True, exist_ok=True)
        with Image.open(p) as img:
            img = img.convert("RGB")
            scale = side / max(img.size)
            img.resize((round(img.width * scale), round(img.height * scale)), Image.Resampling.BICUBIC).save(out, quality=90)
    return len(picked)


def stage_times(ws: object, cfg: TrainConfig) -> dict[str, float]:
    """Seconds per stage of one run, from the time each stage's first event arrived; and how far the page's overall
    time left (train_report.overall) was from the truth at the first batch of each step."""
    plan = runs.plan_of(ws, runs.prepare(ws, cfg))
    timeline: list[tuple[float, object]] = []
    start = time.monotonic()
    runs.train_workspace(ws, cfg, lambda event: timeline.append((time.monotonic(), event)))
    end = time.monotonic()
    marks = [(e.stage, t) for t, e in timeline if isinstance(e, StageEvent) and e.stage in train_report.STEPS]
    marks = [m for i, m in enumerate(marks) if not i or marks[i - 1][0] != m[0]]
    times = {"total": end - start, "before the first stage": (marks[0][1] if marks else end) - start}
    for (stage, t0), nxt in zip(marks, [*marks[1:], ("", end)], strict=True):
        times[stage] = times.get(stage, 0.0) + nxt[1] - t0
    seen = set()
    for i, (t, e) in enumerate(timeline):  # the page's "time left in all" at each step's first batch, minus the truth
        if isinstance(e, BatchEvent) and e.stage not in seen and e.stage != "cache":
            seen.add(e.stage)
            said = train_report.overall(plan, timeline[: i + 1], t).eta_s
            if said is not None:
                times[f"ETA error at {e.stage}"] = said - (end - t)
    return times


def show(name: str, rounds: list[dict[str, float]]) -> None:
    keys = list(dict.fromkeys(k for r in rounds for k in r))
    cells = []
    for k in keys:
        values = [r.get(k, 0.0) for r in rounds]
        sd = statistics.stdev(values) if len(values) > 1 else 0.0
        cells.append(f"{k} {statistics.mean(values):.1f} s (sd {sd:.1f})")
    print(f"{name}: " + "; ".join(cells), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "bears_small")
    parser.add_argument("--images", type=int, default=415)
    parser.add_argument("--side", type=int, default=4032)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, nargs="*", default=[0], help="decoding threads (0: one per core)")
    parser.add_argument("--full-decode", action="store_true", help="also time full-size decoding (the old path)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["IMAGEDP_DATA_ROOT"] = str(Path(tmp) / "root")
        made = camera_folder(args.data, Path(tmp) / "camera", args.images, args.side)
        size = sum(p.stat().st_size for p in (Path(tmp) / "camera").rglob("*.jpg")) / made / 1e6
        ws = workspaces.create_workspace("cold")
        gather.import_folder(ws, Path(tmp) / "camera")
        print(f"{made} photos at {args.side} px on the long edge ({size:.1f} MB each on average), {os.cpu_count()} cores")
        cfg = TrainConfig()
        reduced = images.reduce_on_decode
        for full in [True, False] if args.full_decode else [False]:
            images.reduce_on_decode = (lambda img, side: None) if full else reduced
            for workers in args.workers:
                datasets.DECODE_WORKERS = workers or None
                cold, warm = [], []
                for _ in range(args.rounds):
                    shutil.rmtree(ws.root / "cache", ignore_errors=True)
                    cold.append(stage_times(ws, cfg))
                    warm.append(stage_times(ws, cfg))
                said = f"{workers} decoding thread(s)" if workers else "one decoding thread per core"
                said += ", full-size decoding" if full else ", reduced-scale decoding"
                show(f"cold, {said}", cold)
                show(f"warm, {said}", warm)


if __name__ == "__main__":
    main()
