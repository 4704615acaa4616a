"""The stakeholder report's sentences against its figures on hand-made workspaces (healthy, drifting, a policy
that loses to its baseline, two labels, out-of-domain routing), and its HTML download."""

from __future__ import annotations

import re

import numpy as np

from core.drivetrain import accepted, levers, objective, optimizer
from core.drivetrain.decisions import Policy
from core.model import rates, registry
from core.production import prediction_log, stakeholder, stakeholder_html
from core.production.monitoring import verdict
from core.workspace import store
from core.workspace.paths import Workspace
from tests.test_drift import log_day


def text(report: stakeholder.StakeholderReport) -> str:
    return " ".join([*(s for sec in report.sections for s in sec.sentences), *report.risks, report.pending])


def section(report: stakeholder.StakeholderReport, title: str) -> str:
    return " ".join(next(s for s in report.sections if s.title == title).sentences)


def test_a_healthy_workspace_reports_its_test_accuracy_gains_and_verdict_from_the_figures(prod: Workspace) -> None:
    objective.save_objective(prod, objective.Objective("Sort colours", "which bin", "the sorting line", "misses"))
    for day in range(3):
        log_day(prod, day, 60)
    report = stakeholder.stakeholder_report(prod)
    test = report.figures["test"]
    metrics = registry.read_meta(prod, report.version)["metrics"]
    assert test.n == metrics["test_images"] and test.k == round(metrics["test_accuracy"] * test.n)
    said = f"{test.short()} ({test.ci()}) on {test.n:,}" if test.enough else f"{test.text()}, on {test.n:,}"
    assert f"Test accuracy: {said} held-out images" in section(report, "How good it is")
    assert report.verdict is not None and report.verdict.status == verdict.HEALTHY
    production = section(report, "How production is doing")
    assert "180 predictions" in production and "Verdict: healthy" in production
    decides = section(report, "What the model decides, and for whom")
    assert (
        f"The decision model {report.version} serves: which bin." in decides and "Who is affected: the sorting line." in decides
    )
    c = report.comparison
    gains = section(report, "What it gains")
    automated = rates.Rate.of(c.outcomes[0].automation_rate, c.outcomes[0].images)
    assert f"automating {automated.text(0)} of decisions." in gains and ("95% CI" in gains or "too few (n" in gains)
    assert f"Measured on the {c.outcomes[0].images} validation images of model {report.version}" in gains
    assert ("beats" in gains and c.beats_baseline) or ("does not beat" in gains or "does worse" in gains)
    assert list(next(s for s in report.sections if s.title == "What it gains").table["policy"]) == [
        "this policy",
        "always follow the top class",
        "always refer",
    ]


def test_a_drifting_workspace_names_the_cause_as_a_risk(prod: Workspace) -> None:
    for day in range(2):
        log_day(prod, day, 60)
    log_day(prod, 2, 60, darken=0.3, dark_share=0.8)
    report = stakeholder.stakeholder_report(prod)
    assert report.verdict is not None and report.verdict.status in (verdict.ATTENTION, verdict.FAILING)
    assert any(r.startswith("Image conditions changed (2026-03-04): images darker") for r in report.risks)
    assert f"Verdict: {report.verdict.status}" in section(report, "How production is doing")


def test_a_policy_that_loses_to_its_baseline_says_so_and_leaves_the_decision_pending(prod: Workspace) -> None:
    v = optimizer.validation(prod)
    u = levers.default_utility(v.classes)
    accepted.accept(prod, v.version, Policy("expected_utility", refer_below=1.01, use_ood=False), u)  # refers everything
    report = stakeholder.stakeholder_report(prod)
    c = report.comparison
    assert not c.beats_baseline and c.baseline == "always follow the top class" and c.difference_interval[1] < 0
    assert "send every image to 'refer to a human'" in section(report, "What the model decides, and for whom")
    assert any("does worse than 'always follow the top class'" in r for r in report.risks)
    assert "switch to 'always follow the top class'" in report.pending


def test_two_labels_are_too_few_for_a_headline(prod: Workspace) -> None:
    log_day(prod, 0, 40)
    with store.connect(prod) as con:
        ids = [r[0] for r in con.execute("SELECT id, predicted FROM log_predictions LIMIT 2").fetchall()]
    for i in ids:
        prediction_log.add_feedback(prod, i, "red", ["red", "blue", "green"])
    report = stakeholder.stakeholder_report(prod)
    # two labels end users chose to give: no sample of the traffic, and too few for anything
    assert report.figures["accuracy"].value is None
    assert "Accuracy of all traffic: Too few audit labels" in section(report, "How production is doing")
    assert not re.search(r"\d+\.\d% \(95% CI [^)]*, n 2\)", text(report))


def test_a_policy_that_refers_out_of_domain_images_says_so(prod: Workspace) -> None:
    v = optimizer.validation(prod)
    u = levers.default_utility(v.classes)
    accepted.accept(prod, v.version, Policy("top_class", use_ood=True), u)
    report = stakeholder.stakeholder_report(prod)
    ood_action = u.actions[int(np.argmax(u.net()[len(u.classes)]))]
    assert ood_action == "refer to a human"
    words = section(report, "What the model decides, and for whom")
    assert "act on the most probable class; images flagged out of domain go to 'refer to a human'" in words
    assert "never refer" not in words


def test_the_download_is_self_contained_html_with_the_chart_date_and_version(prod: Workspace) -> None:
    log_day(prod, 0, 40)
    report = stakeholder.stakeholder_report(prod)
    page = stakeholder_html.report_html(report)
    assert page.startswith("<!doctype html>") and "<svg" in page and "@media print" in page
    assert f"Model {report.version}" in page and report.generated in page
    assert "<script" not in page and "http://" not in page.replace("http://www.w3.org/2000/svg", "")
    assert "-1000.0" not in page and "Decision pending" in page and "Risks" in page
