"""Judgment on production: Wilson rates with "too few (n)", practical-significance floors, causes that group the
tests moving together, the one verdict, "none of these" on a flagged image counted right, repeats counted once,
simulated traffic kept apart from real traffic."""

from __future__ import annotations

import math
from dataclasses import replace
from datetime import timedelta

import numpy as np
import pandas as pd
import pytest

from core.model import rates, scoring
from core.production import prediction, prediction_log
from core.production.monitoring import causes, drift, floors, queries, stats, verdict
from core.production.monitoring.reference import DriftReference
from core.workspace import store
from core.workspace.paths import Workspace
from tests.helpers import edit_log
from tests.test_drift import START, colour, log_day


@pytest.mark.parametrize(
    ("k", "n", "low", "high"),
    [(0, 10, 0.0, 0.2775), (5, 10, 0.2366, 0.7634), (10, 10, 0.7225, 1.0), (86, 90, 0.8912, 0.9826)],
    ids=["none", "half", "all", "most"],
)
def test_wilson_interval_against_hand_computed_values(k: int, n: int, low: float, high: float) -> None:
    assert rates.wilson(k, n) == pytest.approx((low, high), abs=1e-4)


def test_a_rate_from_too_few_items_says_so_instead_of_a_headline() -> None:
    assert rates.Rate(0, 2).text() == "too few (n 2)" and rates.Rate(0, 2).short() == "too few (n 2)"
    assert rates.Rate(43, 45).text() == "95.6% (95% CI 85.2-98.8%, n 45)"
    assert math.isnan(rates.Rate(0, 0).value)


def _rate_metrics() -> None:
    import streamlit as st

    from core.model.rates import Rate
    from ui.common import rate_metric

    a, b, c = st.columns(3)
    rate_metric(a, "Large", Rate(95, 100))
    rate_metric(b, "Small", Rate(2, 2))
    rate_metric(c, "Empty", Rate(0, 0), "no test images")


def test_a_rate_on_a_page_carries_its_interval_and_n_or_says_too_few() -> None:
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_function(_rate_metrics).run()
    assert not at.exception
    large, small, empty = at.metric
    assert large.value == "95.0%" and large.delta == "95% CI 88.8-97.8%, n 100"
    assert small.value == "too few (n 2)" and not small.delta
    assert empty.value == "no test images"


def reference(rng: np.random.Generator, n: int = 300) -> DriftReference:
    """A reference like a model's: three classes, confident, few OOD, real-looking property spreads."""
    labels = rng.integers(3, size=n)
    props = pd.DataFrame(
        {
            "width": rng.normal(400, 60, n), "height": rng.normal(300, 40, n), "brightness": rng.normal(0.5, 0.12, n),
            "contrast": rng.normal(0.2, 0.05, n), "saturation": rng.normal(0.3, 0.08, n),
            "sharpness": rng.lognormal(3, 0.3, n),
        }
    )  # fmt: skip
    return DriftReference(
        "v1", ("a", "b", "c"), labels, labels.copy(), rng.beta(8, 1, n), rng.normal(-8, 1, n), rng.normal(0, 1, (n, 8)),
        rng.random(n) < 0.05, props.assign(aspect=props["width"] / props["height"]), np.full(3, 1 / 3), n,
    )  # fmt: skip


def judged(ref: DriftReference, tests: list[stats.DriftTest], size: int) -> list[stats.DriftTest]:
    computed = floors.reference_floors(ref, size)
    return [replace(t, floor=floors.floor_for(t.metric, computed, {})) for t in stats.benjamini_hochberg(tests)]


def test_a_one_percent_sharpness_change_in_a_large_window_is_detected_but_too_small_to_matter() -> None:
    rng = np.random.default_rng(0)
    ref = reference(rng, 100_000)
    window = np.concatenate([ref.properties["sharpness"].to_numpy()] * 2) * 1.01  # 200,000 images, all 1% sharper
    tests = judged(ref, [stats.ks_shift("sharpness", ref.properties["sharpness"].to_numpy(), window)], len(window))
    assert tests[0].significant(drift.ALERT_Q) and not tests[0].matters(drift.ALERT_Q)
    assert 0 < abs(tests[0].effect) < tests[0].floor


def test_a_thirty_percent_darker_share_alerts() -> None:
    rng = np.random.default_rng(1)
    ref = reference(rng)
    window = rng.normal(0.5, 0.12, 200)
    window[:60] *= 0.3  # 30% of the images much darker
    brightness = ref.properties["brightness"].to_numpy()
    tests = judged(
        ref, [stats.ks_shift("brightness", brightness, window), stats.tail_test("brightness", brightness, window)], 200
    )
    tails = next(t for t in tests if t.metric == "brightness_tails")
    assert tails.matters(drift.ALERT_Q) and abs(tails.effect) > 0.25 > tails.floor


