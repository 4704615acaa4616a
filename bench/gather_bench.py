"""Gather benchmarks: folder import + verification, and downloads with the pool vs one at a time.

    .venv/bin/python bench/gather_bench.py [--folder ../shared/data/bears_small] [--latency-ms 50]

Prints figures; asserts nothing about time.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.data import download, gather, verify
from core.workspace import workspaces


def bench_folder(folder: Path) -> None:
    ws = workspaces.create_workspace(f"folder-{time.time_ns()}")
    start = time.perf_counter()
    items, failed = gather.folder_items(folder)
    report = gather.ingest(ws, items)
    imported = time.perf_counter() - start
    start = time.perf_counter()
    checked = verify.verify_workspace(ws).checked
    verified = time.perf_counter() - start
    n = len(report.added)
    print(f"folder import   {n} images in {imported:.2f} s = {n / imported:.0f} images/s ({len(failed)} failed)")
    print(f"verification    {checked} images in {verified:.2f} s = {checked / verified:.0f} images/s")
    print(f"import+verify   {n / (imported + verified):.0f} images/s")


def serve(files: list[bytes], latency_s: float) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            time.sleep(latency_s)  # stands in for a round trip to a real image host
            body = files[int(self.path.strip("/").split(".")[0]) % len(files)]
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def bench_download(folder: Path, count: int, latency_ms: float) -> None:
    files = [p.read_bytes() for p in sorted(folder.rglob("*.jpg"))[:count]]
    server = serve(files, latency_ms / 1000)
    base = f"http://127.0.0.1:{server.server_port}"
    results = {}
    for workers in (1, 8):
        ws = workspaces.create_workspace(f"dl-{workers}-{time.time_ns()}")
        cfg = download.DownloadConfig(workers=workers, allow_private=("127.0.0.1/32",))
        urls = [download.UrlItem(f"{base}/{i}.jpg") for i in range(len(files))]
        start = time.perf_counter()
        report = download.download_images(ws, urls, "bear", cfg)
        seconds = time.perf_counter() - start
        results[workers] = len(report.added) / seconds
        print(
            f"download        {len(report.added)} images, {workers} worker(s), {latency_ms:.0f} ms latency: "
            f"{seconds:.2f} s = {results[workers]:.0f} images/s ({len(report.failed)} failed)"
        )
    print(f"pool speed-up   {results[8] / results[1]:.1f}x")
    server.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--folder", default=str(Path(__file__).resolve().parents[2] / "shared/data/bears_small"))
    parser.add_argument("--downloads", type=int, default=200)
    parser.add_argument("--latency-ms", type=float, nargs="+", default=[0, 50])
    args = parser.parse_args()
    folder = Path(args.folder)
    if not folder.is_dir():
        sys.exit(f"error: no folder at {folder}; pass --folder DIR with <label>/<image> files")
    with tempfile.TemporaryDirectory() as root:
        os.environ[workspaces.DATA_ROOT_ENV] = root
        print(f"machine: {os.cpu_count()} cores; folder: {folder}")
        bench_folder(folder)
        for latency in args.latency_ms:
            bench_download(folder, args.downloads, latency)


if __name__ == "__main__":
    main()
