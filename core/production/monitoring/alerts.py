"""Alerts: windows of the prediction log that differ from the production model's validation reference by
more than chance explains."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from core.production.monitoring.reference import LogReference

ALERT_P = 0.01


@dataclass(frozen=True)
class Alert:
    """One window whose metric moved: the value, the reference, their difference, the sample and the p-value."""

    window: str
    metric: str  # ood_rate / feedback_accuracy
    value: float
    reference: float
    effect: float  # value - reference
    n: int  # predictions (OOD rate) or labelled predictions (accuracy) in the window
    p_value: float


def alerts(win: pd.DataFrame, base: LogReference) -> list[Alert]:
    """Windows whose OOD rate is above, or whose feedback accuracy is below, the validation reference
    by more than chance explains (one-sided binomial test per window, p < ALERT_P, uncorrected)."""
    from scipy.stats import binomtest

    found: list[Alert] = []
    for row in win.itertuples():
        n, k = int(row.predictions), round(row.ood_rate * row.predictions)
        p = binomtest(k, n, min(max(base.ood_rate, 1e-3), 1 - 1e-3), alternative="greater").pvalue
        if p < ALERT_P:
            found.append(_alert(row.window, "ood_rate", row.ood_rate, base.ood_rate, n, p))
        m = int(row.feedback)
        if m:
            correct = round(row.feedback_accuracy * m)
            p = binomtest(correct, m, min(max(base.accuracy, 1e-3), 1 - 1e-3), alternative="less").pvalue
            if p < ALERT_P:
                found.append(_alert(row.window, "feedback_accuracy", row.feedback_accuracy, base.accuracy, m, p))
    return found


def _alert(window: object, metric: str, value: float, reference: float, n: int, p: float) -> Alert:
    label = str(window).removesuffix(" 00:00:00")
    return Alert(label, metric, float(value), float(reference), float(value - reference), n, float(p))
