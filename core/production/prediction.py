"""Production inference: decode, measure, preprocess, score, flag out-of-domain inputs, reduce the embedding.

Every caller scores through `serving` (or `predict_images` for one model alone), so the app, the API, batch scoring
and the traffic simulator give the same prediction for the same bytes.
"""

from __future__ import annotations

import io
import time
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from core.data import gather, images
from core.data.images import VerifyConfig, properties, resize_item
from core.drivetrain.accepted import AcceptedPolicy
from core.drivetrain.decisions import DecideFn
from core.errors import UserError
from core.model.outputs import energy, in_domain_score, softmax
from core.progress import ProgressFn

if TYPE_CHECKING:  # torch comes with the model, when something is scored: the Prediction record needs none
    from core.model.scoring import Predictor

DECODE = VerifyConfig(min_side=8)  # production inputs are scored even when small; training refuses < 32 px


@dataclass(frozen=True)
class Prediction:
    id: str
    name: str
    sha256: str
    properties: dict[str, float] | None  # None: measured later from `look` (the app defers it off the request)
    probs: np.ndarray
    label: str
    confidence: float
    energy: float
    ood_score: float
    ood: bool
    embedding: np.ndarray
    action: str
    latency_ms: float
    data: bytes = field(repr=False, default=b"")
    notes: str = ""  # conversions applied before scoring: cmyk, 16-bit, alpha, exif-rotated, ...
    size: tuple[int, int] = (0, 0)
    look: Image.Image | None = field(repr=False, default=None)
    version: str = ""  # the model version that made it
    stage: str = "production"  # or a candidate's rollout stage: shadow / limited
    served: bool = True  # shown and acted on (a shadow prediction never is)
    request_id: str = ""  # shared by the production and the candidate prediction of one request
    referred: bool = False  # the decision policy handed it to a human
    disagrees: bool = False  # production and the candidate predicted different classes for this request

    @property
    def needs_review(self) -> bool:
        """Whether it enters the review queue: referred, out of domain, or disputed by the other model."""
        return self.served and (self.referred or self.ood or self.disagrees)

    def measured(self) -> dict[str, float]:
        """The image properties, measuring them now if they were deferred."""
        return self.properties if self.properties is not None else properties(self.size, self.look)

    def top(self, classes: Sequence[str], k: int = 3) -> list[tuple[str, float]]:
        order = np.argsort(-self.probs)[:k]
        return [(classes[i], float(self.probs[i])) for i in order]


@dataclass(frozen=True, eq=False)
class Opened:
    """Image bytes decoded for scoring: RGB, EXIF-oriented, perhaps at a reduced scale."""

    rgb: Image.Image
    size: tuple[int, int]  # the full image's width and height after orientation
    notes: str  # conversions applied: cmyk, 16-bit, alpha, exif-rotated, ...


def decode_noted(data: bytes, side: int | None = None) -> Opened:
    """Image bytes to RGB with EXIF orientation (decoded at a reduced scale that keeps `side` pixels each way,
    when given), and the conversions that took; UserError saying why when they cannot be scored."""
    opened = images.open_checked(data, DECODE)
    full = opened.size  # from the header, before any reduced decoding
    images.reduce_on_decode(opened, side)
    img = images.load_oriented(opened)  # first: a corrupt file must fail here, with its message
    turn = images.orientation(opened)
    size = (full[1], full[0]) if turn in (5, 6, 7, 8) else full  # a quarter turn swaps width and height
    notes = images.conversion_notes(opened, turn not in (0, 1))
    if min(size) < DECODE.min_side:
        raise UserError(f"image too small to score: {size[0]}x{size[1]} pixels")
    return Opened(images.to_rgb(img), size, notes)


def decode(data: bytes, side: int | None = None) -> Image.Image:
    return decode_noted(data, side).rgb


@dataclass(frozen=True, eq=False)
class DecodedImage:
    """One input, decoded and resized for the model, with what scoring and the log need from it."""

    name: str
    data: bytes
    pixels: np.ndarray  # uint8 [S, S, 3], the model's input
    size: tuple[int, int]  # the original width and height, after EXIF orientation
    properties: dict[str, float] | None  # None when deferred: measured later on `look`
    look: Image.Image  # the resized image the properties are measured on
    seconds: float  # decoding and resizing time
    notes: str  # conversions applied: cmyk, 16-bit, alpha, exif-rotated, ...
    candidate_pixels: np.ndarray | None = None  # the candidate's input, when a candidate scores beside production


