"""Appends per second to the prediction log from 1 and 3 writer processes: the earlier layout (a Parquet file per
batch, hidden name, fsync, rename: `core/workspace/log_files.py` as of commit 22da0d2, loaded from git) against the
Delta table (`core.workspace.log_table.append`: one commit per batch, fsynced after).

    .venv/bin/python bench/log_append_bench.py [--batches 200] [--rows 16] [--runs 3]

Each writer appends `--batches` batches of `--rows` rows (16: the API's default largest batch) to one workspace's
log on this disk, and stops; the figure is batches committed per second over the whole run (the slowest writer's
end), as the mean and spread of `--runs` runs, each in a fresh folder. What it leaves out: the rest of a request
(decoding, scoring: the log's writer runs beside them on its own thread), a network file system, the page cache's
state (a fresh folder each run; fsync makes every append reach the disk). Asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from core.workspace import workspaces  # noqa: E402

EARLIER = "22da0d2"  # the last commit with the earlier layout

WRITER = textwrap.dedent(
    """
    import importlib.util, sys, time
    from pathlib import Path
    sys.path.insert(0, sys.argv[5])
    import pandas as pd
    from core.workspace.paths import Workspace
    layout, folder, batches, rows = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    if layout == "files":
        spec = importlib.util.spec_from_file_location("log_files", sys.argv[6])
        module = sys.modules['log_files'] = importlib.util.module_from_spec(spec); spec.loader.exec_module(module)
    else:
        from core.workspace import log_table as module
    from tests.helpers import fake_prediction
    from core.production import prediction_log
    ws = Workspace(folder)
    frames = [prediction_log.frame_of(ws, [prediction_log.LogBatch([fake_prediction(i) for i in range(rows)], "api", "v1")])
              for _ in range(batches)]  # made before the clock starts: only the append is timed
    print("ready", flush=True)
    sys.stdin.readline()
    t0 = time.perf_counter()
    for frame in frames:
        module.append(ws, "predictions", frame, f"api-{sys.argv[7]}")
    print(time.perf_counter() - t0, flush=True)
    """
)


def earlier_module() -> Path:
    """The earlier layout's writer, as it was at EARLIER."""
    path = Path(tempfile.mkdtemp(prefix="log-files-")) / "log_files.py"
    path.write_text(subprocess.run(["git", "show", f"{EARLIER}:core/workspace/log_files.py"], cwd=ROOT, check=True,
                                   capture_output=True, text=True).stdout)  # fmt: skip
    return path


def one_run(layout: str, writers: int, batches: int, rows: int, module: Path) -> float:
    """Batches per second from `writers` processes started together on one fresh workspace folder."""
    os.environ[workspaces.DATA_ROOT_ENV] = tempfile.mkdtemp(prefix=f"append-{layout}-")
    folder = workspaces.create_workspace("bench").root
    procs = [
        subprocess.Popen([sys.executable, "-c", WRITER, layout, str(folder), str(batches), str(rows), str(ROOT), str(module),
                          str(k)], cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                         env={**os.environ})  # fmt: skip
        for k in range(writers)
    ]
    for p in procs:
        assert p.stdout.readline().strip() == "ready"
    t0 = time.perf_counter()
    for p in procs:
        p.stdin.write("go\n")
        p.stdin.flush()
    for p in procs:
        p.communicate(timeout=1200)
    return writers * batches / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, default=200)
    parser.add_argument("--rows", type=int, default=16)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    module = earlier_module()
    print(f"appends of {args.rows} rows, {args.batches} per writer, {args.runs} runs each (mean ± sd, batches/s; rows/s)")
    for writers in (1, 3):
        for layout in ("files", "delta"):
            rates = [one_run(layout, writers, args.batches, args.rows, module) for _ in range(args.runs)]
            mean, sd = statistics.mean(rates), statistics.stdev(rates) if len(rates) > 1 else 0.0
            name = "earlier files" if layout == "files" else "Delta table"
            print(f"  {writers} writer(s), {name:>13}: {mean:7.1f} ± {sd:5.1f} batches/s; {mean * args.rows:8.0f} rows/s "
                  f"(runs: {', '.join(f'{r:.1f}' for r in rates)})")  # fmt: skip


if __name__ == "__main__":
    main()