def test_a_floor_set_by_hand_wins_and_a_negative_one_goes_back_to_the_default(ws: Workspace) -> None:
    store.init_db(ws)
    floors.save_floors(ws, {"sharpness": 0.5, "brightness_tails": 0.1})
    assert floors.chosen_floors(ws) == {"sharpness": 0.5, "brightness_tails": 0.1}
    assert floors.floor_for("sharpness", {"sharpness": 0.2}, floors.chosen_floors(ws)) == 0.5
    floors.save_floors(ws, {"sharpness": -1})
    assert floors.floor_for("sharpness", {"sharpness": 0.2}, floors.chosen_floors(ws)) == 0.2


def moved_test(
    metric: str, effect: float, value: float = 0.0, reference: float = 0.0, subject: str = "", p: float = 1e-6
) -> stats.DriftTest:
    return stats.DriftTest(metric, 1.0, p, effect, value, reference, 100, 300, f"{metric} moved", p, subject, 0.01)


def window(
    label: str, tests: list[stats.DriftTest], images: int = 100, ood: float = 0.04, fb: tuple[int, int] = (0, 0)
) -> drift.WindowDrift:
    return drift.WindowDrift(label, images, True, tuple(tests), None, images, ood, fb[1], fb[0])


def report_of(windows: list[drift.WindowDrift]) -> drift.DriftReport:
    alerts = tuple(
        drift.DriftAlert(w.window, t.metric, t.words, t.effect, t.p_value, t.adjusted_p, t.n, (), drift.LEVERS[t.metric], False)
        for w in windows for t in w.tests if t.matters(drift.ALERT_Q)
    )  # fmt: skip
    return drift.DriftReport("v1", tuple(windows), alerts, 0)


QUIET = [moved_test("brightness", 0.001, p=0.5), moved_test("ood_rate", 0.0, 0.04, 0.04, p=0.9)]


def test_out_of_domain_inputs_group_every_test_they_move_under_one_cause_in_words() -> None:
    moved = [
        moved_test("ood_rate", 0.29, 0.33, 0.04),
        moved_test("brightness", 0.8),
        moved_test("contrast", -0.9),
        moved_test("sharpness_tails", 0.3, subject="high"),
        moved_test("energy", 1.2),
        moved_test("embedding", 0.05),
        moved_test("confidence", -0.7),
        moved_test("class_mix", 0.2, subject="a"),
        moved_test("feedback_accuracy", -0.45, 0.5, 0.95),
    ]
    w = window("2026-03-09", moved, images=120, ood=0.33, fb=(6, 12))
    found = causes.window_causes(w, list(report_of([w]).alerts), drift.ALERT_Q)
    assert [c.kind for c in found] == ["out_of_domain"] and len(found[0].tests) == len(moved)
    words = found[0].words
    assert "33% of the window's images (40 of 120)" in words and "images brighter, flatter and sharper" in words
    assert "accuracy from labels 50% (6 of 12) vs 95% on validation" in words and "less confident" in words


def test_a_class_mix_change_alone_is_its_own_cause() -> None:
    w = window("2026-03-09", [moved_test("class_share", 0.3, 0.63, 0.33, subject="a"), *QUIET])
    found = causes.window_causes(w, list(report_of([w]).alerts), drift.ALERT_Q)
    assert [(c.kind, c.words) for c in found] == [("class_mix", "'a' is 63% of images vs 33% expected")]


@pytest.mark.parametrize(
    ("windows", "status", "said"),
    [
        (
            [window(f"d{i}", QUIET) for i in range(4)],
            verdict.HEALTHY,
            "No change that matters in the last 3 window(s) judged (300",
        ),
        (
            [window("d0", QUIET), window("d1", QUIET), window("d2", [moved_test("brightness_tails", -0.2, subject="low")])],
            verdict.ATTENTION,
            "d2: image conditions changed: images darker.",
        ),
        (
            [window("d0", QUIET), window("d1", QUIET), window("d2", [moved_test("ood_rate", 0.29, 0.33, 0.04)], ood=0.33)],
            verdict.FAILING,
            "d2: out-of-domain inputs: 33% of the window's images (33 of 100) look like none of the classes.",
        ),
        (
            [window("d0", QUIET), window("d1", [moved_test("feedback_accuracy", -0.3, 0.65, 0.95)], fb=(26, 40))],
            verdict.FAILING,
            "d1: accuracy from labels fell: accuracy from labels 65% (26 of 40) vs 95% on validation.",
        ),
        (
            [window(f"d{i}", [moved_test("class_share", 0.2, 0.53, 0.33, subject="a")]) for i in range(3)],
            verdict.FAILING,
            "d2: class mix changed (in each of the last 3 windows): 'a' is 53% of images vs 33% expected.",
        ),
        ([replace(window("d0", []), judged=False, images=4)], verdict.NOT_JUDGED, "Too few distinct images"),
        ([], verdict.NOT_JUDGED, "Nothing is logged"),
    ],
    ids=["healthy", "drift", "out-of-domain", "two-labels-cannot-but-forty-can", "persistent", "too-few", "empty"],
)
def test_the_verdict_and_the_reasons_that_decide_it(windows: list[drift.WindowDrift], status: str, said: str) -> None:
    found = verdict.verdict(report_of(windows))
    assert found.status == status
    assert said in " ".join(found.reasons), found.reasons


