"""Choosing, accepting and reporting a decision policy for a model version.

The optimizer fits temperature and referral threshold on one half of the validation predictions
and reports on the other half with a bootstrap interval, so the figure it shows is honest.
"""

from __future__ import annotations

import html
import json
import uuid
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from core import prediction, registry, store
from core.decisions import Objective, Outcome, Policy, Utility, baselines, decide, decider, load_utility, simulate, softmax
from core.errors import UserError
from core.workspace import Workspace


@dataclass(frozen=True)
class Validation:
    """A model version's validation predictions, as the simulator needs them."""

    version: str
    classes: tuple[str, ...]
    logits: np.ndarray
    labels: np.ndarray
    ood: np.ndarray


def validation(ws: Workspace, version: str | None = None) -> Validation:
    """Logits, true labels and OOD flags of the production (or given) model's validation images."""
    version = version or registry.production_version(ws)
    if version is None:
        raise UserError("There is no production model yet: train one and promote it on the Train page.")
    predictor = prediction.load_predictor(ws, version)
    ref = registry.load_reference(ws, version)
    logits = prediction.head_logits(predictor.model, ref["valid_features"])
    ood = prediction.in_domain_score(logits, predictor.reference.ood_score) < predictor.reference.ood_threshold
    return Validation(version, predictor.classes, logits, ref["valid_labels"].astype(int), ood)


def nll(logits: np.ndarray, labels: np.ndarray, temperature: float) -> float:
    p = softmax(logits, temperature)[np.arange(len(labels)), labels]
    return float(-np.log(np.clip(p, 1e-12, 1.0)).mean())


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The temperature minimising negative log-likelihood (a grid: robust on small sets)."""
    grid = np.exp(np.linspace(np.log(0.25), np.log(8.0), 121))
    return float(grid[int(np.argmin([nll(logits, labels, t) for t in grid]))])


@dataclass(frozen=True)
class Search:
    policy: Policy
    fit: list[Outcome]  # the chosen policy and baselines on the fit half
    report: list[Outcome]  # the same on the report half
    interval: tuple[float, float]  # 95% bootstrap interval of utility per image on the report half
    temperature_fitted: float
    temperature_used: bool
    fit_images: int
    report_images: int


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
    """The policy with the highest utility on the fit half, reported on the other half (the OOD rule is given)."""
    if len(v.labels) < 4:
        raise UserError(f"Model {v.version} has {len(v.labels)} validation images; the optimizer needs at least 4.")
    fit, report = split_halves(v.labels, seed)
    t_fit = fit_temperature(v.logits[fit], v.labels[fit])
    use_t = nll(v.logits[report], v.labels[report], t_fit) < nll(v.logits[report], v.labels[report], 1.0)
    temperature = t_fit if use_t else 1.0

    def on(idx: np.ndarray, p: Policy) -> Outcome:
        return simulate(u, p, v.logits[idx], v.labels[idx], v.ood[idx])

    scored = [(on(fit, p).utility_per_image, -i, p) for i, p in enumerate(candidates(temperature, use_ood))]
    best = max(scored, key=lambda s: (s[0], s[1]))[2]  # ties: the earliest (top class, then lower thresholds)
    chosen = decide(u, best, v.logits[report], v.ood[report])
    gained = u.net()[v.labels[report], chosen]
    rng = np.random.default_rng(seed)
    means = gained[rng.integers(0, len(gained), (boot, len(gained)))].mean(axis=1)
    return Search(
        best,
        baselines(u, best, v.logits[fit], v.labels[fit], v.ood[fit]),
        baselines(u, best, v.logits[report], v.labels[report], v.ood[report]),
        (float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))),
        t_fit,
        bool(use_t),
        len(fit),
        len(report),
    )


# --- accepted policies ----------------------------------------------------------------------


def accept(ws: Workspace, version: str, policy: Policy, u: Utility, report: dict[str, Any] | None = None) -> str:
    """Version the policy with the model: Predict, batch scoring and the log use it from now on."""
    policy_id = uuid.uuid4().hex[:12]
    with store.connect(ws) as con:
        con.execute("BEGIN")
        con.execute(
            "INSERT INTO policies VALUES (?, ?, ?, ?, ?, ?)",
            [
                policy_id,
                version,
                store.now(),
                json.dumps(asdict(policy)),
                json.dumps(asdict(u)),
                json.dumps(report or {}, default=float),
            ],
        )
        store.audit(ws, "policy_accepted", after={"policy_id": policy_id, "model_version": version, **asdict(policy)}, con=con)
        con.execute("COMMIT")
    return policy_id


def active(ws: Workspace, version: str) -> tuple[str, Policy, Utility] | None:
    """The latest policy accepted for this model version, if any."""
    with store.connect(ws) as con:
        row = con.execute(
            "SELECT policy_id, policy, utility FROM policies WHERE model_version = ? ORDER BY accepted_at DESC LIMIT 1", [version]
        ).fetchone()
    if row is None:
        return None
    u = json.loads(row[2])
    utility = Utility(
        tuple(u["actions"]), tuple(u["costs"]), tuple(u["rows"]), tuple(tuple(r) for r in u["payoff"]), u["refer"], u["unit"]
    )
    return row[0], Policy(**json.loads(row[1])), utility


def active_decider(ws: Workspace, version: str) -> tuple[str | None, prediction.DecideFn | None]:
    """The accepted policy's id and decision function for the prediction path (None, None without one)."""
    found = active(ws, version)
    if found is None:
        return None, None
    policy_id, policy, u = found
    return policy_id, decider(u, policy)


