"""Drivetrain: utility matrix, decision policy, simulator, optimizer, accepted policies, summary, CLI."""

from __future__ import annotations

import html
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from core.drivetrain import accepted, decisions, levers, objective, optimizer, summary
from core.drivetrain.decisions import Policy
from core.drivetrain.levers import Utility
from core.errors import UserError
from core.model import outputs, registry, scoring
from core.production import prediction, prediction_log, stakeholder, stakeholder_html
from core.workspace.paths import Workspace
from tests.helpers import cli, colour_image

ROOT = Path(__file__).resolve().parents[1]

# Two classes; a missed "bad" costs 100, a false alarm 10, a review 2.
TOY = Utility(
    actions=("act on good", "act on bad", "refer to a human"),
    costs=(0.0, 0.0, 2.0),
    rows=("good", "bad", levers.OUT_OF_DOMAIN),
    payoff=((10.0, -10.0, 0.0), (-100.0, 10.0, 0.0), (-50.0, -50.0, 0.0)),
)


def logits_for(p_good: float) -> np.ndarray:
    return np.log(np.array([[p_good, 1.0 - p_good]]))


@pytest.mark.parametrize(
    ("p_good", "expected"),
    [
        (0.99, "act on good"),  # EU: 9.9 - 1.0 = 8.9 | -9.9 + 0.1 = -9.8 | -2
        (0.70, "refer to a human"),  # EU: 7 - 30 = -23 | -7 + 3 = -4 | -2
        (0.10, "act on bad"),  # EU: 1 - 90 = -89 | -1 + 9 = 8 | -2
    ],
    ids=["sure-good", "doubt-refers", "likely-bad"],
)
def test_expected_utility_picks_the_hand_computed_action(p_good: float, expected: str) -> None:
    chosen = decisions.decide(TOY, Policy(), logits_for(p_good), np.array([False]))
    assert TOY.actions[chosen[0]] == expected


def test_top_class_ignores_costs_and_referral() -> None:
    chosen = decisions.decide(TOY, Policy("top_class", use_ood=False), logits_for(0.7), np.array([False]))
    assert TOY.actions[chosen[0]] == "act on good"


def test_top_class_breaks_a_tie_for_the_class_own_action() -> None:
    tied = Utility(
        ("act on a", "act on b", "refer to a human"),
        (0.0, 0.0, 2.0),
        ("a", "b", levers.OUT_OF_DOMAIN),
        ((0.0, -10.0, 0.0), (0.0, 0.0, 0.0), (0.0, 0.0, 0.0)),  # for b, acting on a costs nothing either
    )
    chosen = decisions.decide(tied, Policy("top_class", use_ood=False), np.log(np.array([[0.2, 0.8]])), np.array([False]))
    assert tied.actions[chosen[0]] == "act on b"
    out = decisions.policy_outcome(
        tied, Policy("top_class", use_ood=False), np.log(np.array([[0.9, 0.1]])), np.array([1]), np.array([False])
    )
    assert out.automated_error_rate == 0.0  # "act on a" for a b is as good as the best action: not an error


def test_low_confidence_refers_and_ood_takes_the_ood_rows_best_action() -> None:
    assert (
        TOY.actions[decisions.decide(TOY, Policy(refer_below=0.995), logits_for(0.99), np.array([False]))[0]]
        == "refer to a human"
    )
    assert TOY.actions[decisions.decide(TOY, Policy(), logits_for(0.99), np.array([True]))[0]] == "refer to a human"
    assert TOY.actions[decisions.decide(TOY, Policy(use_ood=False), logits_for(0.99), np.array([True]))[0]] == "act on good"


def test_temperature_changes_the_decision() -> None:
    logits = logits_for(0.9)  # EU at T=1: 9 - 10 = -1 for good, -9 + 1 = -8 for bad, -2 refer -> act on good
    assert TOY.actions[decisions.decide(TOY, Policy(), logits, np.array([False]))[0]] == "act on good"
    softened = decisions.decide(TOY, Policy(temperature=3.0), logits, np.array([False]))  # p_good ~0.68 -> refer
    assert TOY.actions[softened[0]] == "refer to a human"


