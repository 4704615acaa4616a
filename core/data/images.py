"""One small pure function per image property, plus a full-decode check and RGB loading."""

from __future__ import annotations

import ctypes
import hashlib
import io
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, ImageFilter, ImageOps, UnidentifiedImageError

from core.errors import UserError

ImageFile.LOAD_TRUNCATED_IMAGES = False  # a truncated file must fail, not decode as grey

EXTENSIONS = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp", "GIF": ".gif", "BMP": ".bmp", "TIFF": ".tif", "MPO": ".jpg"}
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff", ".jfif"}


@dataclass(frozen=True)
class VerifyConfig:
    min_side: int = 32  # smaller images carry too little to learn from
    max_pixels: int = 89_478_485  # Pillow's own bomb threshold: refuse before decoding
    max_bytes: int = 50_000_000  # larger files are almost never useful training images


@dataclass(frozen=True)
class ImageInfo:
    sha256: str
    phash: str
    width: int
    height: int
    mode: str
    format: str
    bytes: int
    brightness: float
    contrast: float
    notes: str  # comma-separated conversions training will apply

    @property
    def id(self) -> str:
        return self.sha256[:16]

    @property
    def extension(self) -> str:
        return EXTENSIONS.get(self.format, ".img")


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def to_rgb(img: Image.Image) -> Image.Image:
    """RGB for training: 16-bit scaled (not clipped), alpha and palettes composited on white."""
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        top = arr.max(initial=0.0)
        scale = 255.0 / 65535.0 if top > 255 else (255.0 if mode == "F" and top <= 1.0 else 1.0)
        img = Image.fromarray(np.clip(arr * scale, 0, 255).astype(np.uint8), "L")
    elif mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    elif mode in ("LA", "La", "PA"):
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "RGBa"):
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, img.convert("RGBA"))
    return img.convert("RGB") if img.mode != "RGB" else img


def conversion_notes(img: Image.Image, rotated: bool) -> str:
    """What to_rgb and EXIF orientation change for this image, for the catalog."""
    notes = []
    mode = img.mode
    if mode == "CMYK":
        notes.append("cmyk")
    if mode.startswith("I") or mode == "F":
        notes.append("16-bit")
    if mode == "P":
        notes.append("palette")
    if "A" in mode or "a" in mode or (mode == "P" and "transparency" in img.info):
        notes.append("alpha")
    if mode in ("1", "L", "LA", "La") or mode.startswith("I") or mode == "F":
        notes.append("grayscale")
    if rotated:
        notes.append("exif-rotated")
    if getattr(img, "n_frames", 1) > 1:
        notes.append("animated: first frame")
    return ",".join(notes)


def perceptual_hash(gray: Image.Image) -> str:
    """64-bit DCT hash (pHash): low 8x8 frequencies of a 32x32 thumbnail against their median."""
    small = np.asarray(gray.convert("L").resize((32, 32), Image.Resampling.LANCZOS), dtype=np.float64)
    from scipy.fft import dctn  # here: importing scipy.fft costs a tenth of a second that most callers never need

    low = dctn(small, norm="ortho")[:8, :8]
    bits = (low > np.median(low)).flatten()
    return f"{int(''.join('1' if b else '0' for b in bits), 2):016x}"


def brightness(gray: Image.Image) -> float:
    """Mean luminance in [0, 1]."""
    return float(np.asarray(gray, dtype=np.float32).mean() / 255.0)


def contrast(gray: Image.Image) -> float:
    """Standard deviation of luminance in [0, 0.5]."""
    return float(np.asarray(gray, dtype=np.float32).std() / 255.0)


def too_large(size: int, limit: int = VerifyConfig.max_bytes) -> UserError | None:
    """The refusal for a file of `size` bytes over the limit (checked from a file's or an archive entry's size
    before it is read), or None."""
    return UserError(f"file too large ({size / 1e6:.0f} MB > {limit / 1e6:.0f} MB)") if size > limit else None


def open_checked(data: bytes, cfg: VerifyConfig) -> Image.Image:
    if not data:
        raise UserError("empty file (0 bytes)")
    if refused := too_large(len(data), cfg.max_bytes):
        raise refused
    try:
        img = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise UserError("not an image (no known image format could decode it)") from None
    except Image.DecompressionBombError as exc:
        raise UserError(f"image too large (possible decompression bomb): {exc}; not decoded") from None
    w, h = img.size
    if w * h > cfg.max_pixels:
        raise UserError(f"image too large: {w}x{h} pixels is over {cfg.max_pixels:,} (possible decompression bomb); not decoded")
    return img


def load_oriented(img: Image.Image) -> Image.Image:
    """Decode every pixel and apply EXIF orientation; UserError when the file is corrupt or truncated."""
    fmt = img.format or "unknown"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img.load()
            return img if orientation(img) in (0, 1) else ImageOps.exif_transpose(img)  # no copy when upright
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombWarning) as exc:
        raise UserError(f"corrupt or truncated image ({fmt}): {exc}") from None


class PixelBudget:
    """Decoding in parallel bounded by pixels in flight, not by the worker count: a worker waits until its image
    fits (an image larger than the whole budget waits until it decodes alone)."""

    def __init__(self, pixels: int) -> None:
        self.capacity = pixels
        self.used = 0
        self._room = threading.Condition()

    @contextmanager
    def take(self, pixels: int) -> Iterator[None]:
        need = min(int(pixels), self.capacity)
        with self._room:
            self._room.wait_for(lambda: self.used + need <= self.capacity)
            self.used += need
        if pixels >= LARGE:
            _give_back()
        try:
            yield
        finally:
            with self._room:
                self.used -= need
                self._room.notify_all()


