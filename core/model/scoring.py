"""The trained model ready to score: loaded with its reference, logits and pooled features from pixels (torch)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from core.errors import UserError
from core.model import registry, weights
from core.model.backbones import Classifier
from core.model.config import DEFAULT_OOD_SCORE
from core.model.datasets import to_batch
from core.model.outputs import Reference, fit_reference
from core.workspace.paths import Workspace


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


def head_logits(model: Classifier, features: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return model.head.eval()(torch.from_numpy(np.asarray(features, np.float32))).numpy()


def load_predictor(ws: Workspace, version: str | None = None) -> Predictor:
    """The given version, else the production model, ready to score."""
    version = version or registry.production_version(ws)
    if version is None:
        raise UserError("This workspace has no production model yet: train one and promote it on the Train page.")
    model, meta = weights.load_version(ws, version)
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


def forward(predictor: Predictor, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """uint8 [N, S, S, 3] -> logits [N, C] and pooled features [N, F]."""
    x = to_batch(pixels, predictor.mean, predictor.std)
    with torch.inference_mode():
        feats = predictor.model.body(x).float()
        logits = predictor.model.head(feats)
    return logits.numpy(), feats.numpy()


def probabilities(
    model: Classifier, pixels: np.ndarray, mean: Sequence[float], std: Sequence[float], batch: int = 64
) -> np.ndarray:
    """Softmax of a model over uint8 [N, S, S, 3] pixels, in batches (evaluation transform)."""
    model.eval()
    out = []
    with torch.inference_mode():
        for i in range(0, len(pixels), batch):
            out.append(model(to_batch(pixels[i : i + batch], mean, std)).float().softmax(1).numpy())
    return np.concatenate(out) if out else np.zeros((0, model.head[-1].out_features), np.float32)
