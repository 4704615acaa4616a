"""Evaluation metrics on hand-made probabilities whose answers are known."""

from __future__ import annotations

import numpy as np
import pytest

from core.model import evaluation
from core.model.evaluation import Evaluation

# actual: a a a b b c ; predicted: a a b b b a
PROBS = np.array([[0.9, 0.05, 0.05], [0.6, 0.3, 0.1], [0.3, 0.6, 0.1], [0.1, 0.8, 0.1], [0.2, 0.7, 0.1], [0.5, 0.1, 0.4]])
EV = Evaluation("v1", ["a", "b", "c"], ["i0", "i1", "i2", "i3", "i4", "i5"], np.array([0, 0, 0, 1, 1, 2]), PROBS)


def test_confusion_matrix_rows_actual_columns_predicted() -> None:
    assert evaluation.confusion_matrix(EV).tolist() == [[2, 1, 0], [0, 2, 0], [1, 0, 0]]
    assert EV.accuracy == pytest.approx(4 / 6)


def test_per_class_metrics() -> None:
    table = evaluation.per_class(EV).set_index("class")
    assert table.loc["a", "precision"] == pytest.approx(2 / 3) and table.loc["a", "recall"] == pytest.approx(2 / 3)
    assert table.loc["b", "precision"] == pytest.approx(2 / 3) and table.loc["b", "recall"] == 1.0
    assert table.loc["c", "f1"] == 0.0 and table["support"].tolist() == [3, 2, 1]


def test_per_class_intervals_and_accuracy_as_a_rate() -> None:
    table = evaluation.per_class(EV).set_index("class")
    assert table.loc["b", "recall 95% CI"] == "34%-100% (n 2)"  # 2 of 2: Wilson, not the normal approximation's 100-100%
    assert table.loc["a", "precision 95% CI"] == "21%-94% (n 3)"
    assert table.loc["c", "precision 95% CI"] == "no images (n 0)"  # nothing was predicted c
    assert (EV.rate.k, EV.rate.n) == (4, 6) and EV.rate.short() == "too few (n 6)"


def test_most_confused_pairs() -> None:
    assert evaluation.most_confused(EV).values.tolist() == [["a", "b", 1], ["c", "a", 1]]


def test_losses() -> None:
    assert evaluation.losses(EV)[0] == pytest.approx(-np.log(0.9))
    assert evaluation.losses(EV)[5] == pytest.approx(-np.log(0.4))


# confidences in four of ten bins, the lowest near chance for three classes; predicted: a b a b b
SPREAD = np.array([[0.35, 0.33, 0.32], [0.34, 0.35, 0.31], [0.45, 0.30, 0.25], [0.05, 0.95, 0.0], [0.10, 0.85, 0.05]])
SPREAD_EV = Evaluation("v1", ["a", "b", "c"], ["j0", "j1", "j2", "j3", "j4"], np.array([0, 0, 1, 1, 1]), SPREAD)


def test_reliability_bins_and_expected_calibration_error() -> None:
    table, ece = evaluation.reliability(SPREAD_EV, bins=10)
    assert table["bin"].tolist() == ["0.3-0.4", "0.4-0.5", "0.8-0.9", "0.9-1.0"]
    assert table["images"].tolist() == [2, 1, 1, 1]
    assert table["accuracy"].tolist() == [0.5, 0.0, 1.0, 1.0]
    np.testing.assert_allclose(table["confidence"], [0.35, 0.45, 0.85, 0.95])
    # 2/5 * |0.5 - 0.35| + 1/5 * |0 - 0.45| + 1/5 * |1 - 0.85| + 1/5 * |1 - 0.95|
    assert ece == pytest.approx(0.06 + 0.09 + 0.03 + 0.01)


def test_changed_predictions_between_versions() -> None:
    other = Evaluation("v2", EV.classes, EV.ids[::-1], EV.labels[::-1], np.eye(3)[EV.labels[::-1]])
    changed = evaluation.changed_predictions(EV, other)
    assert sorted(changed["id"]) == ["i2", "i5"]
    assert changed.set_index("id").loc["i2", "v2"] == "a"


def test_figures_build() -> None:
    assert evaluation.confusion_figure(EV, normalise=True).data[0].z[0][0] == pytest.approx(2 / 3)
    assert len(evaluation.reliability_figure(EV).data) == 2