LARGE = 16_000_000  # pixels: before decoding an image this large, memory freed by earlier ones goes back


def _give_back() -> None:
    """glibc keeps what a thread freed in that thread's arena, so the peaks of workers decoding large images one
    after another add up (four 88-megapixel PNGs: 2.4 GB): hand it back to the system (bench/memory_bench.py)."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


def _libc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.malloc_trim  # noqa: B018 - glibc only: elsewhere nothing to do
    except (OSError, AttributeError):
        return None
    return libc


_LIBC = _libc()


DECODING = PixelBudget(150_000_000)  # about 450 MB of RGB in flight in one process, however many workers decode


def inspect(data: bytes, cfg: VerifyConfig = VerifyConfig()) -> tuple[ImageInfo, Image.Image]:
    """Fully decode image bytes and measure them; raise UserError with the reason if unusable."""
    img = open_checked(data, cfg)
    with DECODING.take(img.size[0] * img.size[1]):  # the header's size: nothing is decoded yet
        return _measure(data, img, cfg)


def _measure(data: bytes, img: Image.Image, cfg: VerifyConfig) -> tuple[ImageInfo, Image.Image]:
    fmt = img.format or "unknown"
    rotated_img = load_oriented(img)
    rotated = orientation(img) not in (0, 1)
    w, h = rotated_img.size
    if min(w, h) < cfg.min_side:
        raise UserError(f"image too small: {w}x{h} pixels (minimum side {cfg.min_side})")
    rgb = to_rgb(rotated_img)
    gray = rgb.convert("L")
    thumb = gray if max(w, h) <= 256 else gray.resize((max(1, w * 256 // max(w, h)), max(1, h * 256 // max(w, h))))
    info = ImageInfo(
        sha256=sha256(data),
        phash=perceptual_hash(thumb),
        width=w,
        height=h,
        mode=img.mode,
        format=fmt,
        bytes=len(data),
        brightness=brightness(thumb),
        contrast=contrast(thumb),
        notes=conversion_notes(img, rotated),
    )
    return info, rgb


def orientation(img: Image.Image) -> int:
    try:
        return int(img.getexif().get(0x0112, 1))
    except (ValueError, TypeError):
        return 1


def reduce_on_decode(img: Image.Image, side: int | None) -> None:
    """Let the decoder scale down by 1/2, 1/4 or 1/8 while keeping at least `side` pixels each way (JPEG only;
    a no-op for other formats). A 4000x3000 photo for a 160-pixel model decodes at 500x375: several times
    faster, and the resize to the model's input then starts from a near size. Training and serving both
    call it before loading, so the model sees the same pixels in both."""
    if side:
        img.draft(img.mode, (side, side))


def load_rgb(path: Path, side: int | None = None) -> Image.Image:
    """Open an image file for training or display: EXIF orientation applied, RGB; with `side`, decoded at
    the smallest reduced scale that keeps `side` pixels each way."""
    with Image.open(path) as img:
        reduce_on_decode(img, side)
        img.load()
        return to_rgb(ImageOps.exif_transpose(img))


def hamming(a: str, b: str) -> int:
    return (int(a, 16) ^ int(b, 16)).bit_count()


def thumbnail(path: Path, side: int = 160) -> Image.Image:
    """A small RGB preview; a grey 'unreadable' tile when the file cannot be decoded."""
    try:
        img = load_rgb(path)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        from PIL import ImageDraw

        tile = Image.new("RGB", (side, side), (200, 200, 200))
        ImageDraw.Draw(tile).text((10, side // 2 - 6), "unreadable", fill=(120, 0, 0))
        return tile
    img.thumbnail((side, side))
    return img


def saturation(rgb: Image.Image) -> float:
    """Mean HSV saturation in [0, 1]: 0 for grayscale."""
    return float(np.asarray(rgb.convert("HSV"), np.float32)[..., 1].mean() / 255.0)


def sharpness(gray: Image.Image) -> float:
    """Standard deviation of the Laplacian of luminance in [0, 1]: low for blurred images."""
    edges = np.asarray(gray.filter(ImageFilter.Kernel((3, 3), (0, 1, 0, 1, -4, 1, 0, 1, 0), 1, 128)), np.float32)
    return float(edges.std() / 255.0)


LOOK_SIDE = 64  # properties are measured near this size: cheap, and comparable across models
PROPERTIES = ("width", "height", "brightness", "contrast", "saturation", "sharpness")  # what `properties` returns


def properties(size: tuple[int, int], look: Image.Image) -> dict[str, float]:
    """The original width and height, and the look measured on the model's input box-reduced to about LOOK_SIDE."""
    factor = min(look.size) // LOOK_SIDE
    if factor > 1:
        look = look.reduce(factor)  # a box filter: several times faster than a resize
    gray = look.convert("L")
    return {
        "width": size[0],
        "height": size[1],
        "brightness": brightness(gray),
        "contrast": contrast(gray),
        "saturation": saturation(look),
        "sharpness": sharpness(gray),
    }


def resize_item(img: Image.Image, size: int, method: str) -> Image.Image:
    """The item resize of the DataBlock: crop (centre), pad (black bars) or squish to size x size."""
    if method == "crop":
        return ImageOps.fit(img, (size, size), Image.Resampling.BILINEAR)
    if method == "pad":
        return ImageOps.pad(img, (size, size), Image.Resampling.BILINEAR, color=(0, 0, 0))
    return img.resize((size, size), Image.Resampling.BILINEAR)
