"""The ready demo `make run` opens, as a worked example every page can show: digits, an objective, levers with
a utility matrix, a trained production model with an accepted policy, a week of simulated traffic, a few
items reviewed from the queue, a retrained candidate in shadow over the second (drifting) week, and its
comparison with production on the same requests. The audit draws 10% of the requests (the deployment's setting,
2% unless changed) and every one drawn is labelled, as a team that keeps up with its audit does: two weeks of 60
requests a day then give the audit's unbiased accuracy (about 80 labels) instead of "too few".

Everything here is simulated and says so: the traffic replays held-out test images (and shifted copies and
line drawings), the reviewer is the simulator's truth under the name "simulated reviewer".
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import timedelta
from typing import Any

from core.data import gather
from core.drivetrain import accepted, levers, objective
from core.model import registry, runs
from core.model.config import TrainConfig
from core.production import audit, prediction_log, review, rollout, traffic
from core.workspace import store, workspaces
from core.workspace.paths import Workspace

Say = Callable[[str], None]
REVIEWER = "simulated reviewer"
REVIEWED = 5  # queue items the demo reviews, oldest first (from the simulator's truth), besides the audit's
AUDIT_SHARE = 0.10  # the demo's audit: at 2%, its 840 requests would draw ~17, too few for an estimate
OBJECTIVE = objective.Objective(
    statement="Route scanned handwritten digits on forms without a clerk reading each one; never misfile silently.",
    decision="For each scan: file it under the digit read, or send it to a clerk.",
    affected="Applicants whose forms are misfiled; the clerks who read what the model sends them.",
    success="Misfiled scans per 1,000 (target below 5) and clerk minutes per day.",
)


def prepare_demo(
    name: str = "demo",
    days: int = 14,
    say: Say = print,
    classes: Sequence[str] | None = None,
    cfg: TrainConfig | None = None,
    per_day: int = 60,
) -> dict[str, Any]:
    """Each missing step only: gather the digits (all, or `classes`), train and promote a model (the demo's
    recipe, or `cfg`), state the objective and levers, accept a policy; then, on an empty log, simulate the first
    half of `days`, review a few queue items, retrain a candidate, put it in shadow and simulate the second half."""
    done: dict[str, Any] = {"workspace": name}
    ws: Workspace = workspaces.resolve(name, create=True)
    if not store.label_counts(ws):
        say("demo: writing the bundled digits")
        done["images"] = len(gather.add_demo(ws, classes).added)
    if registry.production_version(ws) is None:
        say("demo: training a model (about 30 s on a laptop CPU)")
        summary = runs.train_workspace(ws, cfg or runs.defaults(ws))
        registry.promote(ws, summary["version"])
        done["trained"] = {k: summary[k] for k in ("version", "valid_accuracy", "wall_seconds")}
    production = registry.production_version(ws)
    if not objective.load_objective(ws).complete:
        objective.save_objective(ws, OBJECTIVE)
    classes = registry.read_meta(ws, production)["classes"]
    if not levers.load_utility(ws, classes)[1]:
        levers.save_utility(ws, levers.default_utility(classes))
    if accepted.active(ws, production) is None:
        say("demo: choosing and accepting a decision policy")
        accepted.accept_optimized(ws, production)
    if prediction_log.count(ws) == 0:
        done.update(history(ws, cfg or runs.defaults(ws), days, per_day, say))
    done["production"] = registry.production_version(ws)
    done["predictions"] = prediction_log.count(ws)
    return done


def history(ws: Workspace, cfg: TrainConfig, days: int, per_day: int, say: Say) -> dict[str, Any]:
    """Two halves of simulated traffic with the human loop in between: reviews, a retrained candidate in shadow."""
    first = max(days // 2, 1)
    second = max(days - first, 1)
    today = store.now().replace(hour=0, minute=0, second=0, microsecond=0)
    audit.set_share(ws, AUDIT_SHARE)
    say(f"demo: simulating {first} days of production traffic")
    calm = traffic.TrafficConfig(days=first, per_day=per_day, shift_day=first)
    before = traffic.replay_traffic(ws, calm, end=today - timedelta(days=second))
    reviewed = review_some(ws, REVIEWED)
    say("demo: retraining a candidate (the next seed) and running it in shadow")
    summary = runs.train_workspace(ws, replace(cfg, seed=cfg.seed + 1))
    candidate = summary["version"]
    accepted.accept_optimized(ws, candidate)
    rollout.start(ws, candidate, "shadow", note="demo: a retrained candidate, compared with production on live traffic")
    say(f"demo: simulating {second} more days (drifting) with the candidate in shadow")
    drifting = traffic.TrafficConfig(days=second, per_day=per_day, shift_day=second // 2, seed=1)
    after = traffic.replay_traffic(ws, drifting, end=today)
    audited = review_audit(ws)
    return {
        "simulated": {"predictions": before["predictions"] + after["predictions"], "start": before["start"], "end": after["end"]},
        "reviewed": reviewed,
        "audited": audited,
        "candidate": candidate,
    }


def review_some(ws: Workspace, n: int) -> int:
    """Label the n oldest queue items with the simulator's truth, as a reviewer would, under a name that says so."""
    items = review.pending(ws, n)
    marks = ", ".join("?" for _ in items) or "NULL"
    with store.connect(ws) as con:
        rows = con.execute(
            f"SELECT prediction_id, label FROM simulation_truth WHERE prediction_id IN ({marks})", [i.id for i in items]
        )
        truth = dict(rows.fetchall())
    for item in items:
        if item.id in truth:
            review.label(ws, item.id, truth[item.id], REVIEWER)
    return sum(i.id in truth for i in items)


def review_audit(ws: Workspace) -> int:
    """Label every served prediction drawn for the audit and not labelled yet with the simulator's truth, as a team
    that keeps up with its audit would (the queue shows them unmarked; here the simulator knows which they are)."""
    with store.connect(ws) as con:
        rows = con.execute(
            """SELECT t.prediction_id, t.label FROM simulation_truth t JOIN log_predictions p ON p.id = t.prediction_id
               WHERE p.audit AND p.served IS NOT FALSE
                 AND t.prediction_id NOT IN (SELECT prediction_id FROM log_feedback WHERE source = 'review')
               ORDER BY p.ts, p.id"""
        ).fetchall()
    return sum(review.label(ws, pid, label, REVIEWER) for pid, label in rows)
