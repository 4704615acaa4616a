"""Drivetrain step 4, the model of decisions: a policy, the action it takes, and what it realises on labelled predictions.

Probabilities are not decisions. A policy turns a prediction into an action: the action with the
highest expected utility under the (temperature-scaled) probabilities, the best action for "out of
domain" when the input is flagged, and referral to a human below a confidence threshold.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from core.drivetrain.levers import Utility
from core.model.outputs import softmax

RULES = ("expected_utility", "top_class")


# --- storage --------------------------------------------------------------------------------


# --- the policy -----------------------------------------------------------------------------

DecideFn = Callable[[np.ndarray, bool], str]  # (logits of one image, OOD flag) -> action


@dataclass(frozen=True)
class Policy:
    rule: str = "expected_utility"  # or "top_class": act on the most probable class, never refer for doubt
    temperature: float = 1.0  # logits / T before the softmax (fitted on validation when it calibrates better)
    refer_below: float = 0.0  # refer when the top probability is below this
    use_ood: bool = True  # an out-of-domain flag takes the "out of domain" row's best action. A safety rule the
    # optimizer does not fit: validation holds no out-of-domain images, so there it only ever costs.


def decide(u: Utility, policy: Policy, logits: np.ndarray, ood: np.ndarray) -> np.ndarray:
    """Action index per row of logits [N, classes] with OOD flags [N]."""
    net = u.net()
    probs = softmax(np.atleast_2d(logits), policy.temperature)
    n_classes = len(u.classes)
    if policy.rule == "top_class":
        chosen = best_actions(u)[probs.argmax(axis=1)]
    else:
        chosen = (probs @ net[:n_classes]).argmax(axis=1)
        chosen = np.where(probs.max(axis=1) < policy.refer_below, u.actions.index(u.refer), chosen)
    if policy.use_ood:
        chosen = np.where(np.asarray(ood, bool), int(net[n_classes].argmax()), chosen)
    return chosen


def best_actions(u: Utility) -> np.ndarray:
    """Per class, the action that is best when the class is certain; on a tie, "act on <class>" if it is one."""
    net = u.net()
    best = []
    for c, name in enumerate(u.classes):
        tied = np.flatnonzero(net[c] == net[c].max())
        own = [a for a in tied if u.actions[a] == f"act on {name}"]
        best.append(own[0] if own else tied[0])
    return np.array(best, int)


def decider(u: Utility, policy: Policy) -> DecideFn:
    """A function (logits row, ood flag) -> action name, for the prediction path."""

    def choose(logits: np.ndarray, ood: bool) -> str:
        return u.actions[int(decide(u, policy, logits[None, :], np.array([ood]))[0])]

    return choose


# --- the simulator --------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    policy: str
    images: int
    utility_total: float
    utility_per_image: float
    automation_rate: float  # share not referred
    automated_error_rate: float  # share of automated decisions that are not the best action for the true class
    table: pd.DataFrame = field(repr=False)  # true class x action counts


def policy_outcome(
    u: Utility, policy: Policy, logits: np.ndarray, labels: np.ndarray, ood: np.ndarray, name: str = "policy"
) -> Outcome:
    """Realised utility of a policy on labelled predictions (e.g. the validation set)."""
    net = u.net()
    chosen = decide(u, policy, logits, ood)
    gained = net[labels, chosen]
    refer = u.actions.index(u.refer)
    automated = chosen != refer
    right = net[labels, chosen] >= net[labels].max(axis=1)  # an action as good as the best one is not an error
    table = pd.crosstab(
        pd.Categorical([u.rows[i] for i in labels], categories=list(u.rows)),
        pd.Categorical([u.actions[i] for i in chosen], categories=list(u.actions)),
        dropna=False,
    )
    table.index.name, table.columns.name = "true class", "action"
    return Outcome(
        name,
        len(labels),
        float(gained.sum()),
        float(gained.mean()) if len(labels) else 0.0,
        float(automated.mean()) if len(labels) else 0.0,
        float((~right[automated]).mean()) if automated.any() else 0.0,
        table,
    )


def named_policies(policy: Policy) -> list[tuple[str, Policy]]:
    """The policy and its two baselines: "always follow the top class" (with the same out-of-domain rule) and
    "always refer"."""
    return [
        ("this policy", policy),
        ("always follow the top class", Policy(rule="top_class", use_ood=policy.use_ood)),
        ("always refer", Policy(rule="expected_utility", refer_below=1.01, use_ood=False)),
    ]


def policy_and_baselines(u: Utility, policy: Policy, logits: np.ndarray, labels: np.ndarray, ood: np.ndarray) -> list[Outcome]:
    """The policy against "always follow the top class" (with the same out-of-domain rule) and "always refer"."""
    return [policy_outcome(u, p, logits, labels, ood, name) for name, p in named_policies(policy)]


def threshold_curve(u: Utility, policy: Policy, logits: np.ndarray, labels: np.ndarray, ood: np.ndarray) -> pd.DataFrame:
    """Utility per image and automation rate as the referral threshold moves from 0 to 1."""
    rows = []
    for t in np.linspace(0.0, 1.0, 101):
        out = policy_outcome(u, Policy("expected_utility", policy.temperature, float(t), policy.use_ood), logits, labels, ood)
        rows.append({"threshold": float(t), "utility_per_image": out.utility_per_image, "automation_rate": out.automation_rate})
    return pd.DataFrame(rows)


def outcome_dict(o: Outcome) -> dict[str, Any]:
    return {
        "policy": o.policy,
        "images": o.images,
        "utility_total": o.utility_total,
        "utility_per_image": o.utility_per_image,
        "utility_per_1000_images": o.utility_per_image * 1000,
        "automation_rate": o.automation_rate,
        "automated_error_rate": o.automated_error_rate,
    }
