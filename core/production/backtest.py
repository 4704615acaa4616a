"""Backtest before shadow: the kept production images of a period replayed through a candidate version, as the
serving path would have scored them under the candidate's accepted policy, and compared with what production did.

The candidate's predictions are logged with source and stage 'backtest', never served: monitoring reads only the
served sources, the review queue only served predictions, and the rollout comparison only shadow and limited
ones, so a backtest changes none of their figures. Replaying again scores only the requests not replayed yet.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import timedelta

import numpy as np
import pandas as pd

from core.drivetrain import accepted
from core.drivetrain.decisions import best_actions
from core.drivetrain.levers import load_utility
from core.errors import UserError
from core.model import registry
from core.model.rates import MIN_N, Rate, points
from core.production import gate, prediction_log, serving
from core.production.prediction import Deciders
from core.production.prediction_log import NONE_OF_THESE
from core.progress import ProgressFn
from core.workspace import store
from core.workspace.paths import Workspace

STAGE = prediction_log.REPLAY  # the stage and the source of a backtest's predictions
CHUNK = 64  # images read and scored at a time: memory stays flat over a long period

_PERIOD = """
    WITH fb AS (SELECT prediction_id, arg_max(label, ts) AS label, max(ts) AS at FROM log_feedback GROUP BY prediction_id),
    served AS (
        SELECT p.* FROM log_predictions p
        WHERE p.served IS NOT FALSE AND p.source IN (SELECT unnest(?::VARCHAR[])) AND p.ts >= ? AND p.model_version <> ?
    ),
    labels AS (
        SELECT coalesce(p.request_id, p.id) AS request, arg_max(fb.label, fb.at) AS truth
        FROM log_predictions p JOIN fb ON fb.prediction_id = p.id GROUP BY 1
    ),
    hard AS (  -- the queue's reasons, as monitoring.accuracy counts them
        SELECT coalesce(request_id, id) AS request,
               bool_or(served IS NOT FALSE AND (ood OR coalesce(referred, FALSE)))
                   OR count(DISTINCT predicted) FILTER (WHERE coalesce(stage, 'production') <> 'backtest') > 1 AS flagged
        FROM log_predictions GROUP BY 1
    )
    SELECT s.id, coalesce(s.request_id, s.id) AS request, s.ts, s.name, s.source, s.image_path, s.model_version,
           s.predicted AS production_label, s.action AS production_action, s.ood,
           b.predicted AS candidate_label, b.action AS candidate_action, b.id AS backtest_id,
           l.truth, h.flagged, coalesce(s.audit, FALSE) AS audit, coalesce(s.audit_p, 0.0) AS audit_p
    FROM served s
    LEFT JOIN log_predictions b ON b.request_id = coalesce(s.request_id, s.id) AND b.stage = 'backtest' AND b.model_version = ?
    LEFT JOIN labels l ON l.request = coalesce(s.request_id, s.id)
    LEFT JOIN hard h ON h.request = coalesce(s.request_id, s.id)
    ORDER BY s.ts, s.id
"""


@dataclass(frozen=True)
class Backtest:
    version: str
    days: int
    period: int  # served predictions in the period (by other versions)
    replayed: int  # of them, scored by the candidate
    not_kept: int  # could not be replayed: their image was not kept (or is gone)
    agreement: Rate  # same class as production, of those replayed
    same_action: Rate  # same action as production took
    labelled: gate.Paired  # both on every labelled replayed request (mostly the hard cases the queue collects)
    audited: gate.Paired  # both on the labelled audit items: the random sample, unbiased
    utility: dict[str, float | None]  # per labelled request, each under its own accepted policy's actions
    utility_n: int
    changed: pd.DataFrame  # the requests whose action would have changed: name, image_path, both actions, truth
    rows: pd.DataFrame  # every served prediction of the period with the candidate's answer (NaN where not replayed)


def period_rows(ws: Workspace, version: str, days: int) -> pd.DataFrame:
    start = store.now() - timedelta(days=int(days))
    with store.connect(ws) as con:
        return con.execute(_PERIOD, [list(prediction_log.SOURCES), start, version, version]).df()


def run(ws: Workspace, version: str, days: int = 7, on_progress: ProgressFn | None = None) -> Backtest:
    """Replay the period's kept images not replayed yet through `version`, log them as 'backtest', and report."""
    if version not in set(registry.list_versions(ws)["version"]):
        raise UserError(f"No model version {version!r} in this workspace: `python -m core models` lists them.")
    rows = period_rows(ws, version, days)
    todo = rows[rows["backtest_id"].isna() & rows["image_path"].notna()]
    todo = todo[[(ws.root / p).is_file() for p in todo["image_path"]]]
    if len(todo):
        from core.model import scoring  # torch: where a model runs

        predictor = scoring.load_predictor(ws, version)
        deciders = Deciders.of(accepted.active(ws, version))
        for start in range(0, len(todo), CHUNK):
            part = todo.iloc[start : start + CHUNK]
            # scored under the row's id (names repeat), then given back its name, request and time
            items = [(i, (ws.root / p).read_bytes()) for i, p in zip(part["id"], part["image_path"], strict=True)]
            scored = serving.score(predictor, None, None, items, deciders, keep_bytes=False)
            original = part.set_index("id")
            preds, times = [], []
            for p in scored.shown:  # an unreadable image is skipped (counted as not replayed)
                row = original.loc[p.name]
                preds.append(replace(p, name=row["name"], stage=STAGE, served=False, request_id=row["request"]))
                times.append(row["ts"].to_pydatetime())
            prediction_log.log_predictions(ws, preds, STAGE, version, times, keep_images=False)
            if on_progress:
                on_progress(min(start + CHUNK, len(todo)), len(todo), "replaying")
        rows = period_rows(ws, version, days)
    return report(ws, version, days, rows)