def test_simulator_adds_up_by_hand() -> None:
    logits = np.vstack([logits_for(0.99), logits_for(0.7), logits_for(0.1), logits_for(0.99)])
    labels = np.array([0, 1, 1, 1])  # the last: a confident miss of a bad one
    out = decisions.policy_outcome(TOY, Policy(), logits, labels, np.zeros(4, bool))
    # act on good (right) +10; refer -2; act on bad (right) +10; act on good (wrong) -100
    assert out.utility_total == pytest.approx(-82.0) and out.utility_per_image == pytest.approx(-20.5)
    assert out.automation_rate == 0.75 and out.automated_error_rate == pytest.approx(1 / 3)
    assert out.table.loc["bad", "refer to a human"] == 1 and out.table.values.sum() == 4
    shown = summary.outcomes_frame([out], "points").iloc[0]  # four images: rates too few for a headline
    assert shown["automated (95% CI, n)"] == "too few (n 4)" and shown["errors among automated (95% CI, n)"] == "too few (n 3)"
    many = decisions.policy_outcome(TOY, Policy(), np.vstack([logits] * 10), np.tile(labels, 10), np.zeros(40, bool))
    shown = summary.outcomes_frame([many], "points").iloc[0]
    assert shown["automated (95% CI, n)"] == "75.0% (95% CI 59.8-85.8%, n 40)"
    assert shown["errors among automated (95% CI, n)"] == "33.3% (95% CI 19.2-51.2%, n 30)"


TOY_PAYOFF = ((10.0, -20.0, -20.0, 0.0), (-20.0, 10.0, -20.0, 0.0), (-20.0, -20.0, 10.0, 0.0), (-5.0, -5.0, -5.0, 5.0))


def test_fitted_temperature_recovers_the_truth() -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 4, (4000, 3))
    labels = np.array([rng.choice(3, p=p) for p in outputs.softmax(logits, 2.0)])
    assert optimizer.fit_temperature(logits, labels) == pytest.approx(2.0, rel=0.1)


@pytest.mark.parametrize("seed", range(6))
def test_the_optimizer_is_never_worse_than_top_class_on_its_fit_half(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n, k = 60, 3
    labels = rng.integers(0, k, n)
    logits = rng.normal(0, 1, (n, k)) + 2.5 * np.eye(k)[labels] * rng.uniform(0, 1.5, (n, 1))
    payoff = rng.uniform(-100, 20, (k + 1, k + 1))
    u = Utility(
        tuple(f"a{i}" for i in range(k)) + ("refer",),
        (0.0,) * k + (3.0,),
        ("x", "y", "z", "ood"),
        tuple(map(tuple, payoff)),
        "refer",
    )
    v = optimizer.Validation("v1", ("x", "y", "z"), logits, labels, rng.random(n) < 0.05)
    search = optimizer.optimize(u, v, seed=seed)
    chosen, top = search.fit[0], search.fit[1]
    assert chosen.utility_per_image >= top.utility_per_image - 1e-9
    assert search.fit_images + search.report_images == n
    assert search.interval[0] <= search.report[0].utility_per_image <= search.interval[1]


@pytest.mark.parametrize("seed", range(4))
def test_the_report_half_cannot_change_what_the_optimizer_chooses(seed: int) -> None:
    """Everything, the temperature included, is chosen on the fit half: rewrite the report half and the
    choice stays the same; only the reported figures move."""
    rng = np.random.default_rng(seed)
    n, k = 80, 3
    labels = rng.integers(0, k, n)
    logits = rng.normal(0, 1, (n, k)) + 3.0 * np.eye(k)[labels]
    u = Utility(("a0", "a1", "a2", "refer"), (0.0, 0.0, 0.0, 2.0), ("x", "y", "z", "ood"), TOY_PAYOFF, "refer")
    ids = tuple(f"i{j}" for j in range(n))
    v = optimizer.Validation("v1", ("x", "y", "z"), logits, labels, np.zeros(n, bool), ids)
    first = optimizer.optimize(u, v, seed=seed)
    _, report = optimizer.split_halves(labels, seed)
    other = logits.copy()
    other[report] = rng.normal(0, 5, (len(report), k)) * 4.0  # overconfident noise: a very different temperature would fit
    second = optimizer.optimize(u, optimizer.Validation("v1", v.classes, other, labels, v.ood, ids), seed=seed)
    assert second.policy == first.policy and second.temperature_used == first.temperature_used
    assert second.temperature_fitted == first.temperature_fitted
    assert [decisions.outcome_dict(o) for o in second.fit] == [decisions.outcome_dict(o) for o in first.fit]
    assert first.report_ids == tuple(ids[i] for i in report) and first.seed == seed


def matrix(u: Utility) -> tuple[pd.DataFrame, pd.DataFrame]:
    return levers.actions_frame(u), levers.matrix_frame(u).astype(object)


def test_tables_round_trip_into_a_utility() -> None:
    actions, payoffs = matrix(TOY)
    assert levers.utility_from_tables(actions, payoffs, "refer to a human", ["good", "bad"]) == TOY


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda a, m: m.__setitem__("act on bad", [10.0, None, 0.0]), "missing"),
        (lambda a, m: m.__setitem__("act on bad", [10.0, float("nan"), 0.0]), "missing"),
        (lambda a, m: m.__setitem__("act on bad", [10.0, "lots", 0.0]), "enter a number"),
        (lambda a, m: a.__setitem__("cost", [0.0, "two", 2.0]), "cost of 'act on bad'"),
        (lambda a, m: a.__setitem__("action", ["act on good", "act on good", "refer to a human"]), "must differ"),
        (lambda a, m: a.__setitem__("action", ["act on good", "", "refer to a human"]), "needs a name"),
    ],
    ids=["empty-cell", "nan-cell", "text-cell", "text-cost", "duplicate-action", "unnamed-action"],
)
def test_bad_utility_tables_get_a_message(edit: object, message: str) -> None:
    actions, payoffs = matrix(TOY)
    edit(actions, payoffs)
    with pytest.raises(UserError, match=message):
        levers.utility_from_tables(actions, payoffs, "refer to a human", ["good", "bad"])


