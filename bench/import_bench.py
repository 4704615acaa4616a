"""Importing a labels CSV into a large log: how long the database is held, and what a second import of the same
file records.

    .venv/bin/python bench/import_bench.py [--rows 100000] [--log 200000] [--rounds 3]

Builds a throwaway workspace whose log holds `--log` distinct predictions (made directly in the database: the
import reads ids, versions and the latest feedback, not images) from one registered version's metadata, writes a
CSV labelling `--rows` of them (a tenth by sha256, the rest by prediction id, 1% naming a prediction not in the
log, 1% a label not in the classes), then times `review.import_labels` (the CLI's and the Review page's call) on it,
twice: the second import must record nothing. Meanwhile another process asks for the database every 50 ms; the
longest it waited is reported (the issue's complaint: a 100,000-row import held it for 112 s and a `predict` then
failed). Prints figures; asserts nothing.

What it leaves out: kept images (the import reads none); the CSV upload itself (the page reads the file first).
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
import uuid
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PROBE = """
import sys, time
from core.workspace import store, workspaces
ws = workspaces.resolve(sys.argv[1])
worst = 0.0
while True:
    t = time.monotonic()
    with store.connect(ws) as con:
        con.execute("SELECT 1").fetchone()
    worst = max(worst, time.monotonic() - t)
    print(f"{worst:.3f}", flush=True)
    time.sleep(0.05)
"""


def build(root: Path, n_log: int) -> tuple[object, list[tuple[str, str]]]:
    import pandas as pd

    from core.workspace import store, workspaces

    ws = workspaces.resolve("bench", create=True)
    (ws.models_dir / "v1").mkdir(parents=True)
    (ws.models_dir / "v1" / "model.json").write_text(json.dumps({"classes": ["black", "grizzly", "teddy"]}))
    rng = np.random.default_rng(0)
    ids = [uuid.uuid4().hex for _ in range(n_log)]
    shas = [f"{rng.integers(0, 2**63):016x}{i:048x}" for i in range(n_log)]
    frame = pd.DataFrame({"id": ids, "sha256": shas, "ts": pd.Timestamp("2026-11-01"), "model_version": "v1"})
    with store.connect(ws) as con:
        con.register("f", frame)
        con.execute("INSERT INTO predictions (id, sha256, ts, model_version, source, predicted, probs, confidence, ood) "
                    "SELECT id, sha256, ts, model_version, 'api', 'black', [0.8, 0.1, 0.1], 0.8, false FROM f")  # fmt: skip
    return ws, list(zip(ids, shas, strict=True))


def write_csv(path: Path, pairs: list[tuple[str, str]], rows: int) -> None:
    rng = np.random.default_rng(1)
    chosen = rng.choice(len(pairs), rows, replace=False)
    lines = ["prediction_id,sha256,label"]
    for k, i in enumerate(chosen):
        pid, sha = pairs[i]
        label = ("black", "grizzly", "teddy")[k % 3]
        if k % 100 == 1:
            pid = "not-in-the-log"
        if k % 100 == 2:
            label = "panda"
        lines.append(f",{sha},{label}" if k % 10 == 5 else f"{pid},,{label}")
    path.write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--log", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    first, second, waits = [], [], []
    for r in range(args.rounds):
        with tempfile.TemporaryDirectory() as tmp:
            os.environ["IMAGEDP_DATA_ROOT"] = tmp
            from core.production import review
            from core.workspace import store

            store._READY.clear()  # noqa: SLF001 - a new data root each round
            ws, pairs = build(Path(tmp), args.log)
            csv = Path(tmp) / "labels.csv"
            write_csv(csv, pairs, args.rows)
            probe = subprocess.Popen([sys.executable, "-c", PROBE, str(ws.root)], cwd=ROOT, stdout=subprocess.PIPE, text=True,
                                     env={**os.environ})  # fmt: skip
            probe.stdout.readline()  # it runs
            t = time.perf_counter()
            done = review.import_labels(ws, csv.read_bytes(), "bench")
            first.append(time.perf_counter() - t)
            t = time.perf_counter()
            again = review.import_labels(ws, csv.read_bytes(), "bench")
            second.append(time.perf_counter() - t)
            probe.terminate()
            waits.append(max(float(line) for line in probe.stdout.read().split() or ["0"]))
            print(f"round {r + 1}: {done.labelled} labelled, {len(done.failed)} refused, in {first[-1]:.2f} s; "
                  f"again: {again.labelled} labelled, {again.unchanged} unchanged, in {second[-1]:.2f} s; "
                  f"another process waited at most {waits[-1] * 1000:.0f} ms for the database")  # fmt: skip
    sd = statistics.stdev if args.rounds > 1 else (lambda v: 0.0)
    print(f"{args.rows:,} rows into a log of {args.log:,}: first import {statistics.mean(first):.2f} s (sd {sd(first):.2f}), "
          f"the same file again {statistics.mean(second):.2f} s (sd {sd(second):.2f}); longest wait of another process "
          f"{max(waits) * 1000:.0f} ms over {args.rounds} rounds")  # fmt: skip


if __name__ == "__main__":
    main()