def decode_for(
    predictor: Predictor, name: str, data: bytes, defer: bool = False, candidate: Predictor | None = None
) -> DecodedImage:
    """Decode, orient and resize one input for the predictor (and the candidate's input from the same decoded
    image when it takes the same size; else decoded again as its training was); measure its properties unless
    deferred."""
    start = time.perf_counter()
    opened = decode_noted(data, predictor.size)  # the reduced scale training used too (datasets.load_pixels)
    resized = resize_item(opened.rgb, predictor.size, predictor.resize)
    props = None if defer else properties(opened.size, resized)
    pixels = np.asarray(resized, np.uint8)
    other = None
    if candidate is not None:
        same = (candidate.size, candidate.resize) == (predictor.size, predictor.resize)
        rgb = opened.rgb if candidate.size == predictor.size else decode_noted(data, candidate.size).rgb
        other = pixels if same else np.asarray(resize_item(rgb, candidate.size, candidate.resize), np.uint8)
    seconds = time.perf_counter() - start
    return DecodedImage(name, data, pixels, opened.size, props, resized, seconds, opened.notes, other)


def decode_many(
    predictor: Predictor, chunk: Sequence[tuple[str, bytes]], defer: bool = False, candidate: Predictor | None = None
) -> tuple[list[DecodedImage], list[dict[str, str]]]:
    """Each input decoded for the model(s); the unreadable ones as failures with the reason."""
    decoded, failed = [], []
    for name, data in chunk:
        try:
            decoded.append(decode_for(predictor, name, data, defer, candidate))
        except UserError as exc:
            failed.append({"source": name, "reason": str(exc)})
    return decoded, failed


@dataclass(frozen=True)
class Deciders:
    """Each model's accepted decision function and its referral action (None: the label is the action)."""

    production: DecideFn | None = None
    production_refer: str | None = None
    candidate: DecideFn | None = None
    candidate_refer: str | None = None

    @staticmethod
    def of(production: AcceptedPolicy | None, candidate: AcceptedPolicy | None = None) -> Deciders:
        return Deciders(
            production.decider() if production else None,
            production.utility.refer if production else None,
            candidate.decider() if candidate else None,
            candidate.utility.refer if candidate else None,
        )


NO_POLICY = Deciders()  # the label is the action


def predict_images(
    predictor: Predictor,
    items: Sequence[tuple[str, bytes]],
    batch_size: int = 32,
    on_progress: ProgressFn | None = None,
    keep_bytes: bool = False,
    decide: DecideFn | None = None,
    defer_properties: bool = False,
) -> tuple[list[Prediction], list[dict[str, str]]]:
    """Score (name, bytes) items in batches; unreadable ones go to failures with the reason, the rest are scored.
    `decide` (the accepted decision policy) turns logits and the OOD flag into the action; else the label.
    `defer_properties` leaves the image measurements to whoever logs the prediction (the app's writer thread).

    The next batch is decoded on a second thread while the model runs on this one."""
    scored, failed = score_all(predictor, None, items, batch_size, on_progress, keep_bytes, Deciders(decide), defer_properties)
    return [p for p, _ in scored], failed


def score_all(
    predictor: Predictor,
    candidate: Predictor | None,
    items: Sequence[tuple[str, bytes]],
    batch_size: int,
    on_progress: ProgressFn | None,
    keep_bytes: bool,
    deciders: Deciders,
    defer_properties: bool,
) -> tuple[list[tuple[Prediction, Prediction | None]], list[dict[str, str]]]:
    done: list[tuple[Prediction, Prediction | None]] = []
    failed: list[dict[str, str]] = []
    chunks = [items[i : i + batch_size] for i in range(0, len(items), batch_size)]
    with ThreadPoolExecutor(max_workers=1) as pool:
        upcoming = None
        for k, chunk in enumerate(chunks):
            decoded, bad = upcoming.result() if upcoming else decode_many(predictor, chunk, defer_properties, candidate)
            if k + 1 < len(chunks):
                upcoming = pool.submit(decode_many, predictor, chunks[k + 1], defer_properties, candidate)
            else:
                upcoming = None
            failed += bad
            done += score_decoded(predictor, candidate, decoded, keep_bytes, deciders)
            if on_progress:
                on_progress(min((k + 1) * batch_size, len(items)), len(items), "scoring")
    return done, failed