# --- figures and the stakeholder summary ----------------------------------------------------


def curve_figure(curve: pd.DataFrame, chosen: Policy, others: list[Outcome], unit: str) -> go.Figure:
    fig = go.Figure()
    fig.add_scatter(x=curve["threshold"], y=curve["utility_per_image"], mode="lines", name="expected-utility policy")
    for o, dash in zip(others[1:], ("dash", "dot"), strict=False):
        fig.add_hline(y=o.utility_per_image, line_dash=dash, annotation_text=o.policy, annotation_position="bottom right")
    if chosen.rule == "expected_utility":
        fig.add_vline(x=chosen.refer_below, line_color="#E45756", annotation_text="this policy's threshold")
    fig.update_layout(
        xaxis_title="refer to a human below this top probability",
        yaxis_title=f"utility per image ({unit})",
        height=380,
        margin={"t": 30, "b": 40},
        showlegend=False,
    )
    return fig


def outcomes_frame(outcomes: list[Outcome], unit: str) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "policy": [o.policy for o in outcomes],
            f"utility per 1,000 images ({unit})": [round(o.utility_per_image * 1000, 1) for o in outcomes],
            "automated": [f"{o.automation_rate:.1%}" for o in outcomes],
            "errors among automated": [f"{o.automated_error_rate:.1%}" for o in outcomes],
        }
    )


def describe(policy: Policy) -> str:
    if policy.rule == "top_class":
        return "act on the most probable class; never refer"
    parts = ["take the action with the highest expected utility"]
    if policy.temperature != 1.0:
        parts.append(f"probabilities temperature-scaled (T = {policy.temperature:.2f})")
    if policy.refer_below > 0:
        parts.append(f"refer to a human when the top probability is below {policy.refer_below:.2f}")
    if policy.use_ood:
        parts.append("out-of-domain inputs take the best action for 'out of domain'")
    return "; ".join(parts)


def summary_html(
    workspace_name: str,
    objective: Objective,
    u: Utility,
    policy: Policy,
    outcomes: list[Outcome],
    confusion: pd.DataFrame,
    version: str,
) -> str:
    """A standalone HTML page for stakeholders: objective, levers, utility, policy, outcome per 1,000, confusion."""
    e = html.escape
    table_style = "border-collapse:collapse"

    def table(frame: pd.DataFrame, index: bool = True) -> str:
        return frame.to_html(index=index, border=1, justify="center").replace('class="dataframe"', f'style="{table_style}"')

    actions = pd.DataFrame({"action": u.actions, f"cost of use ({u.unit})": u.costs})
    matrix = pd.DataFrame(np.asarray(u.payoff), index=list(u.rows), columns=list(u.actions))
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{e(workspace_name)}: decision summary</title>
<style>body{{font-family:system-ui,sans-serif;max-width:960px;margin:2em auto;line-height:1.45}}
td,th{{padding:4px 10px}} h2{{margin-top:1.6em}}</style></head><body>
<h1>{e(workspace_name)}: decision summary</h1>
<p>Model {e(version)}; generated {e(str(store.now())[:16])} UTC.</p>
<h2>Objective</h2>
<p><b>Outcome wanted:</b> {e(objective.statement or "not stated yet")}<br>
<b>Decision served:</b> {e(objective.decision or "not stated yet")}<br>
<b>Who is affected:</b> {e(objective.affected or "not stated yet")}<br>
<b>Success measure:</b> {e(objective.success or "not stated yet")}</p>
<h2>Levers (actions)</h2>{table(actions, index=False)}
<h2>Utility matrix ({e(u.unit)}; rows: what the image really is, columns: action)</h2>{table(matrix)}
<h2>Chosen policy</h2><p>{e(describe(policy)[0].upper() + describe(policy)[1:])}.</p>
<h2>Expected outcome per 1,000 images</h2>
<p>Measured on validation images the optimizer did not see.</p>{table(outcomes_frame(outcomes, u.unit), index=False)}
<h2>Confusion (true class by action, same images)</h2>{table(confusion)}
</body></html>
"""


def held_out(u: Utility, policy: Policy, v: Validation, seed: int = 0) -> tuple[list[Outcome], pd.DataFrame]:
    """The policy and its baselines on the half of validation the optimizer does not fit on, and its
    true class x action table there."""
    _, report = split_halves(v.labels, seed)
    outcomes = baselines(u, policy, v.logits[report], v.labels[report], v.ood[report])
    return outcomes, outcomes[0].table


def current(ws: Workspace, v: Validation) -> tuple[Policy, Utility, str | None, bool]:
    """The accepted policy for v's model (else the default), the workspace's utility matrix, the policy id,
    and whether the matrix changed since the policy was accepted (then it should be optimized again)."""
    utility = load_utility(ws, v.classes)[0]
    found = active(ws, v.version)
    if found:
        return found[1], utility, found[0], found[2] != utility
    return Policy(), utility, None, False
