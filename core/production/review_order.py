"""The review queue ordered by the value of a label: the utility the decision taken is expected to have lost, under
the model's calibrated probabilities and the utility matrix its policy was accepted under.

For an item whose probabilities are p over the classes and whose decision was action a, the value is
sum_c p_c * (best payoff for class c - payoff of a for class c): nothing for a confident prediction acted on, the
most for a near coin-toss acted on at high stakes. A label tells what the right action was; summed over the items
like it, it is what retraining on them can win back. The audit sample keeps at least its share of every page:
ordered by value alone, its confident items would sink to the end and never be labelled.
"""

from __future__ import annotations

import duckdb
import numpy as np
import pandas as pd

from core.drivetrain import accepted
from core.drivetrain.decisions import best_actions
from core.drivetrain.levers import Utility, load_utility
from core.model import registry
from core.workspace.paths import Workspace


def utility_lost(net: np.ndarray, probs: np.ndarray, taken: np.ndarray) -> np.ndarray:
    """Per item: the expected utility lost by the action taken (net: payoff minus cost, [classes (+ out of
    domain), actions]; probs [items, classes]; taken: action index per item)."""
    n_classes = probs.shape[1]
    table = net[:n_classes]
    regret = table.max(axis=1)[None, :] - table[:, taken].T  # [items, classes]
    return (probs * regret).sum(axis=1)


def tempered(probs: np.ndarray, temperature: float) -> np.ndarray:
    """Probabilities at temperature 1 (as logged) brought to the policy's temperature."""
    if temperature == 1.0:
        return probs
    logits = np.log(np.clip(probs, 1e-12, 1.0)) / temperature
    logits -= logits.max(axis=1, keepdims=True)
    out = np.exp(logits)
    return out / out.sum(axis=1, keepdims=True)


def _version_values(ws: Workspace, version: str, part: pd.DataFrame, con: duckdb.DuckDBPyConnection) -> np.ndarray:
    policy = accepted.active(ws, version, con)
    if policy is not None:
        u, temperature = policy.utility, policy.policy.temperature
    else:  # no policy accepted: the label is the action, judged by the workspace's utility matrix
        u, temperature = _utility(ws, version), 1.0
    probs = tempered(np.stack([np.asarray(p, np.float64) for p in part["probs"]]), temperature)
    if probs.shape[1] != len(u.classes):
        return np.zeros(len(part))  # a matrix for other classes: no value to order by (kept in time order)
    own = best_actions(u)[probs.argmax(axis=1)]  # an action the matrix does not name: the label was the action
    taken = np.array([u.actions.index(a) if a in u.actions else o for a, o in zip(part["action"], own, strict=True)])
    return utility_lost(u.net(), probs, taken)


def _utility(ws: Workspace, version: str) -> Utility:
    return load_utility(ws, tuple(registry.read_meta(ws, version)["classes"]))[0]


def values(ws: Workspace, frame: pd.DataFrame, con: duckdb.DuckDBPyConnection) -> np.ndarray:
    """The value of a label for each row (model_version, probs, action)."""
    out = np.zeros(len(frame))
    for version, part in frame.groupby("model_version", sort=False):
        out[frame.index.get_indexer(part.index)] = _version_values(ws, str(version), part, con)
    return out


def interleave(value: np.ndarray, audit: np.ndarray) -> np.ndarray:
    """Positions in value order, the audit items at least at their share: among the first k, at least
    floor(k * audits / all) of them (the most valuable of either kind first otherwise)."""
    audit = np.asarray(audit, bool)
    share = audit.mean() if len(audit) else 0.0
    drawn = [i for i in np.argsort(-value, kind="stable") if audit[i]]
    rest = [i for i in np.argsort(-value, kind="stable") if not audit[i]]
    out: list[int] = []
    a = r = 0
    while a < len(drawn) or r < len(rest):
        owed = a < np.floor((len(out) + 1) * share + 1e-9)
        if a < len(drawn) and (owed or r >= len(rest) or value[drawn[a]] >= value[rest[r]]):
            out.append(drawn[a])
            a += 1
        else:
            out.append(rest[r])
            r += 1
    return np.array(out, int)


def ranked(ws: Workspace, frame: pd.DataFrame, con: duckdb.DuckDBPyConnection) -> list[str]:
    """The waiting ids (frame: id, model_version, probs, action, audit; in time order) most valuable first."""
    if frame.empty:
        return []
    frame = frame.reset_index(drop=True)
    order = interleave(values(ws, frame, con), frame["audit"].fillna(False).to_numpy(bool))
    return frame["id"].iloc[order].tolist()
