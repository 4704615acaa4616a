"""Choosing a decision policy for a model version from its validation predictions.

The optimizer fits temperature and referral threshold on one half of the validation predictions
and reports on the other half with a bootstrap interval, so the figure it shows is honest.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from core.drivetrain.decisions import Outcome, Policy, decide, named_policies, policy_and_baselines, policy_outcome
from core.drivetrain.levers import Utility
from core.errors import UserError
from core.model import outputs, registry, scoring
from core.workspace.paths import Workspace


@dataclass(frozen=True)
class Validation:
    """A model version's validation predictions, as the simulator needs them."""

    version: str
    classes: tuple[str, ...]
    logits: np.ndarray
    labels: np.ndarray
    ood: np.ndarray
    ids: tuple[str, ...] = ()  # the images' catalog ids, in the same order


def validation(ws: Workspace, version: str | None = None) -> Validation:
    """Logits, true labels and OOD flags of the production (or given) model's validation images."""
    version = version or registry.production_version(ws)
    if version is None:
        raise UserError("There is no production model yet: train one and promote it on the Train page.")
    predictor = scoring.load_predictor(ws, version)
    ref = registry.load_reference(ws, version)
    logits = scoring.head_logits(predictor.model, ref["valid_features"])
    ood = outputs.in_domain_score(logits, predictor.reference.ood_score) < predictor.reference.ood_threshold
    ids = tuple(registry.read_meta(ws, version).get("valid_ids", ()))
    return Validation(version, predictor.classes, logits, ref["valid_labels"].astype(int), ood, ids)


def nll(logits: np.ndarray, labels: np.ndarray, temperature: float) -> float:
    p = outputs.softmax(logits, temperature)[np.arange(len(labels)), labels]
    return float(-np.log(np.clip(p, 1e-12, 1.0)).mean())


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The temperature minimising negative log-likelihood (a grid: robust on small sets)."""
    grid = np.exp(np.linspace(np.log(0.25), np.log(8.0), 121))
    return float(grid[int(np.argmin([nll(logits, labels, t) for t in grid]))])


@dataclass(frozen=True)
class Search:
    policy: Policy
    fit: list[Outcome]  # the chosen policy and its baselines on the fit half
    report: list[Outcome]  # the same on the report half
    interval: tuple[float, float]  # 95% bootstrap interval of utility per image on the report half
    temperature_fitted: float  # on the fit half
    temperature_used: bool  # whether the best policy on the fit half uses it
    fit_images: int
    report_images: int
    seed: int  # the fit/report split and the bootstrap
    report_ids: tuple[str, ...]  # the validation images the optimizer never saw


def split_halves(labels: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Stratified halves of the validation set (indices)."""
    rng = np.random.default_rng(seed)
    fit, report = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        fit += idx[: (len(idx) + 1) // 2].tolist()
        report += idx[(len(idx) + 1) // 2 :].tolist()
    return np.array(sorted(fit), int), np.array(sorted(report), int)


def candidates(temperature: float, use_ood: bool) -> list[Policy]:
    thresholds = np.round(np.linspace(0.0, 1.0, 51), 2)
    return [Policy("top_class", use_ood=use_ood)] + [
        Policy("expected_utility", temperature, float(t), use_ood) for t in thresholds
    ]


def optimize(u: Utility, v: Validation, seed: int = 0, boot: int = 1000, use_ood: bool = True) -> Search:
    """The policy with the highest utility on the fit half, reported on the other half (the OOD rule is given).
    Everything is chosen on the fit half, the temperature too (fitted there, and kept only when the best policy
    with it beats the best without it there): the report half is touched only to report."""
    if len(v.labels) < 4:
        raise UserError(f"Model {v.version} has {len(v.labels)} validation images; the optimizer needs at least 4.")
    fit, report = split_halves(v.labels, seed)
    t_fit = fit_temperature(v.logits[fit], v.labels[fit])

    def on(idx: np.ndarray, p: Policy) -> Outcome:
        return policy_outcome(u, p, v.logits[idx], v.labels[idx], v.ood[idx])

    options = candidates(1.0, use_ood) + [p for p in candidates(t_fit, use_ood) if p.temperature != 1.0]
    scored = [(on(fit, p).utility_per_image, -i, p) for i, p in enumerate(options)]
    best = max(scored, key=lambda s: (s[0], s[1]))[2]  # ties: the earliest (no temperature, top class, lower thresholds)
    chosen = decide(u, best, v.logits[report], v.ood[report])
    gained = u.net()[v.labels[report], chosen]
    rng = np.random.default_rng(seed)
    means = gained[rng.integers(0, len(gained), (boot, len(gained)))].mean(axis=1)
    return Search(
        best,
        policy_and_baselines(u, best, v.logits[fit], v.labels[fit], v.ood[fit]),
        policy_and_baselines(u, best, v.logits[report], v.labels[report], v.ood[report]),
        (float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))),
        t_fit,
        best.rule == "expected_utility" and best.temperature != 1.0,
        len(fit),
        len(report),
        seed,
        tuple(v.ids[i] for i in report) if len(v.ids) == len(v.labels) else (),
    )


def held_out(u: Utility, policy: Policy, v: Validation, seed: int = 0) -> tuple[list[Outcome], pd.DataFrame]:
    """The policy and its baselines on the half of validation the optimizer does not fit on, and its
    true class x action table there."""
    _, report = split_halves(v.labels, seed)
    outcomes = policy_and_baselines(u, policy, v.logits[report], v.labels[report], v.ood[report])
    return outcomes, outcomes[0].table


@dataclass(frozen=True)
class Comparison:
    """The policy and its baselines on the report half, each with a 95% bootstrap interval of utility per image,
    and the paired interval of the policy minus the better baseline (the same resampled images for both)."""

    outcomes: list[Outcome]  # this policy, always follow the top class, always refer
    intervals: list[tuple[float, float]]  # utility per image, in the same order
    baseline: str  # the better of the two baselines on these images
    difference: float  # utility per image, this policy minus that baseline
    difference_interval: tuple[float, float]

    @property
    def beats_baseline(self) -> bool:
        """Better than the better baseline by more than the noise: the paired interval lies above 0."""
        return self.difference_interval[0] > 0


def compare(u: Utility, policy: Policy, v: Validation, seed: int = 0, boot: int = 2000) -> Comparison:
    """The policy against its baselines on the half of validation the optimizer does not fit on."""
    _, report = split_halves(v.labels, seed)
    logits, labels, ood = v.logits[report], v.labels[report], v.ood[report]
    named = named_policies(policy)
    outcomes = [policy_outcome(u, p, logits, labels, ood, name) for name, p in named]
    gains = np.stack([u.net()[labels, decide(u, p, logits, ood)] for _, p in named])  # policies x images
    draws = np.random.default_rng(seed).integers(0, max(len(labels), 1), (boot, len(labels)))
    means = gains[:, draws].mean(axis=2) if len(labels) else np.zeros((len(named), boot))  # policies x draws
    better = 1 if outcomes[1].utility_per_image >= outcomes[2].utility_per_image else 2
    diff = means[0] - means[better]
    return Comparison(
        outcomes,
        [(float(np.percentile(m, 2.5)), float(np.percentile(m, 97.5))) for m in means],
        outcomes[better].policy,
        outcomes[0].utility_per_image - outcomes[better].utility_per_image,
        (float(np.percentile(diff, 2.5)), float(np.percentile(diff, 97.5))),
    )
