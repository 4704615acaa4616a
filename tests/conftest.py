"""Fixtures: a throwaway data root, workspaces, and images made with PIL (never downloaded)."""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core import workspace
from core.workspace import Workspace


@pytest.fixture(autouse=True)
def data_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own data root through the one environment variable."""
    root = tmp_path / "dataroot"
    monkeypatch.setenv(workspace.DATA_ROOT_ENV, str(root))
    return root


@pytest.fixture
def ws() -> Workspace:
    return workspace.create_workspace("test")


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


@pytest.fixture
def make_folder(tmp_path: Path) -> Callable[[dict[str, int]], Path]:
    """A <label>/<image> folder with the given number of distinct PNGs per label."""

    def make(counts: dict[str, int], name: str = "src") -> Path:
        root = tmp_path / name
        seed = 0
        for label, n in counts.items():
            (root / label).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                seed += 1
                (root / label / f"img{i}.png").write_bytes(png_bytes(seed * 101 + sum(map(ord, name))))
        return root

    return make


@pytest.fixture(scope="session")
def trained_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One tiny trained, promoted three-colour workspace per test session; tests get copies (see `prod`)."""
    from dataclasses import replace

    from core import registry, runs
    from tests.test_training import TINY, fill

    root = tmp_path_factory.mktemp("template") / "prod"
    ws = workspace.resolve(str(root), create=True)
    fill(ws, {"red": 10, "blue": 10, "green": 10})
    summary = runs.train_workspace(ws, replace(TINY, freeze_epochs=3, epochs=0, lr=1e-2))  # a head that gets colours right
    registry.promote(ws, summary["version"])
    return root


@pytest.fixture
def prod(trained_template: Path, data_root: Path) -> Workspace:
    """A copy of the trained template, named "prod" under this test's data root."""
    import shutil

    shutil.copytree(trained_template, data_root / "workspaces" / "prod")
    return workspace.resolve("prod")
