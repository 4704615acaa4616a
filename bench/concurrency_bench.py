"""Eight end users at once on the deployed app, against one at a time: what each waits, and whether every
prediction is logged exactly once.

    .venv/bin/python bench/concurrency_bench.py [--folder ../shared/data/bears_small] [--rounds 3] [--users 8]

Trains the default recipe on the folder in a throwaway data root, promotes it, and serves the end-user app
(`IMAGEDP_END_USER=1`, streamlit, one process as deployed) to Debian's chromium through Playwright. Each round:
- one at a time: eight sessions, one after another, each dropping its twenty photos on the page;
- at once: eight sessions (browser contexts) dropping their twenty photos at the same moment;
(the order of the two alternates between rounds, so both see the same machine). A session's latency is from
handing its files to the page until all twenty answers are on it: upload, decode, resize, model, decision,
rendering, the browser. Each session's photos are distinct bytes (the folder's files, brightened by the session's
number), so nothing is served from a cache. After each arm the log is read back: rows, distinct ids and
requests against photos sent. Prints figures; asserts nothing.

What it leaves out: the network (browser and server share this machine, and its two cores); photos larger than
the folder's (see bench/predict_bench.py for camera-sized ones); the first session's model load (warm-up).
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

ANSWERS = (  # the answers on the page: one headline per image ("This looks like ...", or "This doesn't look like ...")
    "() => [...document.querySelectorAll('h3')].filter(h => /^This (looks|doesn't look) like/.test(h.textContent)).length"
)
CHROMIUM = os.environ.get("CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"


def prepare(folder: Path) -> None:
    from core.data import gather
    from core.model import registry, runs
    from core.workspace import workspaces

    ws = workspaces.resolve("bench", create=True)
    gather.ingest(ws, gather.folder_items(folder)[0])
    result = runs.train_workspace(ws, runs.defaults(ws))
    registry.promote(ws, result["version"])
    print(f"model {result['version']}: {result['test_accuracy']:.1%} test accuracy at {result['size']} px")


def photos(files: list[Path], out: Path, rounds: int, users: int, per_user: int) -> dict[tuple[int, str, int], list[Path]]:
    """Distinct photos per (round, arm, user): the folder's files, brightened by a different amount each."""
    from PIL import Image

    sets: dict[tuple[int, str, int], list[Path]] = {}
    rng = np.random.default_rng(0)
    step = 0
    for r in range(rounds):
        for arm in ("alone", "together"):
            for u in range(users):
                step += 1
                folder = out / f"{r}-{arm}-{u}"
                folder.mkdir(parents=True)
                chosen = rng.choice(len(files), per_user, replace=False)
                for i, k in enumerate(chosen):
                    img = Image.open(files[k]).convert("RGB")
                    img.point(lambda v, s=step: min(255, v + s % 7 + 1)).save(folder / f"{i}.jpg", "JPEG", quality=92)
                sets[(r, arm, u)] = sorted(folder.iterdir())
    return sets


def serve(data_root: Path) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "IMAGEDP_DATA_ROOT": str(data_root), "IMAGEDP_END_USER": "1", "IMAGEDP_WORKSPACE": "bench"}
    cmd = [sys.executable, "-m", "streamlit", "run", "streamlit_app.py", "--server.port", str(port), "--server.headless",
           "true", "--server.fileWatcherType", "none"]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(180):
        try:
            if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).read() == b"ok":
                return proc, url
        except OSError:
            time.sleep(0.5)
    proc.kill()
    raise SystemExit("streamlit did not start")


def open_tabs(browser: object, url: str, n: int) -> list[object]:
    tabs = []
    for _ in range(n):
        tab = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
        tab.set_default_timeout(600_000)
        tab.goto(url)
        tab.get_by_text("What is in this picture?").wait_for()
        tabs.append(tab)
    return tabs


def drop(tab: object, files: list[Path]) -> float:
    tab.locator("input[type='file']").first.set_input_files([str(f) for f in files])
    return time.monotonic()


def answered(tab: object, n: int) -> float:
    tab.wait_for_function(f"({ANSWERS})() === {n}", timeout=600_000, polling=50)
    return time.monotonic()


def close(tabs: list[object]) -> None:
    for tab in tabs:
        tab.context.close()


Timed = tuple[list[float], float, float, float]  # waits, wall seconds, machine CPU seconds, the server's CPU seconds


def one_at_a_time(browser: object, url: str, sets: list[list[Path]], pid: int) -> Timed:
    """Each session's wait, and the seconds the server was busy with them (the sum: one after another); CPU from
    each drop to its answers (opening the tab, which loads Streamlit's page, is not counted)."""
    waits, machine, server = [], 0.0, 0.0
    for files in sets:
        (tab,) = open_tabs(browser, url, 1)
        before = cpu_seconds(pid)
        started = time.monotonic()
        drop(tab, files)
        waits.append(answered(tab, len(files)) - started)
        after = cpu_seconds(pid)
        machine, server = machine + after[0] - before[0], server + after[1] - before[1]
        close([tab])
    return waits, sum(waits), machine, server


