"""The Drivetrain model: objective, levers, a utility matrix, and a decision policy chosen for expected utility.

Probabilities are not decisions. A policy turns a prediction into an action: the action with the
highest expected utility under the (temperature-scaled) probabilities, the best action for "out of
domain" when the input is flagged, and referral to a human below a confidence threshold.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from core import store
from core.errors import UserError
from core.workspace import Workspace

OUT_OF_DOMAIN = "out of domain"
REFER = "refer to a human"
RULES = ("expected_utility", "top_class")


@dataclass(frozen=True)
class Objective:
    statement: str = ""  # the outcome wanted, in words
    decision: str = ""  # the decision the model serves
    affected: str = ""  # who is affected by it
    success: str = ""  # how success is measured

    @property
    def complete(self) -> bool:
        return all(v.strip() for v in asdict(self).values())


@dataclass(frozen=True)
class Utility:
    """Actions with a cost of use, and payoffs: rows = true class + out of domain, columns = actions."""

    actions: tuple[str, ...]
    costs: tuple[float, ...]
    rows: tuple[str, ...]
    payoff: tuple[tuple[float, ...], ...]
    refer: str = REFER  # the action that hands the image to a human
    unit: str = "points"

    def net(self) -> np.ndarray:
        """Payoff minus each action's cost of use: [rows, actions]."""
        return np.asarray(self.payoff, np.float64) - np.asarray(self.costs, np.float64)[None, :]

    @property
    def classes(self) -> tuple[str, ...]:
        return self.rows[:-1]


def default_utility(classes: list[str] | tuple[str, ...]) -> Utility:
    """One "act on <class>" per class plus referral: +10 right, -10 wrong, a review costs 2."""
    actions = tuple(f"act on {c}" for c in classes) + (REFER,)
    rows = tuple(classes) + (OUT_OF_DOMAIN,)
    payoff = []
    for r in range(len(rows)):
        payoff.append(tuple(10.0 if a == r else (0.0 if a == len(classes) else -10.0) for a in range(len(actions))))
    costs = tuple(0.0 for _ in classes) + (2.0,)
    return Utility(actions, costs, rows, tuple(payoff))


def utility_from_tables(
    actions: pd.DataFrame, matrix: pd.DataFrame, refer: str, classes: list[str], unit: str = "points"
) -> Utility:
    """Validate the Levers page's two tables (actions with costs; payoffs) into a Utility, or say what is wrong."""
    names = [str(n).strip() for n in actions["action"].tolist() if isinstance(n, str) and n.strip()]
    if len(names) != len(actions) or not names:
        raise UserError("Every action needs a name; remove empty rows from the actions table.")
    if len(set(names)) != len(names):
        raise UserError(f"Action names must differ; repeated: {sorted({n for n in names if names.count(n) > 1})}.")
    costs = [_number(v, f"cost of {n!r}") for n, v in zip(names, actions["cost"].tolist(), strict=True)]
    rows = [*classes, OUT_OF_DOMAIN]
    missing_rows = [r for r in rows if r not in matrix.index]
    missing_cols = [n for n in names if n not in matrix.columns]
    if missing_rows or missing_cols:
        raise UserError(f"The utility matrix lacks row(s) {missing_rows} or column(s) {missing_cols}; reload the page.")
    payoff = tuple(tuple(_number(matrix.loc[r, n], f"payoff of {n!r} when the truth is {r!r}") for n in names) for r in rows)
    if refer not in names:
        raise UserError(f"The referral action {refer!r} is not among the actions {names}.")
    return Utility(tuple(names), tuple(costs), tuple(rows), payoff, refer, unit.strip() or "points")


def _number(value: object, what: str) -> float:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise UserError(f"The {what} is {value!r}: enter a number (e.g. -1000, -10 or 0).") from None
    if not math.isfinite(number):
        raise UserError(f"The {what} is missing: enter a number (e.g. -1000, -10 or 0).")
    return number


def matrix_frame(u: Utility) -> pd.DataFrame:
    return pd.DataFrame(np.asarray(u.payoff), index=list(u.rows), columns=list(u.actions))


def actions_frame(u: Utility) -> pd.DataFrame:
    return pd.DataFrame({"action": list(u.actions), "cost": list(u.costs)})


# --- storage --------------------------------------------------------------------------------

OBJECTIVE_KEY = "objective"
UTILITY_KEY = "utility"


def load_objective(ws: Workspace) -> Objective:
    return Objective(**(store.get_setting(ws, OBJECTIVE_KEY) or {}))


def save_objective(ws: Workspace, objective: Objective) -> None:
    before = store.get_setting(ws, OBJECTIVE_KEY)
    store.set_setting(ws, OBJECTIVE_KEY, asdict(objective))
    store.audit(ws, "objective_saved", before=before, after=asdict(objective))


def load_utility(ws: Workspace, classes: list[str] | tuple[str, ...]) -> tuple[Utility, bool]:
    """The saved utility (True) when it fits these classes, else the default (False)."""
    saved = store.get_setting(ws, UTILITY_KEY)
    if saved and tuple(saved["rows"]) == (*classes, OUT_OF_DOMAIN):
        return Utility(
            tuple(saved["actions"]),
            tuple(saved["costs"]),
            tuple(saved["rows"]),
            tuple(tuple(r) for r in saved["payoff"]),
            saved.get("refer", REFER),
            saved.get("unit", "points"),
        ), True
    return default_utility(classes), False


def save_utility(ws: Workspace, u: Utility) -> None:
    before = store.get_setting(ws, UTILITY_KEY)
    store.set_setting(ws, UTILITY_KEY, asdict(u))
    store.audit(ws, "utility_saved", before=before, after=asdict(u))


# --- the policy -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Policy:
    rule: str = "expected_utility"  # or "top_class": act on the most probable class, never refer for doubt
    temperature: float = 1.0  # logits / T before the softmax (fitted on validation when it calibrates better)
    refer_below: float = 0.0  # refer when the top probability is below this
    use_ood: bool = True  # an out-of-domain flag takes the "out of domain" row's best action. A safety rule the
    # optimizer does not fit: validation holds no out-of-domain images, so there it only ever costs.


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    z = logits / temperature
    z = np.exp(z - z.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


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


def decider(u: Utility, policy: Policy) -> Any:
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


def simulate(
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


def baselines(u: Utility, policy: Policy, logits: np.ndarray, labels: np.ndarray, ood: np.ndarray) -> list[Outcome]:
    """The policy against "always follow the top class" (with the same out-of-domain rule) and "always refer"."""
    always_refer = Policy(rule="expected_utility", refer_below=1.01, use_ood=False)
    return [
        simulate(u, policy, logits, labels, ood, "this policy"),
        simulate(u, Policy(rule="top_class", use_ood=policy.use_ood), logits, labels, ood, "always follow the top class"),
        simulate(u, always_refer, logits, labels, ood, "always refer"),
    ]


def threshold_curve(u: Utility, policy: Policy, logits: np.ndarray, labels: np.ndarray, ood: np.ndarray) -> pd.DataFrame:
    """Utility per image and automation rate as the referral threshold moves from 0 to 1."""
    rows = []
    for t in np.linspace(0.0, 1.0, 101):
        out = simulate(u, Policy("expected_utility", policy.temperature, float(t), policy.use_ood), logits, labels, ood)
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
