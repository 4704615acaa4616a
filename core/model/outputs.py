"""What logits mean, in numpy only: softmax, free energy, the in-domain score, and the out-of-domain reference
fitted on a version's validation images (threshold and PCA of the features)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from core.errors import UserError
from core.model.config import DEFAULT_OOD_SCORE, EMBED_DIM, OOD_SCORES, VALID_PASS


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    z = logits / temperature
    z = np.exp(z - z.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


def energy(logits: np.ndarray) -> np.ndarray:
    """Free energy -logsumexp(logits): higher means less like the training data (Liu et al., 2020)."""
    top = logits.max(axis=1, keepdims=True)
    return -(top[:, 0] + np.log(np.exp(logits - top).sum(axis=1)))


def in_domain_score(logits: np.ndarray, kind: str) -> np.ndarray:
    """Higher is more in-domain: negative energy, or the top softmax probability."""
    if kind not in OOD_SCORES:
        raise UserError(f"Unknown out-of-domain score {kind!r}; choose one of {', '.join(OOD_SCORES)}.")
    return -energy(logits) if kind == "energy" else softmax(logits).max(axis=1)


@dataclass(frozen=True)
class Reference:
    """What the model's validation set looked like: the yardstick for OOD flags and monitoring."""

    ood_score: str
    ood_threshold: float  # in-domain score at or above this passes
    pca_mean: np.ndarray
    pca_components: np.ndarray  # [EMBED_DIM, features]
    valid_scores: np.ndarray


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