def all_at_once(browser: object, url: str, sets: list[list[Path]], pid: int) -> Timed:
    """Each session's wait, and the seconds from the first drop to the last answer (CPU likewise)."""
    tabs = open_tabs(browser, url, len(sets))
    before = cpu_seconds(pid)
    starts = []
    for tab, files in zip(tabs, sets, strict=True):
        starts.append(time.monotonic())
        drop(tab, files)
    ends = [answered(tab, len(files)) for tab, files in zip(tabs, sets, strict=True)]
    after = cpu_seconds(pid)
    close(tabs)
    waits = [end - start for start, end in zip(starts, ends, strict=True)]
    return waits, max(ends) - min(starts), after[0] - before[0], after[1] - before[1]


def cpu_seconds(pid: int) -> tuple[float, float]:
    """CPU seconds used so far by the whole machine (busy, all cores) and by one process (Linux /proc)."""
    tick = os.sysconf("SC_CLK_TCK")
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    busy = sum(int(v) for v in fields) - int(fields[3]) - int(fields[4])  # all but idle and iowait
    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return busy / tick, (int(stat[11]) + int(stat[12])) / tick  # utime, stime


def logged(data_root: Path, seen: set[str]) -> tuple[int, int, int, list[float]]:
    """Rows logged since `seen` (which it then extends): rows, distinct ids, distinct requests, their latency_ms."""
    import duckdb

    deadline = time.monotonic() + 30
    while True:
        try:
            con = duckdb.connect(str(data_root / "workspaces" / "bench" / "workspace.duckdb"), read_only=True)
            break
        except duckdb.Error:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    try:
        rows = con.execute("SELECT id, request_id, latency_ms FROM log_predictions").fetchall()
    finally:
        con.close()
    new = [r for r in rows if r[0] not in seen]
    seen.update(r[0] for r in new)
    return len(new), len({r[0] for r in new}), len({r[1] for r in new}), [r[2] for r in new]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--folder", type=Path, default=ROOT.parent / "shared" / "data" / "bears_small")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--users", type=int, default=8)
    parser.add_argument("--photos", type=int, default=20)
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    tmp = Path(tempfile.mkdtemp(prefix="concurrency-bench-"))
    os.environ["IMAGEDP_DATA_ROOT"] = str(tmp / "root")
    prepare(args.folder)
    files = sorted(p for p in args.folder.rglob("*") if p.suffix.lower() in {".jpg", ".jpeg", ".png"})
    sets = photos(files, tmp / "photos", args.rounds, args.users, args.photos)
    sizes = [os.path.getsize(f) for s in sets.values() for f in s]
    print(f"{args.users} users x {args.photos} photos (median {np.median(sizes) / 1e3:.0f} kB) per arm, {args.rounds} rounds, "
          f"{os.cpu_count()} cores shared by server and browser")  # fmt: skip
    proc, url = serve(tmp / "root")
    seen: set[str] = set()
    summary: dict[str, list[tuple[float, float]]] = {"alone": [], "together": []}
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
            one_at_a_time(browser, url, [sets[(0, "alone", 0)][:2]], proc.pid)  # warm-up: the model loads once per process
            time.sleep(1.5)  # its two rows reach the log, and are not counted below
            logged(tmp / "root", seen)
            for r in range(args.rounds):
                for arm in ("alone", "together") if r % 2 == 0 else ("together", "alone"):
                    chosen = [sets[(r, arm, u)] for u in range(args.users)]
                    run = one_at_a_time if arm == "alone" else all_at_once
                    waits, took, machine, server = run(browser, url, chosen, proc.pid)
                    busy = machine / (took * (os.cpu_count() or 1))
                    per_session = (server / args.users, machine / args.users)
                    time.sleep(1.5)  # the app's log writer lingers up to half a second
                    rows, ids, requests, server_ms = logged(tmp / "root", seen)
                    sent = args.users * args.photos
                    p50, p95 = float(np.percentile(waits, 50)), float(np.percentile(waits, 95))
                    summary[arm].append((p50, p95))
                    print(f"round {r + 1} {arm:>8}: session wait p50 {p50:5.2f} s, p95 {p95:5.2f} s; "
                          f"{sent / took:5.1f} photos/s; logged {rows} rows, {ids} ids, {requests} requests of {sent} sent; "
                          f"server time per photo p50 {np.percentile(server_ms, 50):.0f} ms, "
                          f"p95 {np.percentile(server_ms, 95):.0f} ms; machine {busy:.0%} busy; CPU per session: "
                          f"{per_session[1]:.1f} s in all, {per_session[0]:.1f} s of it the app's server")  # fmt: skip
            browser.close()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    for arm, values in summary.items():
        p50s, p95s = np.array([v[0] for v in values]), np.array([v[1] for v in values])
        sd50, sd95 = (a.std(ddof=1) if len(a) > 1 else 0.0 for a in (p50s, p95s))
        rounds = len(values)
        print(f"{arm:>8}: p50 {p50s.mean():.2f} s (sd {sd50:.2f}), p95 {p95s.mean():.2f} s (sd {sd95:.2f}) over {rounds} rounds")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
