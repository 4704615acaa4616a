"""Evaluation metrics on hand-made probabilities whose answers are known."""

from __future__ import annotations

import numpy as np
import pytest

from core import evaluation
from core.evaluation import Evaluation

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


def test_most_confused_pairs() -> None:
    assert evaluation.most_confused(EV).values.tolist() == [["a", "b", 1], ["c", "a", 1]]


def test_losses_and_expected_calibration_error() -> None:
    assert evaluation.losses(EV)[0] == pytest.approx(-np.log(0.9))
    table, ece = evaluation.reliability(EV, bins=2)
    # bin 0-0.5 holds nothing above 0.5 except the 0.5 tie, which goes to the upper bin
    confidence = PROBS.max(1)
    correct = (PROBS.argmax(1) == EV.labels).astype(float)
    assert ece == pytest.approx(abs(correct.mean() - confidence.mean()))
    assert table["images"].sum() == 6


def test_changed_predictions_between_versions() -> None:
    other = Evaluation("v2", EV.classes, EV.ids[::-1], EV.labels[::-1], np.eye(3)[EV.labels[::-1]])
    changed = evaluation.changed_predictions(EV, other)
    assert sorted(changed["id"]) == ["i2", "i5"]
    assert changed.set_index("id").loc["i2", "v2"] == "a"


def test_figures_build() -> None:
    assert evaluation.confusion_figure(EV, normalise=True).data[0].z[0][0] == pytest.approx(2 / 3)
    assert len(evaluation.reliability_figure(EV).data) == 2
