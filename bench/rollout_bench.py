"""Rollout figures: what a candidate in shadow costs the user's request and batch scoring.

    .venv/bin/python bench/rollout_bench.py [--folder ../shared/data/bears_small] [--camera 40] [--rounds 3]

Trains the default recipe on the folder twice (seeds 42 and 43) in a throwaway data root, promotes the first,
then measures, alternating blocks of 10 uploads so both arms see the same (shared, noisy) machine:
1. one upload at a time through the Predict page's path (serving settings read, decode, resize, model(s),
   decide, route, hand to the log writer), production alone against production with the second version in
   shadow (one decode, a second forward pass, both logged): p50 and p95 per arm and their ratio, per round and
   as mean (sd) over rounds, on the folder's own files and on camera-sized JPEGs (4000x3000) made from them;
2. batch scoring of the whole folder through the serving path with logging (serving.score + log_predictions,
   as `predict` does), alone and with shadow: images/s;
3. the Rollout and Review pages' queries (comparison and gate, disagreements, the queue) over 1,000,000
   generated log rows (500,000 requests in shadow).
The candidate's predictions are logged too (that is part of the cost). Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.predict_bench import camera_photos, pct  # noqa: E402
from core.data import gather, images  # noqa: E402
from core.model import registry, runs, scoring  # noqa: E402
from core.production import prediction_log, rollout, serving  # noqa: E402
from core.workspace import paths, workspaces  # noqa: E402


def two_versions(folder: Path) -> paths.Workspace:
    ws = workspaces.resolve("rollout-bench", create=True)
    gather.ingest(ws, gather.folder_items(folder)[0])
    cfg = runs.defaults(ws)
    first = runs.train_workspace(ws, cfg)
    second = runs.train_workspace(ws, replace(cfg, seed=cfg.seed + 1))
    registry.promote(ws, first["version"])
    rollout.start(ws, second["version"], "shadow")
    print(
        f"production {first['version']} ({first['test_accuracy']:.1%} test accuracy), candidate {second['version']} "
        f"({second['test_accuracy']:.1%}) in shadow, both at {first['size']} px"
    )
    return ws


def latency(ws: paths.Workspace, files: list[Path], label: str, rounds: int) -> None:
    predictor = scoring.load_predictor(ws)
    now = serving.read(serving.deployed(ws), predictor.version)
    candidate = scoring.load_predictor(ws, now.rollout.candidate)  # the service keeps it loaded
    log = prediction_log.background(ws)
    items = [(f.name, f.read_bytes()) for f in files]

    def upload(name: str, data: bytes, beside: bool) -> None:
        s = serving.read(serving.deployed(ws), predictor.version)  # the snapshot, as the service checks it on every upload
        scored = serving.score(
            predictor,
            candidate if beside else None,
            s.rollout if beside else None,
            [(name, data)],
            s.deciders,
            keep_bytes=True,
            defer_properties=True,
        )
        log.submit(prediction_log.LogBatch(scored.logged, "app", predictor.version))

    def alone(name: str, data: bytes) -> None:
        upload(name, data, False)

    def shadow(name: str, data: bytes) -> None:
        upload(name, data, True)

    for name, data in items[:3]:  # warm-up
        alone(name, data)
        shadow(name, data)
    log.flush()
    ratios50, ratios95 = [], []
    print(f"\n1. one upload at a time, {len(items)} {label}, {torch.get_num_threads()} torch threads")
    for r in range(rounds):
        times: dict[str, list[float]] = {"alone": [], "shadow": []}
        block = 10
        for start in range(0, len(items), block):
            for arm, fn in (
                (("alone", alone), ("shadow", shadow))
                if (start // block + r) % 2 == 0
                else (("shadow", shadow), ("alone", alone))
            ):
                for name, data in items[start : start + block]:
                    t0 = time.perf_counter()
                    fn(name, data)
                    times[arm].append((time.perf_counter() - t0) * 1000)
                log.flush()  # not timed: the writer's batch must not land in the other arm's block
        a50, a95, s50, s95 = pct(times["alone"], 50), pct(times["alone"], 95), pct(times["shadow"], 50), pct(times["shadow"], 95)
        ratios50.append(s50 / a50)
        ratios95.append(s95 / a95)
        print(
            f"   round {r + 1}: production alone p50 {a50:.1f} ms, p95 {a95:.1f} ms; with shadow p50 {s50:.1f} ms, "
            f"p95 {s95:.1f} ms; ratio p50 {s50 / a50:.2f}x, p95 {s95 / a95:.2f}x"
        )
    print(
        f"   ratio over {rounds} rounds: p50 {np.mean(ratios50):.2f}x (sd {np.std(ratios50, ddof=1) if rounds > 1 else 0:.2f}), "
        f"p95 {np.mean(ratios95):.2f}x (sd {np.std(ratios95, ddof=1) if rounds > 1 else 0:.2f}); target at most 1.9x"
    )


def throughput(ws: paths.Workspace, folder: Path, batch: int) -> None:
    predictor = scoring.load_predictor(ws)
    snap = serving.snapshot(ws, serving.Models(ws))
    active, candidate = snap.active, snap.candidate
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in images.IMAGE_SUFFIXES)
    rates = {}
    for arm in ("alone", "shadow", "alone again"):
        t0 = time.perf_counter()  # from reading the files, as the command's clock does
        items = [(str(f), f.read_bytes()) for f in files]
        on = arm == "shadow"
        scored = serving.score(predictor, candidate if on else None, active if on else None, items, batch_size=batch)
        prediction_log.log_predictions(ws, scored.logged, "batch", predictor.version)
        rates[arm] = len(scored.shown) / (time.perf_counter() - t0)
    print(
        f"\n2. batch scoring {len(files)} files at batch {batch} (read, decode, properties, resize, model(s), route, log): "
        f"alone {rates['alone']:.0f} and {rates['alone again']:.0f} images/s, with shadow {rates['shadow']:.0f} images/s "
        f"({rates['shadow'] / np.mean([rates['alone'], rates['alone again']]):.0%} of alone)"
    )


def rollout_page(ws: paths.Workspace) -> None:
    from core.production import gate

    comparison = gate.compare(ws, "v2")
    gate.gate(comparison)
    gate.disagreements(comparison)


def queries_at_scale(n: int) -> None:
    """The Rollout and Review pages' queries over n logged rows: n/2 requests scored by production and by a
    candidate in shadow over 30 days, 5% of them labelled, 5% flagged out of domain, 3% referred."""
    from core.production import review
    from core.workspace import store

    ws = workspaces.resolve("rollout-scale", create=True)
    half = n // 2
    cols = ", ".join(prediction_log.COLUMNS)
    t0 = time.perf_counter()
    with store.connect(ws) as con:
        for version, stage, served, salt in (("v1", "production", True, 0), ("v2", "shadow", False, 1)):
            con.execute(
                f"""
                INSERT INTO predictions ({cols})
                SELECT md5(i::VARCHAR || '{salt}'), TIMESTAMP '2026-01-01' + to_seconds((i * 2592000 // {half})::BIGINT),
                       'app', '{version}', 'f' || i || '.jpg', md5(i::VARCHAR), 275, 183, 0.5, 0.2, 0.3, 0.1,
                       [0.7, 0.2, 0.1]::FLOAT[],
                       CASE WHEN {salt} = 1 AND i % 20 = 0 THEN 'grizzly' ELSE 'black' END, 0.7, -3.0, 3.0,
                       i % 20 = 1, [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]::FLOAT[],
                       CASE WHEN i % 33 = 2 THEN 'refer to a human' ELSE 'black' END, 12.0, NULL,
                       '{stage}', {served}, md5(i::VARCHAR), i % 33 = 2
                FROM range({half}) t(i)
                """
            )
        con.execute(
            "INSERT INTO feedback (prediction_id, ts, label, source) "
            f"SELECT md5(i::VARCHAR || '0'), TIMESTAMP '2026-01-02', 'black', 'app' FROM range(0, {half}, 20) t(i)"
        )
    made = time.perf_counter() - t0
    print(f"\n3. the pages' queries over {n:,} logged rows ({half:,} requests in shadow; generated in {made:.1f} s)")
    for label, run in (
        ("the Rollout page's comparison, gate and disagreements (one read)", lambda: rollout_page(ws)),
        ("review.backlog + the queue's first page (Review page)", lambda: (review.backlog(ws), review.pending_rows(ws, 6))),
    ):
        walls = []
        for _ in range(3):
            t0 = time.perf_counter()
            run()
            walls.append(time.perf_counter() - t0)
        print(f"   {label}: {np.median(walls):.2f} s (median of 3; min {min(walls):.2f}, max {max(walls):.2f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--folder", type=Path, default=ROOT.parent / "shared" / "data" / "bears_small")
    parser.add_argument("--camera", type=int, default=40, help="camera-sized photos timed one at a time")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--rows", type=int, default=1_000_000, help="logged rows for the queries' timing")
    parser.add_argument("--only-queries", action="store_true", help="skip training and the latency figures")
    args = parser.parse_args()
    os.environ[workspaces.DATA_ROOT_ENV] = tempfile.mkdtemp(prefix="rollout-bench-")
    if args.only_queries:
        queries_at_scale(args.rows)
        return
    ws = two_versions(args.folder.resolve())
    files = sorted(p for p in args.folder.resolve().rglob("*") if p.suffix.lower() in images.IMAGE_SUFFIXES)
    rng = np.random.default_rng(0)
    sample = [files[i] for i in rng.choice(len(files), min(60, len(files)), replace=False)]
    latency(ws, sample, f"of the folder's own files (median {median_size(sample)})", args.rounds)
    with tempfile.TemporaryDirectory() as tmp:
        latency(ws, camera_photos(sample, Path(tmp) / "camera", args.camera), "camera-sized JPEGs (4000x3000)", args.rounds)
    throughput(ws, args.folder.resolve(), args.batch)
    queries_at_scale(args.rows)


def median_size(files: list[Path]) -> str:
    from PIL import Image

    sizes = [Image.open(f).size for f in files]
    return f"{int(np.median([w for w, _ in sizes]))}x{int(np.median([h for _, h in sizes]))} px"


if __name__ == "__main__":
    main()
