"""Practical significance: how large a change must be before it matters.

A test can be significant for an effect nobody should act on (images 1% sharper in a window of ten
thousand). As NannyML derives its thresholds from how much the reference varies from chunk to chunk, the
floor of each metric here is the change that the reference's own windows make ordinary: the 99th percentile
of the effect between random windows of the reference (of the window's size, at most FLOOR_WINDOW images)
and the whole reference, in the effect's own unit (median shift in reference SDs, a share, a total
variation, an MMD). An alert needs a significant test and an effect at least that large; a user can set a
metric's floor by hand (workspace setting `monitor_floors`).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from core.production.monitoring import stats
from core.production.monitoring.reference import DriftReference
from core.workspace import store
from core.workspace.paths import Workspace

FLOOR_WINDOW = 200  # reference windows are at most this size: in huge windows, a change this noise makes ordinary is no news
DRAWS = 400
QUANTILE = 0.99
SETTING = "monitor_floors"


def _spread(effects: np.ndarray) -> float:
    return float(np.quantile(np.abs(effects), QUANTILE))


def _numeric(values: np.ndarray, m: int, rng: np.random.Generator) -> dict[str, float]:
    """Floors of a one-number-per-image metric: its median shift (in SDs) and its tails' excess share."""
    ref = np.asarray(values, float)
    ref = ref[np.isfinite(ref)]
    if len(ref) < 2:
        return {"shift": 0.0, "tails": 0.0}
    sd = float(np.std(ref, ddof=1)) or 1.0
    draws = ref[rng.integers(len(ref), size=(DRAWS, m))]
    shift = (np.median(draws, axis=1) - np.median(ref)) / sd
    tail = max(0.01, 5.0 / len(ref))  # as stats.tail_test
    low, high = np.quantile(ref, tail), np.quantile(ref, 1.0 - tail)
    excess_low = (draws < low).mean(1) - (ref < low).mean()
    excess_high = (draws > high).mean(1) - (ref > high).mean()
    return {"shift": _spread(shift), "tails": _spread(np.maximum(excess_low, excess_high))}


def _class_mix(expected: np.ndarray, m: int, rng: np.random.Generator) -> dict[str, float]:
    p = np.clip(np.asarray(expected, float), 0, None)
    p = p / p.sum() if p.sum() > 0 else np.full(len(p), 1.0 / len(p))
    shares = rng.multinomial(m, p, size=DRAWS) / m
    return {
        "class_mix": _spread(0.5 * np.abs(shares - p).sum(1)),
        "class_share": _spread(np.abs(shares - p).max(1)),
    }


def _embedding(ref: np.ndarray, m: int, rng: np.random.Generator) -> float:
    phi = stats.mmd_features(ref, ref)
    means = np.stack([phi[rng.integers(len(ref), size=m)].mean(0) for _ in range(DRAWS)])
    return _spread(((means - phi.mean(0)) ** 2).sum(1))


def _rate(rate: float, m: int, rng: np.random.Generator) -> float:
    return _spread(rng.binomial(m, min(max(rate, 0.0), 1.0), size=DRAWS) / m - rate)


def reference_floors(ref: DriftReference, size: int, labelled: int = 0, seed: int = 0) -> dict[str, float]:
    """metric -> the smallest effect that matters, for a window of `size` distinct images (`labelled` of them
    with a label)."""
    rng = np.random.default_rng(seed)
    m = int(min(max(size, 2), FLOOR_WINDOW))
    floors: dict[str, float] = {}
    numeric = [("confidence", ref.confidence), ("energy", ref.energy)]
    numeric += [(str(p), ref.properties[p].to_numpy()) for p in ref.properties.columns]
    for metric, values in numeric:
        found = _numeric(values, m, rng)
        floors[metric], floors[f"{metric}_tails"] = found["shift"], found["tails"]
    floors.update(_class_mix(ref.expected_mix, m, rng))
    floors["embedding"] = _embedding(ref.embedding, m, rng)
    floors["ood_rate"] = _rate(float(np.mean(ref.ood)), m, rng)
    accuracy = float(np.mean(ref.predicted == ref.labels))
    floors["feedback_accuracy"] = _rate(accuracy, int(min(max(labelled, 2), FLOOR_WINDOW)), rng)
    return floors


def chosen_floors(ws: Workspace) -> dict[str, float]:
    """The floors a user set by hand (metric -> floor, in the metric's own unit)."""
    found = store.get_setting(ws, SETTING) or {}
    return {str(k): float(v) for k, v in found.items()}


def save_floors(ws: Workspace, floors: Mapping[str, float]) -> None:
    """Set (or, with a negative value, clear) metrics' floors by hand."""
    current = chosen_floors(ws)
    for metric, value in floors.items():
        if value < 0:
            current.pop(metric, None)
        else:
            current[metric] = float(value)
    store.set_setting(ws, SETTING, current)


def floor_for(metric: str, computed: Mapping[str, float], chosen: Mapping[str, float]) -> float:
    return float(chosen[metric]) if metric in chosen else float(computed.get(metric, 0.0))
