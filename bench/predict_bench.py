"""Production figures: app-path latency, batch-scoring throughput, concurrent logging, monitor queries at 1M rows.

    .venv/bin/python bench/predict_bench.py [--folder ../shared/data/bears_small] [--ood ../shared/data/ood_sample]

Trains the default recipe on the folder in a throwaway data root (once), then measures:
1. one upload at a time through the Predict page's path (its database reads, decode, resize, model,
   decision, hand to the log writer): p50/p95 against a full decode plus the bare forward pass, on the
   folder's thumbnails and on camera-sized JPEGs made from them;
2. batch scoring of the whole folder (the `predict` command's path: reading files, logging included)
   against the bare forward pass at the same batch size;
3. distinct predictions/s from 4 processes logging at once through the app's background writer, and
   predictions lost;
4. seconds per Monitor query over 1,000,000 generated log rows;
5. how well each out-of-domain score separates the folder's validation images from --ood (AUROC).
Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from core.data import gather, images  # noqa: E402
from core.model import datasets, registry, runs, scoring  # noqa: E402
from core.production import prediction, prediction_log, serving  # noqa: E402
from core.production.monitoring import charts, queries  # noqa: E402
from core.workspace import paths, store, workspaces  # noqa: E402


def trained(folder: Path, size: int = 0, name: str = "bench") -> paths.Workspace:
    """The default recipe on the folder (at `size` px when given), promoted to production."""
    from dataclasses import replace

    ws = workspaces.resolve(name, create=True)
    gather.ingest(ws, gather.folder_items(folder)[0])
    cfg = runs.defaults(ws)
    summary = runs.train_workspace(ws, replace(cfg, data=replace(cfg.data, size=size)) if size else cfg)
    registry.promote(ws, summary["version"])
    print(f"trained {summary['version']}: {summary['test_accuracy']:.1%} test accuracy at {summary['size']} px")
    return ws


def fastai_predict(python: str, folder: Path, photos: Path) -> None:
    """fastai's `learn.predict` on the same camera-sized files, a model at 224 px (one epoch: latency only)."""
    anchor = ROOT.parent / "shared" / "bench" / "fastai_anchor.py"
    result = subprocess.run(
        [python, str(anchor), str(folder), "1", "224"],
        capture_output=True,
        text=True,
        env={**os.environ, "PREDICT_DIR": str(photos)},
    )
    line = next((x for x in result.stdout.splitlines() if x.startswith("{")), None)
    if line is None:
        print(f"   fastai failed: {result.stderr[-1500:]}")
        return
    import json

    data = json.loads(line)
    print(
        f"   fastai learn.predict on the same {data['predict_n']} files at 224 px: "
        f"p50 {data['predict_p50_ms']:.1f} ms, p95 {data['predict_p95_ms']:.1f} ms"
    )


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


