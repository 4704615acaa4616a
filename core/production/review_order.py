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


def _utility(ws: Workspace, version: str) -> Utility:
    return load_utility(ws, tuple(registry.read_meta(ws, version)["classes"]))[0]


def interleave(value: np.ndarray, audit: np.ndarray, share: float | None = None) -> np.ndarray:
    """Positions in value order, the audit items at least at their share (default: theirs among these): among the
    first k, at least floor(k * share) of them (the most valuable of either kind first otherwise)."""
    audit = np.asarray(audit, bool)
    if share is None:
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


REGRET = "review_regret"  # per version: the regret column of each action, and of the best action for each top class


def _regret_rows(ws: Workspace, version: str, con: duckdb.DuckDBPyConnection) -> list[tuple[object, ...]]:
    """REGRET's rows for one version (as `_version_values` weighs it): (version, action, top class, temperature,
    classes, the regret of that action for each class)."""
    policy = accepted.active(ws, version, con)
    if policy is not None:
        u, temperature = policy.utility, policy.policy.temperature
    else:
        u, temperature = _utility(ws, version), 1.0
    table = u.net()[: len(u.classes)]
    regret = table.max(axis=1)[:, None] - table  # [classes, actions]
    k = len(u.classes)
    rows: list[tuple[object, ...]] = [(version, a, None, temperature, k, regret[:, i].tolist()) for i, a in enumerate(u.actions)]
    rows += [(version, None, c + 1, temperature, k, regret[:, b].tolist()) for c, b in enumerate(best_actions(u))]
    return rows


def top(ws: Workspace, con: duckdb.DuckDBPyConnection, relation: str, n: int) -> list[str]:
    """The first n ids of `relation` (id, ts, model_version, probs, action, audit) most valuable first, as `ranked`
    orders them, with the value of every row computed in the database (no row read into Python but the 2n it
    interleaves: the first n of the interleaving take at most n of each kind)."""
    versions = [r[0] for r in con.execute(f"SELECT DISTINCT model_version FROM {relation}").fetchall()]
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE {REGRET} (version VARCHAR, action VARCHAR, top INTEGER, temperature DOUBLE, "
        "k INTEGER, regret DOUBLE[])"
    )
    rows = [row for v in versions if v is not None for row in _regret_rows(ws, str(v), con)]
    if rows:
        con.executemany(f"INSERT INTO {REGRET} VALUES (?, ?, ?, ?, ?, ?)", rows)
    valued = f"""
        WITH w AS (SELECT r.id, r.ts, r.model_version AS version, r.probs::DOUBLE[] AS probs, r.action,
                          coalesce(r.audit, FALSE) AS audit, t.temperature, t.k
                   FROM {relation} r LEFT JOIN (SELECT DISTINCT version, temperature, k FROM {REGRET}) t
                        ON t.version = r.model_version),
        l AS (SELECT *, list_transform(probs, lambda x: ln(least(greatest(x, 1e-12), 1.0)) / temperature) AS logits FROM w),
        e AS (SELECT *, list_transform(logits, lambda x: exp(x - list_max(logits))) AS raised FROM l),
        p AS (SELECT id, ts, version, action, audit,
                     CASE WHEN k IS NULL OR len(probs) <> k THEN NULL  -- a matrix for other classes: no value
                          WHEN temperature = 1 THEN probs
                          ELSE list_transform(raised, lambda x: x / list_sum(raised)) END AS p
              FROM e),
        r AS (SELECT p.id, p.ts, p.audit, p.p, coalesce(a.regret, b.regret) AS regret
              FROM p LEFT JOIN {REGRET} a ON a.version = p.version AND a.action = p.action AND a.top IS NULL
                     LEFT JOIN {REGRET} b ON b.version = p.version AND b.top = list_position(p.p, list_max(p.p))
                                          AND b.action IS NULL),
        v AS (SELECT id, ts, audit,  -- sum over classes of p * regret (0 where there is no value)
                     coalesce(list_sum(list_transform(range(len(p)), lambda i: p[i + 1] * regret[i + 1])), 0) AS value
              FROM r)
        SELECT id, audit, value, (SELECT avg(audit::INTEGER) FROM v) AS share FROM (
            SELECT *, row_number() OVER (PARTITION BY audit ORDER BY value DESC, ts, id) AS place FROM v
        ) WHERE place <= ? ORDER BY value DESC, ts, id
    """
    found = con.execute(valued, [int(n)]).df()
    if found.empty:
        return []
    share = float(found["share"].iloc[0])
    order = interleave(found["value"].to_numpy(float), found["audit"].to_numpy(bool), share)
    return found["id"].iloc[order[:n]].tolist()
