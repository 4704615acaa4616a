"""Peak memory (RSS) of the commands a user runs, on the worst inputs the hardening issue found, each in its own
process (`python -m core ...`, the interpreter and imports included).

    .venv/bin/python bench/memory_bench.py [--repeats 3]

Inputs, made in a temporary folder: four 9400x9400 PNGs (about 280 kB each, 88 megapixels: just under the
decompression-bomb limit); a 16 MB zip holding one 1.5 GB entry; a PNG claiming 200 megapixels; one claiming
60000x60000 (10 GB decoded); a 60 MB file; a folder of 2,000 small photos given to `predict`; and a
baseline of 20 small PNGs. Peak RSS per command: mean and range over the repeats. Prints figures; asserts nothing.

What it leaves out: the app (streamlit) process, whose uploads Streamlit holds in memory before our code sees them.
"""

from __future__ import annotations

import argparse
import io
import os
import struct
import subprocess
import sys
import tempfile
import zipfile
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PEAK = "import resource, subprocess, sys; r = subprocess.run(sys.argv[1:], capture_output=True); " \
       "print(r.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"  # fmt: skip


def header_png(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims width x height."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 100)) + chunk(b"IEND", b"")


def big_flat_png(side: int) -> bytes:
    """A real side x side PNG, one colour with a little noise in a corner: it compresses to a few hundred kB."""
    img = Image.new("RGB", (side, side), (120, 90, 60))
    img.paste(Image.fromarray(np.random.default_rng(side).integers(0, 255, (64, 64, 3), dtype=np.uint8)), (0, 0))
    buf = io.BytesIO()
    img.save(buf, "PNG", compress_level=9)
    return buf.getvalue()


def inputs(tmp: Path) -> dict[str, list[str]]:
    from tests.helpers import colour_image

    cases: dict[str, list[str]] = {}
    small = tmp / "small" / "cat"
    small.mkdir(parents=True)
    for i in range(20):
        (small / f"{i}.png").write_bytes(colour_image(i % 3, i))
    cases["baseline: 20 small PNGs"] = ["gather", "--workspace", "m", "--folder", str(small.parent)]
    big = tmp / "big" / "cat"
    big.mkdir(parents=True)
    data = big_flat_png(9400)
    for i in range(4):  # distinct bytes, the same size
        (big / f"{i}.png").write_bytes(_retag(data, i))
    cases[f"four 9400x9400 PNGs ({len(data) / 1e3:.0f} kB each)"] = ["gather", "--workspace", "m", "--folder", str(big.parent)]
    archive = tmp / "huge-entry.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        with zf.open("cat/huge.png", "w", force_zip64=True) as fh:
            block = b"\0" * (16 << 20)
            for _ in range(1_500_000_000 // len(block)):
                fh.write(block)
    cases[f"a {archive.stat().st_size / 1e6:.0f} MB zip with a 1.5 GB entry"] = [
        "gather",
        "--workspace",
        "m",
        "--zip",
        str(archive),
    ]
    for name, (w, h) in {"a PNG claiming 200 megapixels": (14_150, 14_150), "a PNG decoding to 10 GB": (60_000, 60_000)}.items():
        folder = tmp / name.replace(" ", "-") / "cat"
        folder.mkdir(parents=True)
        (folder / "x.png").write_bytes(header_png(w, h))
        cases[name] = ["gather", "--workspace", "m", "--folder", str(folder.parent)]
    huge = tmp / "huge" / "cat"
    huge.mkdir(parents=True)
    with open(huge / "x.png", "wb") as fh:
        fh.write(b"\x89PNG\r\n\x1a\n" + os.urandom(60_000_000))
    cases["a 60 MB file"] = ["gather", "--workspace", "m", "--folder", str(huge.parent)]
    return cases


def _retag(data: bytes, i: int) -> bytes:
    """The same PNG with a text chunk before IEND, so each file has its own bytes (and is not a duplicate)."""
    body = b"Comment\0" + str(i).encode()
    chunk = struct.pack(">I", len(body)) + b"tEXt" + body + struct.pack(">I", zlib.crc32(b"tEXt" + body))
    return data[:-12] + chunk + data[-12:]


def peak(cmd: list[str], data_root: Path) -> tuple[int, float]:
    env = {**os.environ, "IMAGEDP_DATA_ROOT": str(data_root)}
    out = subprocess.run([sys.executable, "-c", PEAK, sys.executable, "-m", "core", *cmd], cwd=ROOT, env=env,
                         capture_output=True, text=True, check=True).stdout.split()  # fmt: skip
    return int(out[0]), int(out[1]) / 1024  # ru_maxrss is in kB on Linux


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="memory-bench-"))
    cases = inputs(tmp)
    print(f"peak RSS of `python -m core ...` per input, {args.repeats} runs each, fresh data root each run")
    for name, cmd in cases.items():
        peaks, codes = [], set()
        for r in range(args.repeats):
            code, mb = peak(cmd, tmp / f"root-{abs(hash(name))}-{r}")
            peaks.append(mb)
            codes.add(code)
        print(f"  {name:<45} {np.mean(peaks):7.0f} MB (range {min(peaks):.0f}-{max(peaks):.0f}), exit {sorted(codes)}")
    predict_folder(tmp, args.repeats)


def predict_folder(tmp: Path, repeats: int) -> None:
    """`predict` over 2,000 photos: it reads one batch at a time, so memory does not grow with the folder."""
    from core.model import registry, runs
    from core.workspace import workspaces
    from tests.helpers import fill

    root = tmp / "predict-root"
    os.environ["IMAGEDP_DATA_ROOT"] = str(root)
    ws = workspaces.resolve("m", create=True)
    fill(ws, {"red": 12, "blue": 12, "green": 12})
    cfg = runs.defaults(ws)
    from dataclasses import replace

    cfg = replace(cfg, data=replace(cfg.data, size=64), freeze_epochs=1, epochs=1)
    registry.promote(ws, runs.train_workspace(ws, cfg)["version"])
    for n in (200, 2000):
        folder = tmp / f"predict-{n}"
        folder.mkdir()
        photo = Image.fromarray(np.random.default_rng(0).integers(0, 255, (480, 640, 3), dtype=np.uint8))
        for i in range(n):
            photo.putpixel((0, 0), (i % 256, i // 256, 0))
            photo.save(folder / f"{i}.jpg", "JPEG", quality=90)
        peaks = [peak(["predict", "--workspace", "m", str(folder), "--json"], root)[1] for _ in range(repeats)]
        size = sum(f.stat().st_size for f in folder.iterdir()) / 1e6
        print(f"  predict over {n} photos 640x480 ({size:.0f} MB)      {np.mean(peaks):7.0f} MB "
              f"(range {min(peaks):.0f}-{max(peaks):.0f})")  # fmt: skip


if __name__ == "__main__":
    main()