def camera_photos(files: list[Path], folder: Path, n: int, size: tuple[int, int] = (4000, 3000)) -> list[Path]:
    """Camera-sized JPEGs (about 4000x3000, quality 90) made from the folder's thumbnails: what a phone sends."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i, f in enumerate(files[:n]):
        path = folder / f"camera-{i:03d}.jpg"
        Image.open(f).convert("RGB").resize(size, Image.Resampling.BICUBIC).save(path, "JPEG", quality=90)
        out.append(path)
    return out


def latency(ws: paths.Workspace, files: list[Path], label: str) -> None:
    """Per upload, what the Predict page does: read the app's settings and the accepted policy from the
    database, decode, resize, score, decide, hand the prediction to the log writer."""
    service = serving.Service(ws)
    predictor = service.snapshot().predictor
    log = service.log
    items = [(f.name, f.read_bytes()) for f in files]

    def page(name: str, data: bytes) -> None:
        service.serve([(name, data)], "app")

    for name, data in items[:3]:  # warm-up
        page(name, data)
    log.flush()
    tensors = [
        datasets.to_batch(
            np.asarray(images.resize_item(prediction.decode(d, predictor.size), predictor.size, predictor.resize), np.uint8)[
                None
            ],
            predictor.mean,
            predictor.std,
        )
        for _, d in items
    ]
    app, bare, unavoidable = [], [], []
    block = 10  # alternate blocks of each, so both see the same machine (this one is shared and noisy)
    for start in range(0, len(items), block):
        for (_, data), x in zip(items[start : start + block], tensors[start : start + block], strict=True):
            t0 = time.perf_counter()
            prediction.decode(data, predictor.size)  # at the reduced scale scoring uses
            t1 = time.perf_counter()
            with torch.inference_mode():
                predictor.model(x)
            t2 = time.perf_counter()
            bare.append((t2 - t1) * 1000)
            unavoidable.append((t2 - t0) * 1000)
        for name, data in items[start : start + block]:  # the log writer runs beside, as in the app
            t0 = time.perf_counter()
            page(name, data)
            app.append((time.perf_counter() - t0) * 1000)
        log.flush()  # not timed: the writer's last batch must not land in the next bare block
    print(
        f"\n1. one upload at a time, {len(items)} {label}, model at {predictor.size} px, "
        f"{torch.get_num_threads()} torch threads\n"
        f"   Predict page path (settings and policy read, decode, resize, model, decide, hand to log): "
        f"p50 {pct(app, 50):.1f} ms, p95 {pct(app, 95):.1f} ms\n"
        f"   decode (reduced scale) + bare forward:  p50 {pct(unavoidable, 50):.1f} ms, p95 {pct(unavoidable, 95):.1f} ms; "
        f"bare forward alone: p50 {pct(bare, 50):.1f} ms, p95 {pct(bare, 95):.1f} ms\n"
        f"   page over decode + forward: p50 {pct(app, 50) / pct(unavoidable, 50) - 1:+.0%}, "
        f"p95 {pct(app, 95) / pct(unavoidable, 95) - 1:+.0%}"
    )


def throughput(ws: paths.Workspace, folder: Path, batch: int) -> None:
    predictor = scoring.load_predictor(ws)
    env = {**os.environ}
    t0 = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "core", "predict", "--workspace", "bench", str(folder), "--batch-size", str(batch), "--json"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    process_s = time.perf_counter() - t0
    t0 = time.perf_counter()  # the clock starts before the files are read, as the command's does
    items, _ = prediction.read_paths([folder])
    preds, _ = prediction.predict_images(predictor, items, batch)
    prediction_log.log_predictions(ws, preds, "batch", predictor.version)
    path_s = time.perf_counter() - t0
    pixels = np.stack(
        [np.asarray(images.resize_item(prediction.decode(d, predictor.size), predictor.size, predictor.resize)) for _, d in items]
    )
    tensors = [datasets.to_batch(pixels[i : i + batch], predictor.mean, predictor.std) for i in range(0, len(pixels), batch)]
    t0 = time.perf_counter()
    with torch.inference_mode():
        for x in tensors:
            predictor.model(x)
    bare_s = time.perf_counter() - t0
    n = len(items)
    print(
        f"\n2. batch scoring {n} images at batch {batch}\n"
        f"   scoring path (read files, decode, properties, resize, model, log): {n / path_s:.0f} images/s\n"
        f"   bare forward on ready tensors:                              {n / bare_s:.0f} images/s\n"
        f"   ratio {bare_s / path_s:.0%}; the whole `python -m core predict` process (imports, model load): "
        f"{process_s:.1f} s, exit {done.returncode}"
    )


WRITER = """
import sys, time, uuid
import numpy as np
from core.production import prediction_log
from core.workspace import workspaces
from core.production.prediction import Prediction
ws = workspaces.resolve(sys.argv[1]); n = int(sys.argv[2]); start = float(sys.argv[3])
props = {"width": 275, "height": 183, "brightness": .5, "contrast": .2, "saturation": .3, "sharpness": .1}
preds = [Prediction(uuid.uuid4().hex, f"f{i}.jpg", "ab" * 32, props, np.array([.7, .2, .1], np.float32), "black", .7,
         -3.0, 3.0, False, np.zeros(16, np.float32), "black", 12.0) for i in range(n)]
log = prediction_log.background(ws)
while time.time() < start:
    time.sleep(0.001)
for p in preds:
    log.submit(prediction_log.LogBatch([p], "app", "v1"))