def score_decoded(
    predictor: Predictor,
    candidate: Predictor | None,
    decoded: Sequence[DecodedImage],
    keep_bytes: bool = False,
    deciders: Deciders = Deciders(),
) -> list[tuple[Prediction, Prediction | None]]:
    """Images decoded already, through production (and the candidate) in one forward pass each: each pair shares
    its request's id; each prediction's latency is its decode plus its share of the pass."""
    from core.model import scoring  # torch: imported where a model runs, not where predictions are read

    if not decoded:
        return []
    decoded = list(decoded)
    t0 = time.perf_counter()
    logits, feats = scoring.forward(predictor, np.stack([d.pixels for d in decoded]))
    other = None
    if candidate is not None:
        other = scoring.forward(candidate, np.stack([d.candidate_pixels for d in decoded]))
    model_s = (time.perf_counter() - t0) / len(decoded)
    requests = [uuid.uuid4().hex for _ in decoded]
    first = _predictions(predictor, decoded, logits, feats, model_s, keep_bytes, deciders.production, requests)
    if candidate is None or other is None:
        return [(p, None) for p in first]
    second = _predictions(candidate, decoded, *other, model_s, keep_bytes, deciders.candidate, requests)
    return list(zip(first, second, strict=True))


def _predictions(
    predictor: Predictor,
    decoded: list[DecodedImage],
    logits: np.ndarray,
    feats: np.ndarray,
    model_s: float,
    keep: bool,
    decide: DecideFn | None,
    requests: Sequence[str],
) -> list[Prediction]:
    ref = predictor.reference
    probs = softmax(logits)
    scores = in_domain_score(logits, ref.ood_score)
    energies = energy(logits)
    embeddings = (feats - ref.pca_mean) @ ref.pca_components.T
    out = []
    for i, d in enumerate(decoded):
        top = int(probs[i].argmax())
        label = predictor.classes[top]
        ood = bool(scores[i] < ref.ood_threshold)
        out.append(
            Prediction(
                id=uuid.uuid4().hex,
                name=d.name,
                sha256=images.sha256(d.data),
                properties=d.properties,
                probs=probs[i].astype(np.float32),
                label=label,
                confidence=float(probs[i, top]),
                energy=float(energies[i]),
                ood_score=float(scores[i]),
                ood=ood,
                embedding=embeddings[i].astype(np.float32),
                action=decide(logits[i], ood) if decide else label,
                latency_ms=(d.seconds + model_s) * 1000.0,
                data=d.data if keep else b"",
                notes=d.notes,
                size=d.size,
                look=None if d.properties is not None else d.look,
                version=predictor.version,
                request_id=requests[i],
            )
        )
    return out


def list_files(paths: Sequence[Path]) -> tuple[list[Path], list[dict[str, str]]]:
    """Files, and image files under folders, without reading them; missing paths become failures."""
    found: list[Path] = []
    failed: list[dict[str, str]] = []
    for path in paths:
        if path.is_dir():
            found += sorted(p for p in path.rglob("*") if _image_file(p))
        elif path.is_file():
            found.append(path)
        else:
            failed.append({"source": str(path), "reason": "no such file or folder"})
    if not found and not failed:
        raise UserError("No image files found in the given paths (looked for .jpg, .png, .webp, .gif, .bmp, .tif).")
    return found, failed


def _image_file(p: Path) -> bool:
    return p.is_file() and not p.name.startswith(".") and p.suffix.lower() in images.IMAGE_SUFFIXES


def read_files(files: Sequence[Path]) -> tuple[list[tuple[str, bytes]], list[dict[str, str]]]:
    """(path, bytes) of each file, its size checked before it is read; unreadable or too large ones become failures.
    Callers read a batch at a time, so a folder of any size never sits in memory whole."""
    items: list[tuple[str, bytes]] = []
    failed: list[dict[str, str]] = []
    for file in files:
        try:
            items.append((str(file), gather.file_loader(file)()[0]))
        except UserError as exc:
            failed.append({"source": str(file), "reason": str(exc)})
        except OSError as exc:
            failed.append({"source": str(file), "reason": f"cannot read: {exc.strerror or exc}"})
    return items, failed


def read_paths(paths: Sequence[Path]) -> tuple[list[tuple[str, bytes]], list[dict[str, str]]]:
    """Every file under paths, read (for a benchmark's fixed set; commands read a batch at a time)."""
    files, failed = list_files(paths)
    items, unread = read_files(files)
    return items, failed + unread


def encode_jpeg(img: Image.Image, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    img.convert("RGB").save(buf, "JPEG", quality=quality)
    return buf.getvalue()


BAR_WIDTH = 20  # characters for 100%


def top_k_lines(p: Prediction, classes: Sequence[str], k: int = 5) -> str:
    """The k most probable classes as Markdown lines, each with a bar drawn in text (a chart per image costs the
    server and the browser far more, and a page of answers draws twenty of them)."""
    eighths = " ▏▎▍▌▋▊▉"
    lines = []
    for label, prob in p.top(classes, k):
        whole, part = divmod(round(prob * BAR_WIDTH * 8), 8)
        bar = "█" * whole + (eighths[part] if part else "") or "▏"
        name = f"**{label}**" if label == p.label else label
        lines.append(f"{name} {prob:.1%}  \n`{bar}`")
    return "  \n".join(lines)
