"""Writes per second into the prediction log from 1 and 3 processes: the log's Delta table against the Parquet files
serving processes wrote before it; and the time from a prediction handed to the log until a page sees it.

    .venv/bin/python bench/scale_bench.py [--seconds 8] [--batches 1,25,1000] [--samples 15] [--files 0,1000]

1. Writes. Each process writes prepared log rows (distinct ids; every column, the 16-float embedding and the
   class probabilities included) for --seconds, in writes of B rows, either
   - delta: as every serving process does now (prediction_log.write: one commit to the log's Delta table per write,
     with the writer's transaction, then its files, entry and folders fsynced),
   - files: as they did until 2026-12-07 (core/workspace/log_files.py at 22da0d2, loaded from git: one Parquet file
     per write under a hidden name, fsynced, renamed into logs/predictions/replica=<process>/date=<day>/).
   (Until 2026-12-03 they INSERTed into workspace.duckdb, taking turns at its lock: the notes of that time have its
   figures; a workspace's rows there now move to the Delta table on its first open.)
   The processes start together (each has opened what it needs first). Printed: rows/s and writes/s of all of them
   together, p50/p95 of one write, and the rows the log then holds against the rows acknowledged (lost, doubled).
   Each arm gets a fresh workspace; the arms' order alternates, so all see the same machine. The earlier files'
   rows are counted from their files (the product no longer reads that layout but to migrate it).
2. Row to page. One process is handed one prediction a second, and logs it; another process, as every page that
   reads the log does on each run (Monitor, Review, Overview), opens the workspace read-only and asks the log's view
   for that id, every 50 ms. Latency = first seen - handed over (one clock: one machine). Three ways:
   - delta, through the app's background writer (BackgroundLog, which gathers rows for up to 0.5 s into one
     commit), as the app and the API log;
   - delta, written at once (prediction_log.write), as batch `predict` logs.
   Each with the log already holding F uncompacted files (--files: F commits; a replica writes up to two a second
   until `log compact`).

What it leaves out: building the rows from a scored image (measuring properties, keeping images), which both paths
share; the page's own figures once it sees the row (bench/loggen.py times them over large logs); several machines
(shared storage); a disk slower than this machine's; the poll's 50 ms resolution (latency is up to 50 ms less).
Asserts nothing.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from core.data.images import PROPERTIES  # noqa: E402
from core.model.config import EMBED_DIM  # noqa: E402
from core.production import prediction_log  # noqa: E402
from core.workspace import log_table, store, workspaces  # noqa: E402

CLASSES = ("black", "grizzly", "teddy")
ARMS = ("delta", "files")
EARLIER = "22da0d2"  # the last commit that wrote the log as Parquet files per replica and day


def template(n: int, seed: int) -> pd.DataFrame:
    """n log rows with realistic values in every column (ids are set per write)."""
    rng = np.random.default_rng(seed)
    probs = rng.dirichlet(np.ones(len(CLASSES)) * 0.3, n).astype(np.float32)
    rows: dict[str, object] = {
        "id": [""] * n, "ts": [store.now()] * n, "source": ["api"] * n, "model_version": ["v1"] * n,
        "name": [f"upload-{i}.jpg" for i in range(n)], "sha256": [uuid.uuid4().hex * 2 for _ in range(n)],
        "width": rng.integers(200, 4000, n), "height": rng.integers(200, 3000, n),
        **{p: rng.normal(0.5, 0.1, n) for p in PROPERTIES},
        "probs": [list(map(float, p)) for p in probs], "predicted": [CLASSES[int(np.argmax(p))] for p in probs],
        "confidence": probs.max(axis=1).astype(float), "energy": rng.normal(-5, 1, n), "ood_score": rng.normal(0, 1, n),
        "ood": rng.random(n) < 0.04, "embedding": [list(map(float, e)) for e in rng.normal(0, 1, (n, EMBED_DIM))],
        "action": ["accept"] * n, "latency_ms": rng.gamma(4, 10, n), "image_path": [None] * n, "stage": ["production"] * n,
        "served": [True] * n, "request_id": [""] * n, "referred": [False] * n, "audit": [False] * n, "audit_p": [0.02] * n,
    }  # fmt: skip
    return pd.DataFrame(rows, columns=list(prediction_log.COLUMNS))


def with_ids(frame: pd.DataFrame, prefix: str) -> pd.DataFrame:
    ids = [f"{prefix}-{i}" for i in range(len(frame))]
    return frame.assign(id=ids, request_id=ids, ts=store.now())


_EARLIER: list[object] = []


def earlier_files() -> object:
    """core/workspace/log_files.py as it was at EARLIER, loaded from git (once per process)."""
    if not _EARLIER:
        import importlib.util
        import subprocess

        path = Path(tempfile.mkdtemp(prefix="log-files-")) / "log_files.py"
        path.write_text(subprocess.run(["git", "show", f"{EARLIER}:core/workspace/log_files.py"], cwd=ROOT, check=True,
                                       capture_output=True, text=True).stdout)  # fmt: skip
        spec = importlib.util.spec_from_file_location("log_files", path)
        module = sys.modules["log_files"] = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
        spec.loader.exec_module(module)  # type: ignore[union-attr]
        _EARLIER.append(module)
    return _EARLIER[0]


def write(ws: workspaces.Workspace, arm: str, frame: pd.DataFrame, replica: str) -> None:
    if arm == "delta":
        prediction_log.write(ws, frame, replica)
    else:
        earlier_files().append(ws, "predictions", frame, replica)  # type: ignore[attr-defined]


def writer(name: str, arm: str, batch: int, seconds: float, ready: object, go: object, results: object) -> None:
    ws = workspaces.resolve(name)
    frame = template(batch, seed=os.getpid())
    write(ws, arm, with_ids(frame, f"warm-{os.getpid()}"), f"w{os.getpid()}")  # opens what a serving process has open
    ready.put(os.getpid())  # type: ignore[attr-defined]
    go.wait()  # type: ignore[attr-defined]
    deadline = time.monotonic() + seconds
    times, rows, k = [], 0, 0
    while time.monotonic() < deadline:
        rows_now = with_ids(frame, f"{os.getpid()}-{k}")
        t0 = time.perf_counter()
        write(ws, arm, rows_now, f"w{os.getpid()}")
        times.append(time.perf_counter() - t0)
        rows += batch
        k += 1
    results.put((rows + batch, times))  # type: ignore[attr-defined]  # the warm-up write is acknowledged too


def fresh(name: str) -> workspaces.Workspace:
    root = workspaces.workspaces_dir() / name
    shutil.rmtree(root, ignore_errors=True)
    return workspaces.resolve(name, create=True)


def writes(processes: int, arm: str, batch: int, seconds: float) -> dict[str, float]:
    name = f"w-{arm}-{processes}-{batch}"
    ws = fresh(name)
    ctx = mp.get_context("spawn")
    ready, results, go = ctx.Queue(), ctx.Queue(), ctx.Event()
    procs = [ctx.Process(target=writer, args=(name, arm, batch, seconds, ready, go, results)) for _ in range(processes)]
    for p in procs:
        p.start()
    for _ in procs:
        ready.get(timeout=300)
    t0 = time.perf_counter()
    go.set()
    got = [results.get(timeout=600) for _ in procs]
    wall = time.perf_counter() - t0
    for p in procs:
        p.join()
    acknowledged = sum(r for r, _ in got)
    times = np.array([t for _, ts in got for t in ts])
    # the earlier layout's files, and what a writer's first open migrated of them into the table
    listed = [str(p) for p in log_table.root(ws, "predictions").glob("replica=*/date=*/*.parquet")]
    with store.connect(ws) as con:
        files = f"SELECT id FROM read_parquet({listed!r})" if listed else "SELECT NULL AS id WHERE FALSE"
        both = f"SELECT id FROM log_predictions UNION ALL {files}"
        held, distinct = con.execute(f"SELECT count(*), count(DISTINCT id) FROM ({both})").fetchone()
    shutil.rmtree(ws.root, ignore_errors=True)
    return {
        "rows_s": (acknowledged - processes * batch) / wall, "writes_s": len(times) / wall,
        "p50_ms": float(np.percentile(times, 50) * 1e3), "p95_ms": float(np.percentile(times, 95) * 1e3),
        "lost": acknowledged - distinct, "doubled": held - distinct,
    }  # fmt: skip


def reader(name: str, ids: object, seen: object, stop: object) -> None:
    """As a page run does: a connection (which ingests the log's new commits first), the log's view; polls for each
    id handed over."""
    ws = workspaces.resolve(name)
    while not stop.is_set():  # type: ignore[attr-defined]
        try:
            wanted = ids.get(timeout=0.5)  # type: ignore[attr-defined]
        except Exception:  # noqa: BLE001 - queue.Empty
            continue
        while True:
            with store.connect(ws) as con:
                found = con.execute("SELECT count(*) FROM log_predictions WHERE id = ?", [wanted]).fetchone()[0]
            if found:
                seen.put((wanted, time.time()))  # type: ignore[attr-defined]
                break
            time.sleep(0.05)


def background_files(ws: workspaces.Workspace, count: int) -> None:
    """`count` uncompacted files of 20 rows each, as a replica leaves them between compactions."""
    frame = template(20, seed=1)
    for k in range(count):
        prediction_log.write(ws, with_ids(frame, f"bg-{k}"), "bg")


def latency(way: str, samples: int, files: int) -> list[float]:
    name = f"lat-{way}-{files}"
    ws = fresh(name)
    background_files(ws, files)
    ctx = mp.get_context("spawn")
    ids, seen, stop = ctx.Queue(), ctx.Queue(), ctx.Event()
    proc = ctx.Process(target=reader, args=(name, ids, seen, stop))
    proc.start()
    frame = template(1, seed=2)
    log = prediction_log.BackgroundLog(ws) if way == "background" else None
    out = []
    for k in range(samples + 1):  # the first is a warm-up (the reader's first look at the files)
        row = with_ids(frame, f"lat-{k}")
        ids.put(row["id"].iloc[0])
        time.sleep(0.2)  # the reader is polling
        handed = time.time()
        if log is not None:
            log.submit(prediction_log.LogBatch([prediction(row)], "api", "v1"))
        else:
            prediction_log.write(ws, row, "lat")
        _, at = seen.get(timeout=120)
        if k:
            out.append(at - handed)
        time.sleep(max(0.0, 1.0 - (time.time() - handed)))
    stop.set()
    proc.join()
    shutil.rmtree(ws.root, ignore_errors=True)
    return out


def prediction(row: pd.DataFrame) -> object:
    from core.production.prediction import Prediction

    r = row.iloc[0]
    return Prediction(
        id=r["id"], name=r["name"], sha256=r["sha256"], properties={p: float(r[p]) for p in PROPERTIES},
        probs=np.array(r["probs"], dtype=np.float32), label=r["predicted"], confidence=float(r["confidence"]),
        energy=float(r["energy"]), ood_score=float(r["ood_score"]), ood=bool(r["ood"]),
        embedding=np.array(r["embedding"], dtype=np.float32), action="accept", latency_ms=float(r["latency_ms"]),
        version="v1", request_id=r["id"],
    )  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--batches", default="1,25,1000", help="rows per write, comma-separated")
    parser.add_argument("--samples", type=int, default=15, help="rows timed from handed over to seen, per way")
    parser.add_argument("--files", default="0,1000", help="uncompacted files already in the log, comma-separated")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="scale-bench-"))
    os.environ[workspaces.DATA_ROOT_ENV] = str(root)
    try:
        print(f"1. writes into the log for {args.seconds:g} s (rows/s and writes/s of all processes together)")
        print(f"   {'processes':>9} {'rows/write':>10} {'path':>9} {'rows/s':>9} {'writes/s':>9} {'p50 ms':>8} "
              f"{'p95 ms':>8} {'lost':>5} {'doubled':>7}")  # fmt: skip
        for batch in (int(b) for b in args.batches.split(",")):
            for processes in (1, 3):
                order = ARMS if (batch + processes) % 2 else ARMS[::-1]
                for arm in order:
                    r = writes(processes, arm, batch, args.seconds)
                    print(f"   {processes:>9} {batch:>10} {arm:>9} {r['rows_s']:>9,.0f} {r['writes_s']:>9,.1f} "
                          f"{r['p50_ms']:>8.1f} {r['p95_ms']:>8.1f} {r['lost']:>5} {r['doubled']:>7}", flush=True)  # fmt: skip
        print("2. a prediction handed to the log until a page's read-only connection sees it, seconds")
        for files in (int(f) for f in args.files.split(",")):
            for way in ("background", "delta"):
                got = np.array(latency(way, args.samples, files))
                print(f"   {way:>10}, {files:>5} files already: median {np.median(got):.2f}, p90 {np.percentile(got, 90):.2f}, "
                      f"max {got.max():.2f} (n={len(got)})", flush=True)  # fmt: skip
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
