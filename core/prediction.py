"""Production inference: decode, measure, preprocess, score, flag out-of-domain inputs, reduce the embedding.

The Predict page, batch scoring and the traffic simulator all call `predict_images`, so the three
give the same prediction for the same bytes.
"""

from __future__ import annotations

import io
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import plotly.graph_objects as go
import torch
from PIL import Image, ImageFilter

from core import images, registry
from core.backbones import Classifier
from core.datasets import resize_item, to_batch
from core.decisions import softmax
from core.errors import UserError
from core.images import VerifyConfig
from core.workspace import Workspace

OOD_SCORES = ("energy", "max_prob")
DEFAULT_OOD_SCORE = "energy"  # separates bears from cartoons and sketches better than max probability (bench/predict_bench.py)
VALID_PASS = 0.95  # share of in-domain validation images the OOD threshold lets through
EMBED_DIM = 16
DECODE = VerifyConfig(min_side=8)  # production inputs are scored even when small; training refuses < 32 px
ProgressFn = Callable[[int, int, str], None]
DecideFn = Callable[[np.ndarray, bool], str]  # (logits of one image, OOD flag) -> action


@dataclass(frozen=True)
class Reference:
    """What the model's validation set looked like: the yardstick for OOD flags and monitoring."""

    ood_score: str
    ood_threshold: float  # in-domain score at or above this passes
    pca_mean: np.ndarray
    pca_components: np.ndarray  # [EMBED_DIM, features]
    valid_scores: np.ndarray


@dataclass(frozen=True, eq=False)
class Predictor:
    version: str
    classes: tuple[str, ...]
    model: Classifier
    size: int
    resize: str
    mean: tuple[float, ...]
    std: tuple[float, ...]
    reference: Reference


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

    def measured(self) -> dict[str, float]:
        """The image properties, measuring them now if they were deferred."""
        return self.properties if self.properties is not None else properties(self.size, self.look)

    def top(self, classes: Sequence[str], k: int = 3) -> list[tuple[str, float]]:
        order = np.argsort(-self.probs)[:k]
        return [(classes[i], float(self.probs[i])) for i in order]


def energy(logits: np.ndarray) -> np.ndarray:
    """Free energy -logsumexp(logits): higher means less like the training data (Liu et al., 2020)."""
    top = logits.max(axis=1, keepdims=True)
    return -(top[:, 0] + np.log(np.exp(logits - top).sum(axis=1)))


def in_domain_score(logits: np.ndarray, kind: str) -> np.ndarray:
    """Higher is more in-domain: negative energy, or the top softmax probability."""
    if kind not in OOD_SCORES:
        raise UserError(f"Unknown out-of-domain score {kind!r}; choose one of {', '.join(OOD_SCORES)}.")
    return -energy(logits) if kind == "energy" else softmax(logits).max(axis=1)


