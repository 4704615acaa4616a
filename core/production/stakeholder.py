"""The stakeholder report: one page that answers, in order, what the model decides and for whom, how good it
is, what it gains, how production is doing, the risks, and the decision pending. Every sentence is written
from the figures beside it (StakeholderReport.figures), so the words cannot contradict the tables."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from core.drivetrain import accepted, objective, optimizer, summary
from core.drivetrain.levers import Utility
from core.model import rates, registry
from core.production import deployment, prediction_log, review, rollout
from core.production.monitoring import accuracy
from core.production.monitoring import verdict as verdicts
from core.production.monitoring.queries import LogFilter, default_sources, windows
from core.workspace import store
from core.workspace.paths import Workspace

SMALL_TEST = 100  # fewer test images: the interval is wide, and the report says so
MIN_CONFUSION = 2  # a pair of classes is "confused" when at least this many test images went one way


@dataclass(frozen=True)
class Section:
    title: str
    sentences: tuple[str, ...]
    table: pd.DataFrame | None = None


@dataclass(frozen=True)
class StakeholderReport:
    workspace: str
    version: str
    generated: str
    sections: tuple[Section, ...]
    verdict: verdicts.Verdict | None
    risks: tuple[str, ...]
    pending: str
    comparison: optimizer.Comparison
    utility: Utility  # the matrix the production policy decides under (the accepted one's, else the workspace's)
    figures: dict[str, Any] = field(default_factory=dict)  # every number a sentence uses, for tests and the JSON

    @property
    def unit(self) -> str:
        return self.utility.unit


def _decision(ws: Workspace, version: str, policy_words: str) -> Section:
    goal = objective.load_objective(ws)
    goal = objective.Objective(
        *(str(x).strip().rstrip(".;") for x in (goal.statement, goal.decision, goal.affected, goal.success))
    )
    settings = deployment.load_settings(ws)
    said = [  # the analyst's own words after a colon each, as written (no sentence is built around them)
        f"The decision model {version} serves: {goal.decision or 'not stated yet'}.",
        f"Who is affected: {goal.affected or 'not stated yet'}.",
        f"The outcome wanted: {goal.statement or 'not stated yet'}.",
        f"Its policy: {policy_words}.",
    ]
    if goal.success:
        said.append(f"Success is measured by: {goal.success}.")
    said.append(f"Scope shown to users: {settings.scope}." if settings.scope else "No scope statement is shown to users yet.")
    return Section("What the model decides, and for whom", tuple(said))


def _confused(ws: Workspace, version: str) -> list[tuple[str, str, int, int]]:
    """(true, predicted, count, of) for each pair of classes the test images confuse, most often first."""
    arrays = registry.load_reference(ws, version)
    if "test_probs" not in arrays or not len(arrays["test_labels"]):
        return []
    classes = registry.read_meta(ws, version)["classes"]
    labels, predicted = arrays["test_labels"], arrays["test_probs"].argmax(1)
    k = len(classes)
    matrix = np.bincount(labels * k + predicted, minlength=k * k).reshape(k, k)
    pairs = [(classes[i], classes[j], int(matrix[i, j]), int(matrix[i].sum())) for i in range(k) for j in range(k) if i != j]
    return sorted([p for p in pairs if p[2] >= MIN_CONFUSION], key=lambda p: -p[2])[:3]


def _quality(ws: Workspace, version: str, figures: dict[str, Any]) -> Section:
    metrics = registry.read_meta(ws, version)["metrics"]
    if metrics.get("test_accuracy") is None:
        figures["test"] = None
        said = [
            f"No test images were held out: the only accuracy is {metrics['valid_accuracy']:.1%} on validation images, "
            "which chose the model and so flatter it."
        ]
        return Section("How good it is", tuple(said))
    n = int(metrics["test_images"])
    test = rates.Rate(round(metrics["test_accuracy"] * n), n)
    figures["test"] = test
    on = f"on {n:,} held-out images the model never chose anything on"
    said = [f"Test accuracy: {test.short()} ({test.ci()}) {on}." if test.enough else f"Test accuracy: {test.text()}, {on}."]
    confused = _confused(ws, version)
    figures["confused"] = confused
    if confused:
        said.append("It confuses " + "; ".join(f"{t} taken for {p} ({c} of {of} test images)" for t, p, c, of in confused) + ".")
    else:
        said.append(f"No pair of classes is confused on {MIN_CONFUSION} or more test images.")
    classes = registry.read_meta(ws, version)["classes"]
    said.append(
        f"It knows {len(classes)} classes ({', '.join(classes)}); anything else is outside its training, and it is told "
        "apart only by the out-of-domain flag."
    )
    return Section("How good it is", tuple(said))


def _gains(c: optimizer.Comparison, unit: str, measured: str) -> Section:
    mine = c.outcomes[0]
    low, high = c.intervals[0]
    automated = rates.Rate.of(mine.automation_rate, mine.images)
    said = [
        f"Expected utility: {summary.per_1000(mine.utility_per_image)} {unit} per 1,000 images (95% interval "
        f"{summary.per_1000(low)} to {summary.per_1000(high)}), automating {automated.text(0)} of decisions.",
        measured,
        summary.comparison_sentence(c, unit),
    ]
    table = summary.outcomes_frame(c.outcomes, unit, c.intervals)
    return Section("What it gains", tuple(said), table)


def _production(ws: Workspace, found: verdicts.Verdict | None, figures: dict[str, Any], counted: dict[str, int]) -> Section:
    with store.connect(ws) as con:  # one connection: the log's views and the kept labels made once for all three
        flt = LogFilter(sources=default_sources(ws, counted))
        win = windows(ws, flt, con)
        judged = not win.empty and found is not None
        found_accuracy = accuracy.accuracy(ws, flt, con) if judged else None
        waiting = review.backlog(ws, con) if judged else None
    if found is None or found_accuracy is None or waiting is None:
        figures["volume"] = 0
        return Section("How production is doing", ("Nothing is in production yet: no prediction is logged.",))
    volume = int(win["predictions"].sum())
    figures["volume"] = volume
    period = f"{str(win['window'].min())[:10]} to {str(win['window'].max())[:10]}"
    simulated = "simulation" in flt.sources and counted.get("simulation", 0) > 0
    said = [
        f"From {period}: {volume:,} predictions"
        + (" (simulated traffic: replayed test images, not real users)" if simulated else "")
        + f". Verdict: {found.status}. "
        + " ".join(found.reasons)
    ]
    figures["accuracy"] = found_accuracy.believed
    said.append(f"Accuracy of all traffic: {found_accuracy.advice()}")
    if found_accuracy.reviewed.n:
        said.append(
            f"Accuracy on reviewed hard cases: {found_accuracy.reviewed.text()}; the review queue collects referred, "
            "out-of-domain and disputed predictions, so this is lower by design."
        )
    figures["backlog"] = waiting.pending
    said.append(f"{waiting.pending:,} prediction(s) wait for review; {waiting.reviewed:,} reviewed so far.")
    active = rollout.current(ws)
    figures["rollout"] = active.stage if active else None
    said.append(
        f"Rollout: candidate {active.candidate} runs in {active.stage} beside production."
        if active
        else "Rollout: production alone, no candidate."
    )
    return Section("How production is doing", tuple(said))


def _risks(
    figures: dict[str, Any], found: verdicts.Verdict | None, c: optimizer.Comparison, unit: str, ws: Workspace
) -> list[str]:
    risks: list[str] = []
    for cause in (found.causes if found else ())[:2]:
        risks.append(f"{cause.title} ({cause.window}): {cause.words}.")
    test: rates.Rate | None = figures.get("test")
    if test is None:
        risks.append("No test set: how good the model is rests on validation images that chose it.")
    elif test.n < SMALL_TEST:
        low, high = test.interval
        risks.append(f"A small test set ({test.n} images): the true accuracy could be anywhere from {low:.0%} to {high:.0%}.")
    if not c.beats_baseline:
        risks.append(summary.comparison_sentence(c, unit))
    with store.connect(ws) as con:
        unconfirmed = con.execute("SELECT count(*) FROM log_feedback WHERE source IN ('import', 'simulation')").fetchone()[0]
    figures["unconfirmed_labels"] = int(unconfirmed)
    if unconfirmed:
        risks.append(f"{int(unconfirmed):,} label(s) in the log were imported or simulated: no human confirmed them.")
    return risks


def _pending(ws: Workspace, found: verdicts.Verdict | None, is_accepted: bool, c: optimizer.Comparison) -> str:
    active = rollout.current(ws)
    if found and found.status == verdicts.FAILING:
        return f"Production is failing: act on {found.causes[0].title.lower()} ({found.causes[0].lever})."
    if active:
        return f"Whether to expand candidate {active.candidate} from {active.stage} (the Rollout page shows its gate)."
    if not is_accepted:
        return "Accept a decision policy (Policy page): the default one is in force."
    if not c.beats_baseline:
        return f"Whether to keep this policy or switch to '{c.baseline}', which it does not beat by more than the noise."
    return "None: production runs on an accepted policy, with no candidate waiting."


def stakeholder_report(ws: Workspace, found: verdicts.Verdict | None = None) -> StakeholderReport:
    """The report for the production model (the verdict is computed unless given)."""
    v = optimizer.validation(ws)
    force = accepted.in_force(ws, v)
    utility = force.accepted.utility if force.accepted else force.utility
    seed = force.accepted.seed if force.accepted and force.accepted.seed is not None else 0
    compared = optimizer.compare(utility, force.policy, v, seed)
    counted = prediction_log.counts(ws)  # per source
    logged = sum(counted.values()) > 0
    if found is None and logged:
        found = verdicts.production_verdict(ws)[0]
    figures: dict[str, Any] = {"comparison": compared}
    sections = [
        _decision(ws, v.version, summary.describe(force.policy, utility)),
        _quality(ws, v.version, figures),
        _gains(compared, utility.unit, summary.measured_on(force.accepted, compared.outcomes[0].images, v.version, seed)),
        _production(ws, found if logged else None, figures, counted),
    ]
    risks = _risks(figures, found, compared, utility.unit, ws)
    pending = _pending(ws, found, force.accepted is not None, compared)
    return StakeholderReport(
        ws.name, v.version, str(store.now())[:16], tuple(sections), found, tuple(risks), pending, compared, utility, figures
    )
