"""The production model's validation reference in the log's terms: class mix, confidence quantiles, OOD rate, accuracy."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from core.data.images import PROPERTIES
from core.model import config, outputs, registry
from core.workspace.paths import Workspace, write_atomic


@dataclass(frozen=True)
class LogReference:
    """The validation reference of one model version, in the log's terms."""

    version: str
    class_mix: dict[str, float]
    confidence_p10: float
    confidence_p50: float
    confidence_p90: float
    ood_rate: float
    accuracy: float


def _own_ood_rate(arrays: dict[str, np.ndarray], fallback: float) -> float:
    if "valid_ood_scores" not in arrays or "ood_threshold" not in arrays:
        return fallback
    return float(np.mean(arrays["valid_ood_scores"] < float(arrays["ood_threshold"][0])))


def log_reference(ws: Workspace, version: str) -> LogReference:
    ref = registry.load_reference(ws, version)
    meta = registry.read_meta(ws, version)
    probs = ref["valid_probs"]
    predicted = probs.argmax(1)
    conf = probs.max(1)
    return LogReference(
        version,
        {c: float((predicted == i).mean()) for i, c in enumerate(meta["classes"])},
        float(np.quantile(conf, 0.1)),
        float(np.quantile(conf, 0.5)),
        float(np.quantile(conf, 0.9)),
        _own_ood_rate(ref, 1.0 - config.VALID_PASS),  # the version's own share of flagged validation images
        float((predicted == ref["valid_labels"]).mean()),
    )


def with_aspect(frame: pd.DataFrame) -> pd.DataFrame:
    """Image properties with the aspect ratio (width / height) beside them, as drift tests it."""
    return frame.assign(aspect=frame["width"] / frame["height"].clip(lower=1))


PROPERTY_CACHE = "reference_properties.json"  # versions trained before properties were stored: derived once


@dataclass(frozen=True)
class DriftReference:
    """What drift is measured against: the version's validation images as production measures them
    (predicted class, confidence, energy, embedding, OOD flag, true label) and the image properties of
    every image the version did not hold out for testing."""

    version: str
    classes: tuple[str, ...]
    labels: np.ndarray
    predicted: np.ndarray
    confidence: np.ndarray
    energy: np.ndarray
    embedding: np.ndarray  # [n, EMBED_DIM], the log's reduced embedding
    ood: np.ndarray  # bool: flagged by the version's own threshold (about 1 - VALID_PASS of them)
    properties: pd.DataFrame  # one row per non-test image: PROPERTIES and aspect
    prior: np.ndarray  # share of each class among the non-test images (their labels)
    prior_n: int  # how many images the prior counts

    @property
    def expected_mix(self) -> np.ndarray:
        """The predicted-class shares to expect without drift: P(predicted | true) from the validation images,
        applied to the class shares of every non-test image (a prior counted on several times more images
        than the validation set alone, which gives the class-mix test its power)."""
        k = len(self.classes)
        joint = np.zeros((k, k))
        np.add.at(joint, (self.labels, self.predicted), 1.0)
        rows = joint.sum(1, keepdims=True)
        given = np.where(rows > 0, joint / np.maximum(rows, 1), np.eye(k))  # a class never validated: taken as right
        return self.prior @ given

    @property
    def expected_counts(self) -> np.ndarray:
        """expected_mix as counts of a reference sample the size of the prior's."""
        return self.expected_mix * self.prior_n


def _logits(ws: Workspace, version: str, arrays: dict[str, np.ndarray]) -> np.ndarray:
    if "valid_logits" in arrays:
        return arrays["valid_logits"]
    from core.model import scoring  # versions trained before logits were stored: the head, once more (torch)

    return scoring.head_logits(scoring.load_predictor(ws, version).model, arrays["valid_features"])


def _derived_properties(ws: Workspace, version: str, meta: dict) -> np.ndarray:
    """Properties of a version's train and valid images, measured now as training measures them (then kept)."""
    import json

    from PIL import Image

    from core.data.images import load_rgb, properties, resize_item
    from core.workspace import store

    cache = ws.models_dir / version / PROPERTY_CACHE
    if cache.is_file():
        return np.array(json.loads(cache.read_text())["rows"], np.float64).reshape(-1, len(PROPERTIES))
    size, resize = int(meta["preprocessing"]["size"]), meta["preprocessing"]["resize"]
    catalog = store.images(ws).set_index("id")
    ids = [i for i in [*meta.get("train_ids", []), *meta.get("valid_ids", [])] if i in catalog.index]
    rows = []
    for image_id in ids:
        row = catalog.loc[image_id]
        try:
            look = resize_item(load_rgb(ws.root / row["path"], size), size, resize)
        except (OSError, ValueError, Image.DecompressionBombError):
            continue  # gone or unreadable since: the reference is the images that are still there
        measured = properties((int(row["width"]), int(row["height"])), look)
        rows.append([measured[k] for k in PROPERTIES])
    write_atomic(cache, json.dumps({"rows": rows}))
    return np.array(rows, np.float64).reshape(-1, len(PROPERTIES))


def drift_reference(ws: Workspace, version: str) -> DriftReference:
    """The version's drift reference (numpy only for versions trained by this code)."""
    arrays = registry.load_reference(ws, version)
    meta = registry.read_meta(ws, version)
    logits = _logits(ws, version, arrays)
    probs = arrays["valid_probs"]
    embedding = (arrays["valid_features"] - arrays["pca_mean"]) @ arrays["pca_components"].T
    threshold = float(arrays["ood_threshold"][0])
    props = arrays["reference_properties"] if "reference_properties" in arrays else _derived_properties(ws, version, meta)
    frame = pd.DataFrame(props, columns=list(PROPERTIES))
    k = len(meta["classes"])
    if "reference_labels" in arrays:
        labels = arrays["reference_labels"]
    else:  # older versions: the labels their train and valid images carry now
        from core.workspace import store

        index = {c: i for i, c in enumerate(meta["classes"])}
        catalog = store.images(ws).set_index("id")["label"]
        ids = [*meta.get("train_ids", []), *meta.get("valid_ids", [])]
        labels = np.array([index[catalog[i]] for i in ids if i in catalog.index and catalog[i] in index], np.int64)
    prior = np.bincount(labels, minlength=k) / max(len(labels), 1)
    return DriftReference(
        version,
        tuple(meta["classes"]),
        arrays["valid_labels"].astype(np.int64),
        probs.argmax(1),
        probs.max(1),
        outputs.energy(logits),
        embedding.astype(np.float64),
        arrays["valid_ood_scores"] < threshold,
        with_aspect(frame),
        prior,
        len(labels),
    )