def head_logits(model: Classifier, features: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return model.head.eval()(torch.from_numpy(np.asarray(features, np.float32))).numpy()


def fit_reference(valid_logits: np.ndarray, valid_features: np.ndarray, kind: str = DEFAULT_OOD_SCORE) -> Reference:
    """OOD threshold passing VALID_PASS of validation images, and a PCA of their features."""
    scores = in_domain_score(valid_logits, kind)
    threshold = float(np.quantile(scores, 1.0 - VALID_PASS, method="lower"))
    mean = valid_features.mean(axis=0)
    _, _, vt = np.linalg.svd(valid_features - mean, full_matrices=False)
    components = np.zeros((EMBED_DIM, valid_features.shape[1]), np.float32)
    components[: min(EMBED_DIM, len(vt))] = vt[:EMBED_DIM]
    return Reference(kind, threshold, mean.astype(np.float32), components, scores.astype(np.float32))


def reference_arrays(ref: Reference) -> dict[str, np.ndarray]:
    return {
        "pca_mean": ref.pca_mean,
        "pca_components": ref.pca_components,
        "valid_ood_scores": ref.valid_scores,
        "ood_threshold": np.array([ref.ood_threshold], np.float64),
    }


def load_predictor(ws: Workspace, version: str | None = None) -> Predictor:
    """The given version, else the production model, ready to score."""
    version = version or registry.production_version(ws)
    if version is None:
        raise UserError("This workspace has no production model yet: train one and promote it on the Train page.")
    model, meta = registry.load_version(ws, version)
    arrays = registry.load_reference(ws, version)
    kind = meta.get("ood", {}).get("score", DEFAULT_OOD_SCORE)
    if "pca_components" in arrays:
        ref = Reference(
            kind, float(arrays["ood_threshold"][0]), arrays["pca_mean"], arrays["pca_components"], arrays["valid_ood_scores"]
        )
    else:  # versions trained before the reference held these: derive them the same way
        ref = fit_reference(head_logits(model, arrays["valid_features"]), arrays["valid_features"], kind)
    prep = meta["preprocessing"]
    return Predictor(
        version,
        tuple(meta["classes"]),
        model.to(memory_format=torch.channels_last),
        int(prep["size"]),
        prep["resize"],
        tuple(prep["mean"]),
        tuple(prep["std"]),
        ref,
    )


def saturation(rgb: Image.Image) -> float:
    """Mean HSV saturation in [0, 1]: 0 for grayscale."""
    return float(np.asarray(rgb.convert("HSV"), np.float32)[..., 1].mean() / 255.0)


def sharpness(gray: Image.Image) -> float:
    """Standard deviation of the Laplacian of luminance in [0, 1]: low for blurred images."""
    edges = np.asarray(gray.filter(ImageFilter.Kernel((3, 3), (0, 1, 0, 1, -4, 1, 0, 1, 0), 1, 128)), np.float32)
    return float(edges.std() / 255.0)


LOOK_SIDE = 64  # properties are measured near this size: cheap, and comparable across models


def properties(size: tuple[int, int], look: Image.Image) -> dict[str, float]:
    """The original width and height, and the look measured on the model's input box-reduced to about LOOK_SIDE."""
    factor = min(look.size) // LOOK_SIDE
    if factor > 1:
        look = look.reduce(factor)  # a box filter: several times faster than a resize
    gray = look.convert("L")
    return {
        "width": size[0],
        "height": size[1],
        "brightness": images.brightness(gray),
        "contrast": images.contrast(gray),
        "saturation": saturation(look),
        "sharpness": sharpness(gray),
    }


def decode_noted(data: bytes) -> tuple[Image.Image, str]:
    """Image bytes to RGB with EXIF orientation, and the conversions that took (cmyk, 16-bit, alpha,
    exif-rotated, ...); UserError saying why when they cannot be scored."""
    opened = images.open_checked(data, DECODE)
    img = images.load_oriented(opened)  # first: a corrupt file must fail here, with its message
    rotated = images.orientation(opened) not in (0, 1)
    if min(img.size) < DECODE.min_side:
        raise UserError(f"image too small to score: {img.width}x{img.height} pixels")
    return images.to_rgb(img), images.conversion_notes(opened, rotated)


def decode(data: bytes) -> Image.Image:
    return decode_noted(data)[0]


def forward(predictor: Predictor, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """uint8 [N, S, S, 3] -> logits [N, C] and pooled features [N, F]."""
    x = to_batch(pixels, predictor.mean, predictor.std)
    with torch.inference_mode():
        feats = predictor.model.body(x).float()
        logits = predictor.model.head(feats)
    return logits.numpy(), feats.numpy()


def _decode_one(predictor: Predictor, data: bytes, defer: bool) -> tuple[np.ndarray, Any, float, str]:
    """Pixels for the model, the properties (or, deferred, what to measure them on later), seconds, notes."""
    start = time.perf_counter()
    rgb, notes = decode_noted(data)
    resized = resize_item(rgb, predictor.size, predictor.resize)
    props = (rgb.size, resized) if defer else properties(rgb.size, resized)
    return np.asarray(resized, np.uint8), props, time.perf_counter() - start, notes


Decoded = tuple[list[tuple[Any, ...]], list[dict[str, str]]]


def _decode_chunk(predictor: Predictor, chunk: Sequence[tuple[str, bytes]], defer: bool = False) -> Decoded:
    decoded, failed = [], []
    for name, data in chunk:
        try:
            decoded.append((name, data, *_decode_one(predictor, data, defer)))
        except UserError as exc:
            failed.append({"source": name, "reason": str(exc)})
    return decoded, failed


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
    done: list[Prediction] = []
    failed: list[dict[str, str]] = []
    chunks = [items[i : i + batch_size] for i in range(0, len(items), batch_size)]
    with ThreadPoolExecutor(max_workers=1) as pool:
        upcoming = None
        for k, chunk in enumerate(chunks):
            decoded, bad = upcoming.result() if upcoming else _decode_chunk(predictor, chunk, defer_properties)
            upcoming = pool.submit(_decode_chunk, predictor, chunks[k + 1], defer_properties) if k + 1 < len(chunks) else None
            failed += bad
            if decoded:
                t0 = time.perf_counter()
                logits, feats = forward(predictor, np.stack([d[2] for d in decoded]))
                model_s = (time.perf_counter() - t0) / len(decoded)
                done += _predictions(predictor, decoded, logits, feats, model_s, keep_bytes, decide)
            if on_progress:
                on_progress(min((k + 1) * batch_size, len(items)), len(items), "scoring")
    return done, failed


def _predictions(
    predictor: Predictor,
    decoded: list[tuple[Any, ...]],
    logits: np.ndarray,
    feats: np.ndarray,
    model_s: float,
    keep: bool,
    decide: DecideFn | None,
) -> list[Prediction]:
    ref = predictor.reference
    probs = softmax(logits)
    scores = in_domain_score(logits, ref.ood_score)
    energies = energy(logits)
    embeddings = (feats - ref.pca_mean) @ ref.pca_components.T
    out = []
    for i, (name, data, _, props, decode_s, notes) in enumerate(decoded):
        top = int(probs[i].argmax())
        label = predictor.classes[top]
        out.append(
            Prediction(
                id=uuid.uuid4().hex,
                name=name,
                sha256=images.sha256(data),
                properties=None if isinstance(props, tuple) else props,
                probs=probs[i].astype(np.float32),
                label=label,
                confidence=float(probs[i, top]),
                energy=float(energies[i]),
                ood_score=float(scores[i]),
                ood=bool(scores[i] < ref.ood_threshold),
                embedding=embeddings[i].astype(np.float32),
                action=decide(logits[i], bool(scores[i] < ref.ood_threshold)) if decide else label,
                latency_ms=(decode_s + model_s) * 1000.0,
                data=data if keep else b"",
                notes=notes,
                size=props[0] if isinstance(props, tuple) else (0, 0),
                look=props[1] if isinstance(props, tuple) else None,
            )
        )
    return out


def read_paths(paths: Sequence[Path]) -> tuple[list[tuple[str, bytes]], list[dict[str, str]]]:
    """Files, and image files under folders, as (path, bytes); missing paths become failures."""
    items: list[tuple[str, bytes]] = []
    failed: list[dict[str, str]] = []
    for path in paths:
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
        elif path.is_file():
            files = [path]
        else:
            failed.append({"source": str(path), "reason": "no such file or folder"})
            continue
        for file in files:
            if path.is_dir() and file.suffix.lower() not in images.IMAGE_SUFFIXES:
                continue
            try:
                items.append((str(file), file.read_bytes()))
            except OSError as exc:
                failed.append({"source": str(file), "reason": f"cannot read: {exc.strerror or exc}"})
    if not items and not failed:
        raise UserError("No image files found in the given paths (looked for .jpg, .png, .webp, .gif, .bmp, .tif).")
    return items, failed


def encode_jpeg(img: Image.Image, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    img.convert("RGB").save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def top_k_figure(p: Prediction, classes: Sequence[str], k: int = 5) -> go.Figure:
    """Horizontal bars of the k most probable classes, the top one highlighted."""
    top = p.top(classes, k)[::-1]
    fig = go.Figure(
        go.Bar(
            x=[v for _, v in top],
            y=[c for c, _ in top],
            orientation="h",
            marker_color=["#4C78A8" if c == p.label else "#B0BEC5" for c, _ in top],
            text=[f"{v:.1%}" for _, v in top],
            textposition="auto",
        )
    )
    fig.update_layout(
        xaxis={"range": [0, 1], "tickformat": ".0%"},
        yaxis={"type": "category"},  # class names like "3" must not become a numeric axis
        height=60 + 28 * len(top),
        margin={"t": 10, "b": 10, "l": 10, "r": 10},
    )
    return fig
