"""Decoding, measuring and converting single images, including every bad-input kind."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from PIL import Image

from core.data import gather, images
from core.data.images import VerifyConfig, hamming, inspect, load_rgb, to_rgb
from core.errors import UserError
from core.workspace.paths import Workspace
from tests.helpers import alpha_png, bomb_png, encode, exif_rotated_jpeg, picture, png_bytes, sixteen_bit_png

BAD = [
    (b"", "empty file", "zero-byte"),
    (png_bytes(1)[:-60], "corrupt or truncated", "truncated-png"),
    (encode(picture(2, (200, 200)), "JPEG")[:2000], "corrupt or truncated", "truncated-jpeg"),
    (b"<html><body>not found</body></html>", "not an image", "html-as-image"),
    (b"%PDF-1.4 this is a document", "not an image", "pdf-as-image"),
    (bomb_png(), "decompression bomb", "decompression-bomb"),
    (png_bytes(3, (20, 20)), "too small", "tiny-image"),
]


@pytest.mark.parametrize("data,message", [b[:2] for b in BAD], ids=[b[2] for b in BAD])
def test_bad_images_raise_a_reason(data: bytes, message: str) -> None:
    with pytest.raises(UserError, match=message):
        inspect(data)


def test_huge_file_is_refused_before_decoding() -> None:
    with pytest.raises(UserError, match="too large"):
        inspect(png_bytes(5), VerifyConfig(max_bytes=100))


def test_huge_dimensions_are_refused() -> None:
    with pytest.raises(UserError, match="too large: 3000x3000"):
        inspect(encode(Image.new("L", (3000, 3000))), VerifyConfig(max_pixels=1_000_000))


def test_format_comes_from_content_not_name() -> None:
    info, _ = inspect(encode(picture(6), "WEBP"))
    assert info.format == "WEBP" and info.extension == ".webp"


def test_exif_orientation_is_honoured() -> None:
    info, rgb = inspect(exif_rotated_jpeg())
    assert (info.width, info.height) == (40, 80)
    assert rgb.size == (40, 80)
    assert "exif-rotated" in info.notes


@pytest.mark.parametrize(
    "data,note",
    [
        (encode(picture(8).convert("CMYK"), "JPEG"), "cmyk"),
        (sixteen_bit_png(), "16-bit"),
        (encode(picture(9).convert("P")), "palette"),
        (alpha_png(), "alpha"),
        (encode(picture(10).convert("L")), "grayscale"),
        (encode(picture(11).convert("LA")), "alpha"),
    ],
    ids=["cmyk", "16-bit", "palette", "alpha", "grayscale", "gray-alpha"],
)
def test_unusual_modes_become_rgb_for_training(data: bytes, note: str) -> None:
    info, rgb = inspect(data)
    assert note in info.notes
    assert rgb.mode == "RGB" and rgb.size == (64, 48)


def test_sixteen_bit_is_scaled_not_clipped() -> None:
    _, rgb = inspect(sixteen_bit_png())
    gray = np.asarray(picture(3).convert("L"), dtype=np.float64)
    assert np.abs(np.asarray(rgb.convert("L"), dtype=np.float64) - gray).max() <= 1


def test_transparent_pixels_become_white() -> None:
    _, rgb = inspect(alpha_png())
    assert np.asarray(rgb).min() == 255


def test_load_rgb_applies_orientation(tmp_path) -> None:
    path = tmp_path / "rotated.jpg"
    path.write_bytes(exif_rotated_jpeg())
    assert load_rgb(path).size == (40, 80)


def test_perceptual_hash_sees_resized_copy_as_near_and_other_picture_as_far() -> None:
    original, _ = inspect(encode(picture(12, (200, 150))))
    resized, _ = inspect(encode(picture(12, (200, 150)).resize((100, 75)), "JPEG", quality=80))
    other, _ = inspect(encode(picture(13, (200, 150))))
    assert hamming(original.phash, resized.phash) <= 4
    assert hamming(original.phash, other.phash) > 10


def test_brightness_orders_dark_and_light() -> None:
    dark, _ = inspect(encode(Image.new("RGB", (40, 40), (20, 20, 20))))
    light, _ = inspect(encode(Image.new("RGB", (40, 40), (230, 230, 230))))
    assert dark.brightness < 0.1 < 0.9 < light.brightness


def test_to_rgb_keeps_rgb_untouched() -> None:
    img = picture(14)
    assert to_rgb(img) is img


@pytest.mark.parametrize("budget,serial", [(64 * 48, True), (10**9, False)], ids=["one-image-budget", "room-for-all"])
def test_parallel_decoding_is_bounded_by_pixels_in_flight(
    ws: Workspace, monkeypatch: pytest.MonkeyPatch, budget: int, serial: bool
) -> None:
    """With a budget smaller than two images, workers decode one at a time; with room, they overlap (so the
    count below can see overlap when it happens)."""
    inside, peak = [0], [0]
    guard = threading.Lock()
    real = images.load_oriented

    def slow(img: object) -> object:
        with guard:
            inside[0] += 1
            peak[0] = max(peak[0], inside[0])
        time.sleep(0.05)
        try:
            return real(img)
        finally:
            with guard:
                inside[0] -= 1

    monkeypatch.setattr(images, "load_oriented", slow)
    monkeypatch.setattr(images, "DECODING", images.PixelBudget(budget))
    items = gather.upload_items([(f"{i}.png", png_bytes(i)) for i in range(8)], "cat")
    report = gather.ingest(ws, items, workers=4)
    assert len(report.added) == 8
    assert (peak[0] == 1) if serial else (peak[0] > 1)
