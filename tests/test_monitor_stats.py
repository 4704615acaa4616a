"""The monitoring statistics on synthetic numbers with known answers."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import kstest

from core.production.monitoring import stats


def test_identical_samples_do_not_move_and_a_shift_is_found_with_its_size_and_direction() -> None:
    rng = np.random.default_rng(0)
    ref = rng.normal(0.46, 0.1, 1000)
    same = stats.ks_shift("brightness", ref, ref.copy())
    assert same.p_value == pytest.approx(1.0) and same.effect == 0.0
    darker = stats.ks_shift("brightness", ref, rng.normal(0.26, 0.1, 200))
    assert darker.p_value < 1e-10
    assert darker.effect == pytest.approx(-2.0, abs=0.25)  # 0.2 lower, in reference SDs of 0.1
    shown = f"images {1 - darker.value / darker.reference:.0%} darker than the reference: median brightness"
    assert darker.words.startswith(shown) and 0.35 <= 1 - darker.value / darker.reference <= 0.5
    blur = stats.ks_shift("sharpness", ref, ref * 0.5)
    assert "blurrier" in blur.words and "50%" in blur.words


def test_ks_p_values_are_uniform_under_no_drift() -> None:
    rng = np.random.default_rng(1)
    p = np.array([stats.ks_shift("x", rng.normal(size=300), rng.normal(size=200)).p_value for _ in range(300)])
    assert 0.0 <= np.mean(p < 0.05) <= 0.09 and 0.4 <= np.mean(p < 0.5) <= 0.6


def test_class_mix() -> None:
    same = stats.class_mix_test(np.array([50, 30, 20]), np.array([100, 60, 40]), ["a", "b", "c"])
    assert same.p_value == pytest.approx(1.0) and same.effect == pytest.approx(0.0)
    moved = stats.class_mix_test(np.array([50, 30, 20]), np.array([20, 30, 150]), ["a", "b", "c"])
    assert moved.p_value < 1e-10
    assert moved.effect == pytest.approx(0.5 * (abs(0.5 - 0.1) + abs(0.3 - 0.15) + abs(0.2 - 0.75)))
    assert "'c' is 75% of predictions vs 20%" in moved.words
    empty_class = stats.class_mix_test(np.array([10, 0]), np.array([20, 0]), ["a", "b"])
    assert empty_class.p_value == 1.0


def test_rates_against_the_reference_counts() -> None:
    assert stats.rate_test("ood_rate", 5, 100, 10, 200, "greater").p_value > 0.3
    high = stats.rate_test("ood_rate", 5, 100, 60, 200, "greater")
    assert high.p_value < 1e-5 and high.value == pytest.approx(0.3) and "30.0% vs 5.0%" in high.words
    low = stats.rate_test("feedback_accuracy", 95, 100, 30, 50, "less")
    assert low.p_value < 1e-5 and low.effect == pytest.approx(0.6 - 0.95)
    # a reference of 100 images is a sample: the same window rate against a constant 5% would look worse
    assert stats.rate_test("ood_rate", 5, 100, 18, 200, "greater").p_value > 0.05


def test_mmd_finds_a_moved_embedding_and_its_p_is_uniform_under_no_drift() -> None:
    rng = np.random.default_rng(2)
    moved = stats.mmd_test(rng.normal(size=(300, 16)), rng.normal(size=(200, 16)) + np.r_[1.0, np.zeros(15)])
    assert moved.p_value < 1e-4  # deep enough to alert alone among the ~660 tests of a 30-window report
    slight = stats.mmd_test(rng.normal(size=(300, 16)), rng.normal(size=(200, 16)) + np.r_[0.3, np.zeros(15)])
    assert 1e-12 < slight.p_value < 0.05  # a small shift: a p that says so, not one pinned at a floor
    p = np.array([stats.mmd_test(rng.normal(size=(300, 16)), rng.normal(size=(200, 16)), seed=s).p_value for s in range(300)])
    # uniform under no drift: a rate at each level within binomial error, and no sign of non-uniformity overall
    for level in (0.01, 0.05, 0.2, 0.5):
        assert abs(np.mean(p < level) - level) <= 3 * np.sqrt(level * (1 - level) / len(p)) + 1 / len(p), level
    assert kstest(p, "uniform").pvalue > 0.001


def test_the_weighted_chi_square_tail_is_exact_for_one_weight_and_close_for_many() -> None:
    from scipy.stats import chi2

    assert stats.quadratic_form_sf(3.0, np.array([0.5])) == pytest.approx(chi2.sf(6.0, 1))
    assert stats.quadratic_form_sf(30.0, np.full(10, 2.0)) == pytest.approx(chi2.sf(15.0, 10))
    w = np.array([3.0, 1.0, 0.5, 0.1])  # against a simulation of the sum itself
    draws = (np.random.default_rng(0).normal(size=(400_000, 4)) ** 2) @ w
    for q in (5.0, 15.0, 25.0):
        assert stats.quadratic_form_sf(q, w) == pytest.approx(np.mean(draws >= q), rel=0.1, abs=2e-4)


def test_the_atc_interval_holds_its_estimate_and_narrows_with_more_images() -> None:
    rng = np.random.default_rng(4)
    ref_conf = rng.uniform(0.3, 1.0, 300)
    ref_ok = rng.random(300) < ref_conf  # calibrated: right as often as it is sure
    small = stats.atc_interval(ref_conf, ref_ok, rng.uniform(0.3, 1.0, 40))
    large = stats.atc_interval(ref_conf, ref_ok, rng.uniform(0.3, 1.0, 2000))
    for e in (small, large):
        assert e.low <= e.value <= e.high
    assert large.high - large.low < small.high - small.low
    assert large.low < np.mean(ref_conf) < large.high  # the same traffic: the band holds the reference's accuracy


def test_benjamini_hochberg_by_hand() -> None:
    tests = [stats.DriftTest("m", 0, p, 0, 0, 0, 1, 1, "") for p in (0.01, 0.04, 0.03, 0.2)]
    adjusted = [t.adjusted_p for t in stats.benjamini_hochberg(tests)]
    assert adjusted == pytest.approx([0.04, 0.04 * 4 / 3, 0.04 * 4 / 3, 0.2])
    assert stats.benjamini_hochberg([]) == []


def test_black_box_shift_estimation_recovers_a_label_shift() -> None:
    rng = np.random.default_rng(3)
    confusion = np.array([[0.9, 0.1, 0.0], [0.1, 0.8, 0.1], [0.0, 0.2, 0.8]])  # P(predicted | true)

    def predict(labels: np.ndarray) -> np.ndarray:
        return np.array([rng.choice(3, p=confusion[y]) for y in labels])

    ref_labels = rng.choice(3, 600, p=[1 / 3, 1 / 3, 1 / 3])
    truth = np.array([0.6, 0.2, 0.2])
    window = predict(rng.choice(3, 2000, p=truth))
    found = stats.bbse_class_mix(predict(ref_labels), ref_labels, window, 3, boot=100)
    assert np.abs(np.array([e.value for e in found]) - truth).sum() < 0.12
    assert all(e.low <= e.value <= e.high for e in found)


def test_bbse_shift_test_holds_its_level_and_finds_a_label_shift_a_confused_model_hides() -> None:
    rng = np.random.default_rng(5)
    confusion = np.array([[0.7, 0.3, 0.0], [0.3, 0.7, 0.0], [0.0, 0.0, 1.0]])  # classes 0 and 1 often swapped

    def predict(labels: np.ndarray) -> np.ndarray:
        return (rng.random(len(labels))[:, None] > confusion[labels].cumsum(1)).sum(1)

    prior, classes = np.array([1 / 3, 1 / 3, 1 / 3]), ["a", "b", "c"]
    p_null = []
    for _ in range(300):  # no shift: the p is not too small more often than its level says
        ref_labels = rng.choice(3, 300, p=prior)
        window = predict(rng.choice(3, 100, p=prior))
        p_null.append(stats.bbse_shift_test(predict(ref_labels), ref_labels, prior, 1500, window, classes, boot=100).p_value)
    assert np.mean(np.array(p_null) < 0.05) < 0.09
    ref_labels = rng.choice(3, 300, p=prior)
    shifted = predict(rng.choice(3, 400, p=[0.55, 0.12, 0.33]))  # a moved into b's place: predicted shares move less
    found = stats.bbse_shift_test(predict(ref_labels), ref_labels, prior, 1500, shifted, classes, boot=200)
    assert found.p_value < 1e-3 and found.subject in {"a", "b"} and "true class mix" in found.words


def test_average_thresholded_confidence_estimates_accuracy() -> None:
    rng = np.random.default_rng(4)

    def sample(n: int, hard: float) -> tuple[np.ndarray, np.ndarray]:
        conf = np.clip(rng.beta(8 - 6 * hard, 2, n), 0.34, 1.0)
        correct = rng.random(n) < conf  # calibrated on both
        return conf, correct

    ref_conf, ref_correct = sample(2000, 0.0)
    threshold = stats.atc_threshold(ref_conf, ref_correct)
    assert np.mean(ref_conf > threshold) == pytest.approx(ref_correct.mean(), abs=0.002)  # the threshold's definition
    conf, correct = sample(3000, 0.0)  # a clean window: both estimates within 3 points
    assert stats.atc_accuracy(conf, threshold) == pytest.approx(correct.mean(), abs=0.03)
    assert stats.average_confidence(conf) == pytest.approx(correct.mean(), abs=0.03)
    hard_conf, hard_correct = sample(3000, 0.5)  # a harder window: both estimates fall with the accuracy
    assert hard_correct.mean() < correct.mean() - 0.05
    assert stats.atc_accuracy(hard_conf, threshold) < stats.atc_accuracy(conf, threshold) - 0.05
    assert stats.average_confidence(hard_conf) == pytest.approx(hard_correct.mean(), abs=0.03)


def test_the_tail_test_finds_part_of_the_traffic_moved_far_where_ks_barely_does() -> None:
    rng = np.random.default_rng(5)
    ref = rng.normal(0.46, 0.1, 1200)
    same = stats.tail_test("brightness", ref, rng.normal(0.46, 0.1, 200))
    assert same.p_value > 0.05 and same.metric == "brightness_tails"
    window = np.r_[rng.normal(0.46, 0.1, 160), rng.normal(0.1, 0.03, 40)]  # a fifth of the images much darker
    tails = stats.tail_test("brightness", ref, window)
    assert tails.p_value < 1e-15 and tails.subject == "low" and tails.effect < 0
    assert tails.words.startswith("2") and "darker than all but 1% of the reference" in tails.words
    assert stats.ks_shift("brightness", ref, window).p_value > tails.p_value * 1e6
    p = np.array([stats.tail_test("x", rng.normal(size=1000), rng.normal(size=200)).p_value for _ in range(300)])
    assert np.mean(p < 0.05) <= 0.08  # valid under no drift (conservative: the smaller of two p's, doubled)


def test_one_class_that_grows_is_found_more_surely_than_by_the_chi_square() -> None:
    ref, win = np.array([117, 100, 107]), np.array([120, 40, 40])
    share = stats.class_share_test(ref, win, ["black", "grizzly", "teddy"])
    assert share.subject == "black" and share.value == pytest.approx(0.6) and "'black' is 60%" in share.words
    digits = [str(i) for i in range(10)]  # with many classes, one growing is diluted in the chi-square's 9 degrees
    ten_ref, ten_win = np.full(10, 129), np.array([50] + [17] * 9)
    assert stats.class_share_test(ten_ref, ten_win, digits).p_value < stats.class_mix_test(ten_ref, ten_win, digits).p_value / 50
    assert stats.class_share_test(ref, np.array([72, 62, 66]), ["a", "b", "c"]).p_value > 0.3


def test_the_fast_fisher_is_scipys_fisher() -> None:
    from scipy.stats import fisher_exact

    for a, b, c, d in [(3, 17, 1, 99), (0, 10, 5, 5), (40, 160, 13, 1276), (7, 3, 2, 8)]:
        assert stats.fisher_greater(a, b, c, d) == pytest.approx(fisher_exact([[a, b], [c, d]], alternative="greater")[1])
