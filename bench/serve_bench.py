"""The prediction API under load: throughput, latency and log rows at 1, 4, 16 and 64 concurrent clients, beside
offline batch scoring of the same files (the limit).

    .venv/bin/python bench/serve_bench.py [--folder ../shared/data/bears_small] [--levels 1 4 16 64]
        [--requests 96] [--camera 24] [--max-wait-ms 5] [--max-batch 16] [--rounds 3]

Trains the default recipe on the folder in a throwaway data root and promotes it, then starts `python -m core
serve` as its own process on 127.0.0.1. The files: the folder's photos at their own size, plus `--camera` photos
at 4000x3000 made from them with sensor-like noise added (so that they carry detail and compress like camera
JPEGs, 2-4 MB, rather than upscaled thumbnails, whose decode is unusually cheap). Per level, each client posts one
image per request (the files in turn) until `--requests` (at least 4 per client) have been answered, through
httpx's async client; the load is bounded (no client sends a new request before its last is answered). Then the
server is stopped (its log flushed) and the rows logged with source `api` are counted against requests answered.
Offline batch scoring: the same files through `prediction.predict_images` in-process, batch 32, decode included.
Prints figures; asserts nothing.

The Predict page's path: in-process, one upload at a time through serving.Service as the page calls it (the
snapshot check, decode, the batcher, decision, the hand-off to the log, the preview from the same decode).

What it leaves out: the network (client and server share this machine and its two cores, so the client's own
CPU counts against the server); TLS; for the page, Streamlit's rerun, the upload and drawing in the browser
(bench/concurrency_bench.py times eight browser sessions end to end); the model load (warm when timing starts).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def prepare(folder: Path) -> None:
    from core.data import gather
    from core.model import registry, runs
    from core.workspace import workspaces

    ws = workspaces.resolve("bench", create=True)
    gather.ingest(ws, gather.folder_items(folder)[0])
    result = runs.train_workspace(ws, runs.defaults(ws))
    registry.promote(ws, result["version"])
    print(f"model {result['version']}: {result['test_accuracy']:.1%} test accuracy at {result['size']} px", flush=True)


def camera_photos(files: list[Path], out: Path, n: int) -> list[Path]:
    """4000x3000 JPEGs from the folder's photos, with noise like a sensor's so they carry detail."""
    from PIL import Image

    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    made = []
    for i, f in enumerate(files[:n]):
        big = np.asarray(Image.open(f).convert("RGB").resize((4000, 3000), Image.Resampling.BICUBIC), np.float32)
        noisy = np.clip(big + rng.normal(0, 6, big.shape), 0, 255).astype(np.uint8)
        path = out / f"camera-{i:03d}.jpg"
        Image.fromarray(noisy).save(path, quality=92)
        made.append(path)
    return made


async def load(url: str, payloads: list[tuple[str, bytes]], clients: int, total: int) -> tuple[list[float], int, int, float]:
    """Latencies of answered requests, errors, images answered, wall seconds."""
    import httpx

    latencies: list[float] = []
    errors = answered = 0
    counter = iter(range(total))
    async with httpx.AsyncClient(base_url=url, timeout=300) as client:

        async def one_client() -> None:
            nonlocal errors, answered
            for k in counter:
                name, data = payloads[k % len(payloads)]
                start = time.perf_counter()
                r = await client.post("/v1/predict", files=[("files", (name, data, "image/jpeg"))])
                if r.status_code == 200:
                    latencies.append(time.perf_counter() - start)
                    answered += len(r.json()["predictions"])
                else:
                    errors += 1

        start = time.perf_counter()
        await asyncio.gather(*(one_client() for _ in range(clients)))
        return latencies, errors, answered, time.perf_counter() - start


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) * 1000 if values else float("nan")


def serve(env: dict[str, str], port: int, args: argparse.Namespace) -> subprocess.Popen:
    import httpx

    proc = subprocess.Popen(
        [sys.executable, "-m", "core", "serve", "--workspace", "bench", "--port", str(port)]
        + ["--max-wait-ms", str(args.max_wait_ms), "--max-batch", str(args.max_batch), "--max-queue", "100000"]
        + ["--decoders", str(args.decoders)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v1/health", timeout=5).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    proc.kill()
    sys.exit(f"the server did not become ready: {proc.stderr.read().decode()[-2000:]}")


def api_rows() -> int:
    from core.workspace import store, workspaces

    with store.connect(workspaces.resolve("bench")) as con:
        return con.execute("SELECT count(*) FROM log_predictions WHERE source = 'api'").fetchone()[0]


def batch_limit(files: list[Path]) -> float:
    """Images per second scoring the same files offline in one process (decode included), the second of two runs."""
    from core.model import scoring
    from core.production import prediction
    from core.workspace import workspaces

    predictor = scoring.load_predictor(workspaces.resolve("bench"))
    items = [(f.name, f.read_bytes()) for f in files]
    rate = 0.0
    for _ in range(2):
        start = time.perf_counter()
        prediction.predict_images(predictor, items, 32)
        rate = len(items) / (time.perf_counter() - start)
    return rate


def page_path(files: list[Path]) -> list[float]:
    """Milliseconds per upload as the Predict page scores one: the snapshot check, one decode, the batcher (alone),
    routing and the decision, handing the prediction to the log, and its preview (from the same decode)."""
    from core.production import serving
    from core.workspace import workspaces

    service = serving.Service(workspaces.resolve("bench"))
    service.load()
    payloads = [(f.name, f.read_bytes()) for f in files]
    times = []
    for name, data in payloads:
        start = time.perf_counter()
        _, scored = service.serve([(name, data)], "app")
        preview = scored.shown[0].look  # what the page shows: scoring's decode, no second one
        assert preview is not None
        times.append(time.perf_counter() - start)
    service.log.flush(120)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--folder", type=Path, default=ROOT.parent / "shared" / "data" / "bears_small")
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 4, 16, 64])
    parser.add_argument("--requests", type=int, default=96)
    parser.add_argument("--camera", type=int, default=24)
    parser.add_argument("--max-wait-ms", type=float, default=5.0)
    parser.add_argument("--max-batch", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3, help="each level this many times; mean (sd) reported")
    parser.add_argument("--decoders", type=int, default=0, help="the server's --decoders (0: one per core)")
    parser.add_argument("--sets", nargs="+", default=["folder", "camera"], choices=["folder", "camera"])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["IMAGEDP_DATA_ROOT"] = str(Path(tmp) / "root")
        env = {**os.environ}
        prepare(args.folder.resolve())
        own = sorted(p for p in args.folder.resolve().rglob("*") if p.suffix.lower() in {".jpg", ".jpeg", ".png"})
        camera = camera_photos(own, Path(tmp) / "camera", args.camera)
        sets = {"folder": ("the folder's photos", own[:200]), "camera": ("4000x3000 camera-like JPEGs", camera)}
        for name, files in (sets[k] for k in args.sets):
            size = statistics.mean(f.stat().st_size for f in files) / 1e6
            print(f"\n{name}: {len(files)} files, {size:.2f} MB on average", flush=True)
            limits = [batch_limit(files) for _ in range(args.rounds)]
            print(f"  offline batch scoring (the limit): {spread(limits)} images/s over {args.rounds} round(s)", flush=True)
            page = page_path(files)
            print(
                f"  the Predict page's path, one upload at a time: p50 {pct(page, 50):.0f} ms, p95 {pct(page, 95):.0f} ms "
                f"per upload ({len(page) / sum(page):.1f} uploads/s)",
                flush=True,
            )
            payloads = [(f.name, f.read_bytes()) for f in files]
            for clients in args.levels:
                rates, shares = [], []
                for r in range(args.rounds):
                    port = free_port()
                    proc = serve(env, port, args)
                    before = api_rows()
                    try:
                        total = max(args.requests, 4 * clients)
                        cpu = time.process_time()
                        lat, errors, answered, wall = asyncio.run(load(f"http://127.0.0.1:{port}", payloads, clients, total))
                        client_cpu = (time.process_time() - cpu) / (wall * (os.cpu_count() or 1))
                    finally:
                        proc.send_signal(2)  # SIGINT: uvicorn stops, the log is flushed
                        proc.wait(120)
                    rows = api_rows() - before
                    rates.append(answered / wall)
                    shares.append(answered / wall / limits[r])
                    print(
                        f"  {clients:>3} client(s), round {r + 1}: {answered / wall:6.1f} images/s; latency p50 "
                        f"{pct(lat, 50):6.0f} ms, p95 {pct(lat, 95):6.0f} ms, p99 {pct(lat, 99):6.0f} ms; {errors} error(s); "
                        f"{rows} row(s) logged for {len(lat)} request(s) answered; the load generator used "
                        f"{client_cpu:.0%} of the machine's CPU",
                        flush=True,
                    )
                print(
                    f"  {clients:>3} client(s): {spread(rates)} images/s, {spread([100 * x for x in shares])} % of batch "
                    "scoring in the same round",
                    flush=True,
                )


def spread(values: list[float]) -> str:
    """Mean (sd) of a few rounds."""
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.1f} (sd {sd:.1f})"


if __name__ == "__main__":
    main()
