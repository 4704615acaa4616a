"""The monitoring report the command line prints: windows with every drift test and the estimates, alerts
with their example predictions, and totals, as plain JSON-ready data."""

from __future__ import annotations

import math
from dataclasses import asdict
from typing import Any

from core.production.monitoring import accuracy
from core.production.monitoring.causes import report_causes
from core.production.monitoring.drift import DriftReport, drift_report
from core.production.monitoring.queries import LogFilter, json_records, truth_by_window, window_label, windows
from core.production.monitoring.verdict import verdict
from core.workspace import log_table, store
from core.workspace.paths import Workspace


def _clean(value: Any) -> Any:
    """NaN as None, recursively: JSON has no NaN."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def _flat(obj: Any) -> dict[str, Any]:
    """A dataclass's fields as a dict, one level deep (asdict copies every value deeply: slow over hundreds)."""
    return {name: getattr(obj, name) for name in obj.__dataclass_fields__}


def summary(ws: Workspace, f: LogFilter = LogFilter(), version: str | None = None) -> dict[str, object]:
    """Windows (each with its tests and estimates), alerts against the reference of `version` (default: the
    filter's version, else production) and totals, for the CLI."""
    with store.connect(ws) as con:  # one connection for every query
        win = windows(ws, f, con)
        report: DriftReport = drift_report(ws, f, version, con)
        truth = truth_by_window(ws, f, con).set_index("window")["accuracy_true"].to_dict()
        estimates = accuracy.accuracy(ws, f, con)
    by_label = {w.window: w for w in report.windows}
    records = []
    for record in json_records(win):
        label = window_label(record["window"])
        judged = by_label.get(label)
        record["judged"] = bool(judged and judged.judged)
        record["repeats"] = bool(judged and judged.repeats)
        record["tests"] = (
            [
                {**_flat(t), "alert": t.matters(report.q), "too_small": t.significant(report.q) and not t.matters(report.q)}
                for t in judged.tests
            ]
            if judged
            else []
        )
        record["estimates"] = asdict(judged.estimates) if judged and judged.estimates else None
        if label in truth:
            record["accuracy_true"] = truth[label]
        records.append(record)
    alerts = []
    for a in report.alerts:
        alerts.append({**_flat(a), "examples": [_flat(e) for e in a.examples], "example_ids": [e.id for e in a.examples]})
    found = verdict(report)
    causes = [
        {"window": c.window, "cause": c.kind, "title": c.title, "words": c.words, "metrics": [t.metric for t in c.tests],
         "lever": c.lever, "example_ids": [e.id for e in c.examples]}
        for cs in report_causes(report).values() for c in cs
    ]  # fmt: skip
    return _clean(
        {
            "verdict": found.status,
            "reasons": list(found.reasons),
            "causes": causes,
            "sources": list(f.sources),
            "window": f.window,
            "reference_version": report.reference_version or None,
            "predictions": int(win["predictions"].sum()) if len(win) else 0,
            "excluded": report.excluded,
            "alert_level": report.q,
            "windows": records,
            "alerts": alerts,
            "estimates": [{"window": r["window"], **(r["estimates"] or {})} for r in records if r["estimates"]],
            "accuracy": accuracy.summary(estimates, accuracy.atc_overall(report)),
            "unreadable_log_files": [f.shown for f in log_table.unreadable(ws)],
        }
    )
