"""Helpers shared by the tests: synthetic images made with PIL, tiny training settings, AppTest runners."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import socket
import stat
import struct
import subprocess
import time
import urllib.request
import uuid
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from core.cli.main import main
from core.data import gather
from core.model.config import DataConfig, TrainConfig
from core.production.prediction import Prediction
from core.workspace.paths import Workspace


def picture(seed: int, size: tuple[int, int] = (64, 48), mode: str = "RGB") -> Image.Image:
    """A distinct synthetic picture: smooth gradients plus a few random blocks."""
    rng = np.random.default_rng(seed)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack(
        [
            (xx * rng.uniform(1, 4) + yy * rng.uniform(0, 3)) % 256,
            (yy * rng.uniform(1, 4)) % 256,
            np.full((h, w), rng.uniform(0, 255)),
        ],
        axis=-1,
    )
    for _ in range(4):
        x0, y0 = rng.integers(0, w // 2), rng.integers(0, h // 2)
        base[y0 : y0 + h // 3, x0 : x0 + w // 3] = rng.uniform(0, 255, 3)
    img = Image.fromarray(base.astype(np.uint8), "RGB")
    return img if mode == "RGB" else img.convert(mode)


def encode(img: Image.Image, fmt: str = "PNG", **kwargs: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def png_bytes(seed: int, size: tuple[int, int] = (64, 48)) -> bytes:
    return encode(picture(seed, size))


def bomb_png(width: int = 40_000, height: int = 40_000) -> bytes:
    """A tiny PNG whose header claims a huge image: a decompression bomb's calling card."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 100)) + chunk(b"IEND", b"")


def exif_rotated_jpeg(seed: int = 7) -> bytes:
    """A 80x40 JPEG whose EXIF says 'rotate 90°': it should be seen as 40x80."""
    exif = Image.Exif()
    exif[0x0112] = 6
    return encode(picture(seed, (80, 40)), "JPEG", exif=exif.tobytes())


def sixteen_bit_png(seed: int = 3) -> bytes:
    arr = np.asarray(picture(seed).convert("L"), dtype=np.uint16) * 257
    return encode(Image.fromarray(arr))


def alpha_png(seed: int = 4) -> bytes:
    img = picture(seed).convert("RGBA")
    img.putalpha(Image.new("L", img.size, 0))  # fully transparent: must come out white, not black
    return encode(img)


TINY = TrainConfig(data=DataConfig(size=32, flip=False), freeze_epochs=1, epochs=1, head_passes=20, batch_size=8, lr=5e-3)