def _utility(ws: Workspace, frame: pd.DataFrame, version: str) -> tuple[dict[str, float | None], int]:
    """Mean realised utility per labelled request (truth a class), each side's actions, the workspace's matrix."""
    labelled = frame[frame["truth"].notna() & (frame["truth"] != NONE_OF_THESE)]
    if labelled.empty:
        return {"production": None, "candidate": None}, 0
    u = load_utility(ws, tuple(registry.read_meta(ws, version)["classes"]))[0]
    net, rows, own = u.net(), list(u.rows), best_actions(u)

    def index(action: object) -> int | None:  # without an accepted policy the label was the action: its best one
        if action in u.actions:
            return u.actions.index(action)
        return int(own[u.classes.index(action)]) if action in u.classes else None

    def realised(actions: pd.Series) -> float | None:
        known = [(rows.index(t), index(a)) for t, a in zip(labelled["truth"], actions, strict=True) if t in rows]
        known = [(r, a) for r, a in known if a is not None]
        return float(np.mean([net[r, a] for r, a in known])) if known else None

    return {"production": realised(labelled["production_action"]), "candidate": realised(labelled["candidate_action"])}, len(
        labelled
    )


def report(ws: Workspace, version: str, days: int, rows: pd.DataFrame | None = None) -> Backtest:
    rows = period_rows(ws, version, days) if rows is None else rows
    done = rows[rows["backtest_id"].notna()]
    agree = done["production_label"] == done["candidate_label"]
    same_action = done["production_action"] == done["candidate_action"]
    labelled = done[done["truth"].notna()]
    audited = labelled[labelled["audit"].astype(bool)]
    utility, n_utility = _utility(ws, done, version)
    changed = done[~same_action.to_numpy(bool)][
        ["name", "image_path", "ts", "production_label", "production_action", "candidate_label", "candidate_action", "truth"]
    ]
    return Backtest(
        version,
        int(days),
        len(rows),
        len(done),
        int(len(rows) - len(done)),
        Rate(int(agree.sum()), len(done)),
        Rate(int(same_action.sum()), len(done)),
        _paired(labelled),
        _paired(audited),
        utility,
        n_utility,
        changed.sort_values("ts", ascending=False).reset_index(drop=True),
        rows,
    )


def _paired(frame: pd.DataFrame) -> gate.Paired:
    truth = frame["truth"].to_numpy(object)
    return gate.paired_accuracy(
        frame["production_label"].to_numpy(object) == truth, frame["candidate_label"].to_numpy(object) == truth
    )


def words(p: gate.Paired, what: str) -> str:
    """One line per kind of label, built from the figures."""
    if not p.labelled:
        return f"{what}: none labelled"
    if p.labelled < MIN_N:
        return f"{what}: too few (n {p.labelled}) for a rate"
    return (
        f"{what} ({p.labelled}): production {p.production:.1%}, the candidate {p.candidate:.1%}; difference "
        f"{points(p.difference)} points (95% interval {points(p.low)} to {points(p.high)})"
    )


def summary(b: Backtest) -> dict[str, object]:
    """The report for `rollout --backtest --json`."""
    return {
        "version": b.version,
        "days": b.days,
        "served": b.period,
        "replayed": b.replayed,
        "not_replayed_image_not_kept": b.not_kept,
        "agreement": b.agreement.value if b.agreement.n else None,
        "same_action": b.same_action.value if b.same_action.n else None,
        **{
            kind: {
                "n": p.labelled,
                "production": p.production,
                "candidate": p.candidate,
                "difference": p.difference,
                "low": p.low,
                "high": p.high,
            }
            for kind, p in (("labelled", b.labelled), ("audit", b.audited))
        },  # fmt: skip
        "words": [words(b.labelled, "On labelled requests, mostly the hard cases"), words(b.audited, "On the audit sample")],
        "utility_per_labelled": b.utility,
        "utility_n": b.utility_n,
        "actions_changed": len(b.changed),
        "changed": [
            {
                "name": r["name"],
                "image_path": r["image_path"],
                "production": r["production_action"],
                "candidate": r["candidate_action"],
            }
            for r in b.changed.head(50).to_dict("records")
        ],  # fmt: skip
    }
