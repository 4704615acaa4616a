"""The production model's validation reference in the log's terms: class mix, confidence quantiles, OOD rate, accuracy."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from core.model import config, registry
from core.workspace.paths import Workspace


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
        1.0 - config.VALID_PASS,  # the threshold flags this share of in-domain images by construction
        float((predicted == ref["valid_labels"]).mean()),
    )