def test_unsaved_changes_are_told_apart_from_the_saved_matrix() -> None:
    actions, payoffs = matrix(TOY)
    assert not levers.unsaved(TOY, actions, payoffs, "refer to a human", ["good", "bad"])
    payoffs.loc["good", "act on good"] = 99.0
    assert levers.unsaved(TOY, actions, payoffs, "refer to a human", ["good", "bad"])
    payoffs.loc["good", "act on good"] = None  # incomplete: unsaved, and saving says which cell
    assert levers.unsaved(TOY, actions, payoffs, "refer to a human", ["good", "bad"])


def test_a_referral_action_that_is_not_an_action() -> None:
    actions, payoffs = matrix(TOY)
    with pytest.raises(UserError, match="referral action"):
        levers.utility_from_tables(actions, payoffs, "call the police", ["good", "bad"])


def test_saved_utility_and_objective_come_back(prod: Workspace) -> None:
    classes = ["blue", "green", "red"]
    u, saved = levers.load_utility(prod, classes)
    assert not saved and u.actions[-1] == levers.REFER and u.rows[-1] == levers.OUT_OF_DOMAIN
    custom = Utility(u.actions, u.costs, u.rows, tuple((1.0,) * 4 for _ in range(4)), u.refer, "dollars")
    levers.save_utility(prod, custom)
    assert levers.load_utility(prod, classes) == (custom, True)
    assert levers.load_utility(prod, ["blue", "red"])[1] is False  # classes changed: back to defaults
    objective.save_objective(prod, objective.Objective("a", "b", "c", "d"))
    assert objective.load_objective(prod).complete


def always_refer(prod: Workspace) -> str:
    v = optimizer.validation(prod)
    u = levers.load_utility(prod, v.classes)[0]
    return accepted.accept(prod, v.version, Policy(refer_below=1.01), u)


def test_an_accepted_policy_decides_every_prediction_path(prod: Workspace, tmp_path: Path) -> None:
    version = registry.production_version(prod)
    assert accepted.active(prod, version) is None and accepted.active_decider(prod, version) is None
    preds, _ = prediction.predict_images(scoring.load_predictor(prod), [("x.png", colour_image(0, 1))])
    assert preds[0].action == preds[0].label == "red"  # no policy: the label
    policy_id = always_refer(prod)
    found = accepted.active(prod, version)
    assert found is not None and found.policy_id == policy_id and found.policy == Policy(refer_below=1.01)
    decide = accepted.active_decider(prod, version)
    preds, _ = prediction.predict_images(scoring.load_predictor(prod), [("x.png", colour_image(0, 1))], decide=decide)
    assert preds[0].action == levers.REFER and preds[0].label == "red"
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "x.png").write_bytes(colour_image(0, 1))
    done = cli("predict", "--workspace", "prod", str(tmp_path / "in"), "--json")
    assert json.loads(done.stdout)["predictions"][0]["action"] == levers.REFER
    assert prediction_log.recent(prod, 1)["action"].iloc[0] == levers.REFER


def test_the_report_download_is_standalone_and_escaped(prod: Workspace) -> None:
    objective.save_objective(prod, objective.Objective("Warn <hikers>", "alert", "hikers", "no misses"))
    page = stakeholder_html.report_html(stakeholder.stakeholder_report(prod))
    assert page.startswith("<!doctype html>") and "Warn &lt;hikers&gt;" in page
    assert "per 1,000 images" in page and "refer to a human" in page and "<script" not in page


def test_cli_policy_optimize_and_accept(prod: Workspace) -> None:
    run = cli("policy", "--workspace", "prod", "--accept", "--json")
    assert run.returncode == 0, run.stderr
    data = json.loads(run.stdout)
    assert {"validation", "optimized", "accepted"} <= set(data)
    assert [o["policy"] for o in data["optimized"]["held_out"]] == ["this policy", "always follow the top class", "always refer"]
    found = accepted.active(prod, data["version"])
    assert found is not None and found.policy_id == data["accepted"]
    assert accepted.in_force(prod, optimizer.validation(prod)).policy_id == data["accepted"]