def colour_image(label: int, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    base = np.array([[200, 40, 40], [40, 40, 200], [40, 180, 40]][label], dtype=np.float64)
    pixels = np.clip(base + rng.normal(0, 25, (48, 48, 3)), 0, 255).astype(np.uint8)
    return encode(Image.fromarray(pixels, "RGB"))


def fill(ws: Workspace, counts: dict[str, int]) -> None:
    items = []
    for k, (label, n) in enumerate(counts.items()):
        items += gather.upload_items([(f"{label}{i}.png", colour_image(k, 100 * k + i)) for i in range(n)], label)
    gather.ingest(ws, items)


def make_zip(members: dict[str, bytes], links: tuple[str, ...] = (), devices: tuple[str, ...] = ()) -> bytes:
    """A zip of members; `links` become symbolic links to /etc/passwd, `devices` character devices (as a hostile
    archiver would record them)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
        for names, kind, body in ((links, stat.S_IFLNK, "/etc/passwd"), (devices, stat.S_IFCHR, "")):
            for name in names:
                info = zipfile.ZipInfo(name)
                info.external_attr = (kind | 0o777) << 16
                zf.writestr(info, body)
    return buf.getvalue()


def app(page: str, ws: str | None = None) -> AppTest:
    """The app through its router, on one page, with the workspace the sidebar picker shows."""
    at = AppTest.from_file("../streamlit_app.py", default_timeout=120)
    if ws:
        at.session_state["workspace_name"] = ws
    at.run()
    if page != "app_pages/overview.py":  # the default page
        at.switch_page(page)
        at.run()
    return at


def answered(at: AppTest, label: str) -> bool:
    """Whether the Predict page's answer names `label`: as its headline, or, for an image flagged out of domain
    (whose headline names no class), as the closest class under it."""
    heads = [m.value for m in at.markdown if m.value.startswith("### This")]
    if any(h.startswith(f"### This looks like {label} (") for h in heads):
        return True
    return any("doesn't look like any of" in h for h in heads) and any(f"The closest is {label} (" in w.value for w in at.warning)


def links(at: AppTest) -> dict[str, str]:
    """The page's links to other pages (st.page_link): label -> the page it opens."""
    return {e.proto.label: e.proto.page for e in at.get("page_link")}


def errors(at: AppTest) -> list[str]:
    return [e.value for e in at.error]


def upload(at: AppTest, files: list[tuple[str, bytes]]) -> AppTest:
    at.file_uploader(key="predict_upload").set_value([(name, data, "image/png") for name, data in files])
    return at.run()


def fake_prediction(i: int) -> Prediction:
    props = {"width": 10, "height": 10, "brightness": 0.5, "contrast": 0.1, "saturation": 0.2, "sharpness": 0.1}
    probs = np.array([0.7, 0.2, 0.1], np.float32)
    return Prediction(
        uuid.uuid4().hex, f"f{i}.jpg", "ab" * 32, props, probs, "red", 0.7, -3.0, 3.0, False, np.zeros(16, np.float32), "red", 5.0
    )


def bad_files() -> list[tuple[str, bytes]]:
    cmyk = encode(Image.new("CMYK", (64, 64), (0, 255, 255, 0)), "JPEG")
    return [
        ("corrupt.jpg", colour_image(0, 1)[:200]),
        ("bomb.png", bomb_png()),
        ("notes.jpg", b"this is not an image at all"),
        ("empty.png", b""),
        ("cmyk.jpg", cmyk),
        ("rotated.jpg", exif_rotated_jpeg()),
        ("good.png", colour_image(1, 5)),
    ]


@dataclass(frozen=True)
class CliRun:
    """What `python -m core ...` would have printed and returned, run in this process."""

    returncode: int
    stdout: str
    stderr: str


def cli(*args: str) -> CliRun:
    """The command line's entry function, in-process (no interpreter start, no torch import per call)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(args))
        except SystemExit as exc:  # argparse: --help, or a usage error
            code = exc.code if isinstance(exc.code, int) else 1
    return CliRun(code, out.getvalue(), err.getvalue())


def derived_version(ws: Workspace, source: str, permute: list[int] | None = None, ood_threshold: float | None = None) -> str:
    """A new registered version with `source`'s weights; with `permute`, its head's outputs reordered, so it
    answers differently from `source` (a candidate that disagrees, without training another model); with
    `ood_threshold`, that out-of-domain threshold (a huge one flags every image)."""
    import torch

    from core.model import registry, weights

    model, meta = weights.load_version(ws, source)
    if permute is not None:
        last = model.head[-1]
        with torch.no_grad():
            last.weight.copy_(last.weight[permute].clone())
            last.bias.copy_(last.bias[permute].clone())
    reference = dict(registry.load_reference(ws, source))
    if ood_threshold is not None:
        reference["ood_threshold"] = np.array([ood_threshold], np.float64)
    return weights.save_version(ws, model, {k: v for k, v in meta.items() if k != "version"}, reference)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ready(health: str, proc: subprocess.Popen, output: object, failure: str, limit_s: float) -> None:
    """Poll a server's health URL until it answers 200 (a hang guard, not a speed limit: `limit_s`); a server that
    exits, or outlasts the limit, is killed and the test fails with the end of its output."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with urllib.request.urlopen(health, timeout=5) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)  # the interval between polls; the condition decides
    proc.kill()
    if output.seekable():  # a file the server wrote to (a pipe is read as it is)
        output.seek(0)
    pytest.fail(f"{failure}: {output.read().decode(errors='replace')[-2000:]}")


def until(condition: Callable[[], bool], failure: str, limit_s: float = 600) -> None:
    """Wait for a condition another process makes true (a hang guard, not a speed limit: `limit_s`)."""
    deadline = time.monotonic() + limit_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(failure)
        time.sleep(0.2)  # the interval between checks; the condition decides


def reached(path: Path, proc: subprocess.Popen) -> None:
    """Until a process has touched the file (it reached a failpoint), or ended without reaching it."""
    while not path.exists() and proc.poll() is None:
        time.sleep(0.02)  # the interval between checks; the condition decides


ARMED: dict[str, dict[str, int]] = {}  # failpoint -> {kill / pause / mark: times armed in this test session}


def armed(spec: str) -> str:
    """Count the points a test arms (the session's summary prints them: tests/conftest.py); returns the spec."""
    from core.workspace import failpoints

    for point in failpoints.parse(spec).values():
        counts = ARMED.setdefault(point.name, {})
        counts[point.action] = counts.get(point.action, 0) + 1
    return spec


def arm(monkeypatch: pytest.MonkeyPatch, spec: str) -> None:
    """Arm failpoints in this process (as IMAGEDP_FAILPOINT arms them in a started one): for races between
    sessions of one app process, run on threads."""
    from core.workspace import failpoints

    monkeypatch.setattr(failpoints, "_ARMED", failpoints.parse(armed(spec)))
    monkeypatch.setattr(failpoints, "_HITS", {})


def log_scored(
    ws: Workspace,
    n: int,
    seed: int = 0,
    keep: bool = False,
    *,
    prefix: str = "s",
    base: int = 500,
    apart: timedelta = timedelta(hours=1),
    days: int = 2,
    **changes: object,
) -> list[Prediction]:
    """n real predictions of colour images by production, logged `apart` from each other starting `days` ago (oldest
    first), none flagged unless `changes` say so; images kept only where the queue needs them unless `keep`."""
    from core.model import scoring  # torch: where a model runs
    from core.production import prediction, prediction_log
    from core.workspace import store

    predictor = scoring.load_predictor(ws)
    items = [(f"{prefix}{seed}-{i}.png", colour_image(i % 3, base + 100 * seed + i)) for i in range(n)]
    preds, _ = prediction.predict_images(predictor, items, keep_bytes=True)
    preds = [dataclasses.replace(p, **{"ood": False, "referred": False, **changes}) for p in preds]
    start = store.now() - timedelta(days=days)
    prediction_log.log_predictions(ws, preds, "app", predictor.version, [start + apart * i for i in range(n)], keep)
    return preds


def legacy_spool(ws: Workspace, frame: pd.DataFrame, name: str = "20260101T000000-earlier.parquet") -> Path:
    """A spool file as an earlier version left it (rows the database was too busy to take): the migration folds it
    into the log's table."""
    import duckdb

    folder = ws.root / "logs" / "spool"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    con = duckdb.connect()
    con.register("rows", frame)
    arrays = "probs::FLOAT[] AS probs, embedding::FLOAT[] AS embedding"
    con.execute(f"COPY (SELECT * EXCLUDE (probs, embedding), {arrays} FROM rows) TO '{path}' (FORMAT parquet)")
    con.close()
    return path


def edit_log(ws: Workspace, updates: dict[str, str], predicate: str | None = None) -> int:
    """Logged rows changed in place in the log's Delta table (delta-rs `update`: `updates` maps a column to a SQL
    expression, `predicate` selects the rows), so that a test can set what serving would have logged; returns the rows
    changed. The next connection ingests the change (the days it touched are read again)."""
    from core.workspace import log_table

    with log_table.using(ws, "predictions") as dt:
        done = dt.update(updates=updates, predicate=predicate)
    return int(done["num_updated_rows"])


def log_paths(ws: Workspace, kind: str) -> list[Path]:
    """The files of a local log table's latest version, as paths on this disk."""
    from core.workspace import log_table

    return [log_table.root(ws, kind) / f.rel for f in log_table.files(ws, kind)]