def test_none_of_these_on_an_image_the_model_flagged_counts_as_right(prod: Workspace) -> None:
    log_day(prod, 0, 6)
    with store.connect(prod) as con:
        ids = [r[0] for r in con.execute("SELECT id FROM log_predictions ORDER BY ts").fetchall()]
    assert edit_log(prod, {"ood": f"id = '{ids[0]}'"}) == 6  # one of them flagged, by hand
    with store.connect(prod) as con:
        predicted = con.execute("SELECT predicted FROM log_predictions WHERE id = ?", [ids[2]]).fetchone()[0]
    classes = ["red", "blue", "green"]
    prediction_log.add_feedback(prod, ids[0], prediction_log.NONE_OF_THESE, classes)  # flagged: the model was right
    prediction_log.add_feedback(prod, ids[1], prediction_log.NONE_OF_THESE, classes)  # not flagged: an error
    prediction_log.add_feedback(prod, ids[2], predicted, classes, source="review")
    row = queries.windows(prod).iloc[0]
    # the two labels given in use: one right ("none of these" on the flagged image), one wrong; the reviewer's label
    # is counted apart (the queue chooses what reviewers see), and agrees
    assert (int(row["feedback"]), int(row["feedback_correct"])) == (2, 1)
    assert row["review_agreement"] == 1.0 and int(row["reviews"]) == 1


def test_an_image_sent_again_and_again_is_one_image_and_too_few_to_judge(prod: Workspace) -> None:
    predictor = scoring.load_predictor(prod)
    preds, _ = prediction.predict_images(predictor, [(f"same{i}.png", colour(0, 7)) for i in range(40)])
    prediction_log.log_predictions(prod, preds, "app", predictor.version, [START + timedelta(minutes=i) for i in range(40)])
    report = drift.drift_report(prod)
    assert [(w.n, w.images, w.judged, w.repeats) for w in report.windows] == [(40, 1, False, True)]
    assert verdict.verdict(report).status == verdict.NOT_JUDGED


def test_simulated_traffic_is_left_out_by_default_once_real_predictions_exist(prod: Workspace) -> None:
    log_day(prod, 0, 5)  # simulation
    assert queries.default_sources(prod) == prediction_log.SOURCES
    predictor = scoring.load_predictor(prod)
    preds, _ = prediction.predict_images(predictor, [("real.png", colour(1, 3))])
    prediction_log.log_predictions(prod, preds, "app", predictor.version)
    assert "simulation" not in queries.default_sources(prod)
    assert int(queries.windows(prod, queries.LogFilter(sources=queries.default_sources(prod)))["predictions"].sum()) == 1


def test_the_time_axis_shows_dates_even_for_one_window() -> None:
    from core.production.monitoring import charts

    one = pd.DataFrame(
        {
            "window": [pd.Timestamp("2026-12-01")], "predictions": [5], "confidence_p10": [0.5], "confidence_p50": [0.7],
            "confidence_p90": [0.9], "ood_rate": [0.0], "feedback": [0], "feedback_accuracy": [None],
        }
    )  # fmt: skip
    fig = charts.overview_figure(one, None, "day")
    assert fig.layout.xaxis.tickformat == "%b %d"
    low, high = (pd.Timestamp(x) for x in fig.layout.xaxis.range)
    assert (low, high) == (pd.Timestamp("2026-11-30"), pd.Timestamp("2026-12-02"))
    assert charts.overview_figure(one, None, "hour").layout.xaxis.tickformat == "%b %d %H:%M"


def test_a_verdict_with_no_prediction_by_the_production_model_says_whose_predictions_there_are() -> None:
    empty = drift.DriftReport("v2", (), (), excluded=12)
    found = verdict.verdict(empty)
    assert found.status == verdict.NOT_JUDGED
    assert found.reasons == (
        "No prediction by the production model v2 in these sources yet: the 12 there were made by other versions.",
    )
    assert verdict.verdict(drift.DriftReport("v2", (), (), excluded=0)).reasons == ("Nothing is logged for these sources yet.",)