def test_cli_policy_without_a_production_model(ws: Workspace) -> None:
    run = cli("policy", "--workspace", "test")
    assert run.returncode == 2 and "production model" in run.stderr


def test_the_policy_in_force_goes_stale_when_the_matrix_changes(prod: Workspace) -> None:
    v = optimizer.validation(prod)
    assert accepted.in_force(prod, v) == accepted.PolicyInForce(Policy(), levers.load_utility(prod, v.classes)[0], None)
    policy_id = always_refer(prod)
    force = accepted.in_force(prod, v)
    assert force.policy_id == policy_id and force.policy == Policy(refer_below=1.01) and not force.stale
    u = force.utility
    levers.save_utility(prod, levers.Utility(u.actions, tuple(c + 1 for c in u.costs), u.rows, u.payoff, u.refer, u.unit))
    assert accepted.in_force(prod, v).stale


def test_the_decision_summary_uses_the_matrix_the_policy_was_chosen_under(prod: Workspace) -> None:
    always_refer(prod)
    chosen_under = accepted.active(prod, registry.production_version(prod)).utility
    v = optimizer.validation(prod)
    levers.save_utility(
        prod,
        levers.Utility(
            chosen_under.actions, chosen_under.costs, chosen_under.rows, chosen_under.payoff, chosen_under.refer, "euros"
        ),
    )
    found = stakeholder.stakeholder_report(prod)
    assert found.utility == chosen_under and found.unit == chosen_under.unit
    _, report = optimizer.split_halves(v.labels)
    outcome = found.comparison.outcomes[0]
    assert outcome.images == len(report) and outcome.automation_rate == 0.0
    page = stakeholder_html.report_html(found)
    assert "every image to &#x27;refer to a human&#x27;" in page and "euros" not in page


def test_the_summary_reports_on_the_half_the_accepted_policy_was_not_fitted_on(prod: Workspace) -> None:
    run = cli("policy", "--workspace", "prod", "--accept", "--seed", "3", "--json")
    assert run.returncode == 0, run.stderr
    found = accepted.active(prod, registry.production_version(prod))
    v = optimizer.validation(prod)
    _, report = optimizer.split_halves(v.labels, 3)
    assert found.seed == 3 and found.report_ids == tuple(v.ids[i] for i in report)
    assert set(found.report_ids) <= set(registry.read_meta(prod, v.version)["valid_ids"])
    shown = stakeholder.stakeholder_report(prod)
    gains = next(s for s in shown.sections if s.title == "What it gains")
    measured = next(s for s in gains.sentences if "(seed 3)" in s)
    assert shown.comparison.outcomes[0].images == len(report) and "did not fit on" in measured
    assert html.escape(measured) in stakeholder_html.report_html(shown)


def test_a_policy_accepted_without_its_split_says_so(prod: Workspace) -> None:
    always_refer(prod)  # accepted directly, as policies were before the split was recorded
    shown = stakeholder.stakeholder_report(prod)
    assert any("may have seen these images" in s for section in shown.sections for s in section.sentences)


def test_two_sessions_editing_the_utility_keep_both_changes(ws: Workspace) -> None:
    """Each session saves the matrix it edited from the same start: the second save merges cell by cell, so
    neither change is lost; the same cell changed both ways is refused with what to do, and nothing is saved."""
    from dataclasses import replace

    from core.drivetrain import levers

    start = levers.default_utility(["cat", "dog"])
    levers.save_utility(ws, start)

    def with_cell(u: levers.Utility, r: int, a: int, value: float) -> levers.Utility:
        payoff = [list(row) for row in u.payoff]
        payoff[r][a] = value
        return replace(u, payoff=tuple(tuple(row) for row in payoff))

    first = with_cell(start, 0, 0, 99.0)
    second = replace(with_cell(start, 1, 1, -77.0), unit="dollars", costs=(0.0, 0.0, 5.0))
    levers.save_utility(ws, first, base=start)
    saved = levers.save_utility(ws, second, base=start)
    assert levers.load_utility(ws, ["cat", "dog"])[0] == saved
    assert saved.payoff[0][0] == 99.0 and saved.payoff[1][1] == -77.0 and saved.unit == "dollars" and saved.costs[2] == 5.0
    with pytest.raises(UserError, match=r"The payoff of 'act on cat' when the truth is 'cat' was changed in another session"):
        levers.save_utility(ws, with_cell(start, 0, 0, -1.0), base=start)
    assert levers.load_utility(ws, ["cat", "dog"])[0] == saved  # the refused save changed nothing
    added = replace(saved, actions=(*saved.actions, "call a ranger"), costs=(*saved.costs, 50.0),
                    payoff=tuple((*row, 1.0) for row in saved.payoff))  # fmt: skip
    levers.save_utility(ws, added, base=saved)
    assert levers.save_utility(ws, replace(saved, unit="euros"), base=saved).actions[-1] == "call a ranger"