log.flush()
print(time.time())
"""


def concurrent_logging(per_process: int) -> None:
    ws = workspaces.resolve("logbench", create=True)
    start = time.time() + 8.0  # every process imported and waiting
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(ws.root), str(per_process), str(start)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    ends = [float(p.communicate()[0].strip().splitlines()[-1]) for p in procs]
    with store.connect(ws) as con:  # distinct ids: a row written twice must not count as two
        rows = con.execute("SELECT count(DISTINCT id) FROM log_predictions").fetchone()[0] + prediction_log.spooled_rows(ws)
    wall = max(ends) - start
    print(
        f"\n3. logging from 4 processes, {per_process} predictions each, one at a time through the background writer\n"
        f"   {rows} distinct predictions in {wall:.2f} s: {rows / wall:,.0f} rows/s in total; lost {4 * per_process - rows}"
        f"; spooled {prediction_log.spooled_rows(ws)}"
    )


def monitor_queries(n: int) -> None:
    ws = workspaces.resolve("monbench", create=True)
    t0 = time.perf_counter()
    with store.connect(ws) as con:
        con.execute(
            f"""
            INSERT INTO predictions ({", ".join(prediction_log.COLUMNS[:22])})
            SELECT md5(i::VARCHAR), TIMESTAMP '2026-01-01' + to_seconds((i * 2419200 // {n})::BIGINT),
                   ['app', 'batch', 'simulation'][1 + i % 3], 'v1', 'f' || i || '.jpg', md5(i::VARCHAR),
                   275, 183, random(), random() / 2, random(), random() / 4,
                   [random(), random(), random()]::FLOAT[], ['black', 'grizzly', 'teddy'][1 + (i * 7) % 3],
                   0.34 + random() * 0.66, -random() * 5, random() * 5, random() < 0.05,
                   [random(), random(), random(), random(), random(), random(), random(), random(),
                    random(), random(), random(), random(), random(), random(), random(), random()]::FLOAT[],
                   'black', 10 + random() * 5, NULL
            FROM range({n}) t(i)
            """
        )
        con.execute(
            "INSERT INTO feedback (prediction_id, ts, label, source) "
            f"SELECT md5(i::VARCHAR), TIMESTAMP '2026-01-01' + to_seconds((i * 2419200 // {n})::BIGINT), "
            f"['black', 'grizzly', 'teddy'][1 + i % 3], 'bench' FROM range(0, {n}, 20) t(i)"
        )
    print(f"\n4. monitor queries over {prediction_log.count(ws):,} log rows (generated in {time.perf_counter() - t0:.1f} s)")
    for window in ("day", "hour"):
        flt = queries.LogFilter(window=window)
        t0 = time.perf_counter()
        win = queries.windows(ws, flt)
        t1 = time.perf_counter()
        mix = queries.class_mix(ws, flt)
        t2 = time.perf_counter()
        charts.overview_figure(win, None)
        charts.class_mix_figure(mix, None) if window == "day" else None
        t3 = time.perf_counter()
        print(
            f"   per {window} ({len(win)} windows): volume/confidence/OOD/feedback-accuracy query {t1 - t0:.2f} s, "
            f"class-mix query {t2 - t1:.2f} s, figures {t3 - t2:.2f} s"
        )


def ood_separation(ws: paths.Workspace, ood_folder: Path) -> None:
    predictor = scoring.load_predictor(ws)
    meta = registry.read_meta(ws, predictor.version)
    catalog = store.images(ws).set_index("id").loc[meta["valid_ids"]]
    valid, _ = prediction.predict_images(predictor, [(p, (ws.root / p).read_bytes()) for p in catalog["path"]])
    ood_items, _ = prediction.read_paths([ood_folder])
    ood, _ = prediction.predict_images(predictor, ood_items)
    from sklearn.metrics import roc_auc_score

    y = np.r_[np.ones(len(valid)), np.zeros(len(ood))]
    energy = np.r_[[-p.energy for p in valid], [-p.energy for p in ood]]
    maxprob = np.r_[[p.confidence for p in valid], [p.confidence for p in ood]]
    print(
        f"\n5. out-of-domain scores, {len(valid)} validation images against {len(ood)} images from {ood_folder.name}\n"
        f"   AUROC: energy {roc_auc_score(y, energy):.3f}, maximum probability {roc_auc_score(y, maxprob):.3f}\n"
        f"   with the threshold the {predictor.reference.ood_score} score puts at 95% of validation passing: "
        f"{np.mean([p.ood for p in valid]):.1%} of validation flagged, {np.mean([p.ood for p in ood]):.1%} of OOD flagged"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--folder", type=Path, default=ROOT.parent / "shared" / "data" / "bears_small")
    parser.add_argument("--ood", type=Path, default=ROOT.parent / "shared" / "data" / "ood_sample")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=400, help="thumbnails timed one at a time")
    parser.add_argument("--camera", type=int, default=40, help="camera-sized photos timed one at a time")
    parser.add_argument("--log-rows", type=int, default=25_000, help="per writer process")
    parser.add_argument("--monitor-rows", type=int, default=1_000_000)
    parser.add_argument("--fastai-python", help="a fastai venv's python: time learn.predict on the same camera photos")
    parser.add_argument("--only-latency", action="store_true", help="skip throughput, logging, monitor and OOD figures")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        os.environ[workspaces.DATA_ROOT_ENV] = tmp
        ws = trained(args.folder.resolve())
        files = sorted(p for p in args.folder.rglob("*") if p.suffix.lower() in {".jpg", ".jpeg", ".png"})
        latency(ws, files[: args.repeats], f"thumbnails from {args.folder.name}")
        camera = camera_photos(files, Path(tmp) / "camera", args.camera)
        latency(ws, camera, "camera-sized JPEGs (4000x3000, made from those thumbnails)")
        if args.fastai_python:
            if scoring.load_predictor(ws).size != 224:  # compare at fastai's size
                latency(trained(args.folder.resolve(), 224, "bench224"), camera, "camera-sized JPEGs, a model trained at 224")
            fastai_predict(args.fastai_python, args.folder.resolve(), camera[0].parent)
        if args.only_latency:
            return
        throughput(ws, args.folder.resolve(), args.batch)
        concurrent_logging(args.log_rows)
        monitor_queries(args.monitor_rows)
        if args.ood.is_dir():
            ood_separation(ws, args.ood.resolve())


if __name__ == "__main__":
    main()
