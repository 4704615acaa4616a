"""Seconds each analyst page takes to run over a workspace's log, as the app runs it: the page's whole script through
the app's router (Streamlit's AppTest, in this process), the first run and then again.

    .venv/bin/python bench/pages_bench.py --data-root /tmp/loggen-xxxx [--workspace log] [--runs 3]

Made for the log `bench/loggen.py --keep` leaves (10,000,000 rows and more). The first run of a page in a process
includes what it keeps on disk for next time when nothing was kept yet (the Monitor's figures per day, the review
queue's candidates per day, the labels' map) and the reading of every log file's footer; the later runs are what a
user waits for on a rerun or a second visit. Leaves out: the browser's rendering and the websocket, the first import
of the app's modules (done before timing). Asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PAGES = ("overview", "monitor", "review", "rollout", "summary")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", required=True, help="the data root that holds the workspace")
    parser.add_argument("--workspace", default="log")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    os.environ["IMAGEDP_DATA_ROOT"] = args.data_root
    sys.path.insert(0, str(ROOT))
    import importlib

    from streamlit.testing.v1 import AppTest

    for module in (
        "plotly.graph_objects",
        "core.production.review",
        "core.production.gate",
        "core.production.stakeholder",
        "core.production.monitoring.drift",
        "core.production.monitoring.report",
        "ui.common",
    ):
        importlib.import_module(module)  # the app's modules, imported before any timing (a server imports them once)

    at = AppTest.from_file(str(ROOT / "streamlit_app.py"), default_timeout=900)
    at.session_state["workspace_name"] = args.workspace
    for page in PAGES:
        times = []
        for i in range(args.runs):
            t0 = time.perf_counter()
            if i == 0:
                at.switch_page(f"app_pages/{page}.py")
            at.run()
            times.append(time.perf_counter() - t0)
            if at.exception:
                print(f"{page}: the page failed: {at.exception[0].value}")
                break
        later = ", ".join(f"{t:.2f}" for t in times[1:])
        print(f"{page:10s} first run {times[0]:6.2f} s; then {later} s", flush=True)


if __name__ == "__main__":
    main()
