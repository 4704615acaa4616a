"""Production's accuracy from labels, told apart by how the labelled items were chosen.

- The audit sample: requests drawn at random (production.audit), labelled blind. Unbiased, with an exact
  (Clopper-Pearson) interval; it needs only that the labelled audit items are like the unlabelled ones.
- Weighted: every label whose chance of being asked for is known, weighed by its inverse. Two strata: the
  requests the queue takes whatever happens (referred, out of domain, disputed: probability 1) and the rest
  (only the audit reaches them: probability audit_p). Each stratum's accuracy from its labels (the audit's
  weighed by 1 / audit_p, so a share changed midway still counts right), then weighted by its size. Unbiased when
  the labelled hard cases are like the unlabelled ones; narrower than the audit alone because the hard cases,
  where the mistakes are, are labelled far more often.
- Reviewed items: the hard cases alone. Lower by design; never an estimate of all traffic.
- Labels chosen by nobody knows whom (an end user's feedback on an unflagged request) enter none of the
  estimates: their chance of being given is unknown.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import duckdb
import numpy as np
import pandas as pd

from core.model.rates import MIN_N, Z95, Rate
from core.production import labelled, log_figures
from core.production.monitoring.drift import DriftReport
from core.production.monitoring.queries import LogFilter, logged
from core.production.prediction_log import NONE_OF_THESE
from core.workspace import store
from core.workspace.paths import Workspace

COVERED = 0.9  # share of the hard cases labelled from which the weighted estimate is preferred to the audit's alone


@dataclass(frozen=True)
class Interval:
    value: float | None
    low: float | None
    high: float | None
    n: int  # labels it rests on
    short_of: str = ""  # when there is no estimate: what it lacks, in words (else "too few (n)" says it)

    def text(self, digits: int = 1) -> str:
        if self.value is None or self.low is None or self.high is None:
            return f"too few: {self.short_of}" if self.short_of else f"too few (n {self.n})"
        return f"{self.value:.{digits}%} (95% CI {self.low * 100:.{digits}f}-{self.high * 100:.{digits}f}%, n {self.n:,})"


@dataclass(frozen=True)
class Accuracy:
    """Production's accuracy over the served predictions in view, each way it can be estimated from labels."""

    served: int  # predictions in view
    audit: Rate  # labelled audit items: right of labelled
    drawn: int  # audit items drawn (labelled or not)
    weighted: Interval
    reviewed: Rate  # labelled hard cases (referred, out of domain, disputed)
    flagged: int  # hard cases in view
    unknown_labels: int  # labels whose chance of being given is unknown (left out)

    @property
    def exact(self) -> Interval:
        """The audit's accuracy with its exact 95% interval (Clopper-Pearson), or too few."""
        if not self.audit.enough:
            return Interval(None, None, None, self.audit.n)
        low, high = clopper_pearson(self.audit.k, self.audit.n)
        return Interval(self.audit.value, low, high, self.audit.n)

    @property
    def coverage(self) -> float:
        """The share of the hard cases in view that are labelled."""
        return self.reviewed.n / self.flagged if self.flagged else 1.0

    @property
    def believed(self) -> Interval:
        """The estimate to act on (`advice` says why)."""
        if self.weighted.value is not None and self.audit.enough and self.coverage >= COVERED:
            return self.weighted
        return self.exact

    def advice(self) -> str:
        """Which estimate to believe, and why, in words built from the figures."""
        if not self.audit.enough:
            return (
                f"Too few audit labels for an unbiased accuracy yet ({self.audit.n} labelled of {self.drawn} drawn; "
                f"{MIN_N} needed). Label the review queue: the audit items come up in it at random, unmarked. Until "
                "then, believe none of the figures from labels for all traffic: accuracy on reviewed items is the hard "
                "cases' (lower by design), and ATC assumes that nothing has shifted."
            )
        if self.believed is self.weighted:
            return (
                f"Believe the weighted estimate, {self.weighted.text()}: it adds the {self.reviewed.n} labelled hard cases "
                f"({self.coverage:.0%} of them) to the audit's random sample, so its interval is narrower, and with nearly "
                f"every hard case labelled it assumes almost nothing more. The audit alone says {self.exact.text()}."
            )
        why = (
            f"only {self.coverage:.0%} of the {self.flagged:,} hard cases are labelled, so the weighted estimate would "
            "assume the unlabelled ones are like them"
            if self.weighted.value is not None
            else f"the weighted estimate needs {MIN_N} labels in each stratum (or every hard case labelled)"
        )
        return (
            f"Believe the audit sample, {self.exact.text()}: its items were drawn at random and labelled blind, so it "
            f"assumes nothing; {why}."
        )


def clopper_pearson(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """The exact binomial interval: never narrower than the truth allows, at 0 or n of n too."""
    from scipy import stats as sps  # here: scipy.stats takes most of a second to import (cli.production starts it early)

    alpha = 1 - level
    low = 0.0 if k == 0 else float(sps.beta.ppf(alpha / 2, k, n - k + 1))
    high = 1.0 if k == n else float(sps.beta.ppf(1 - alpha / 2, k + 1, n - k))
    return low, high


def _stratum(right: np.ndarray, weight: np.ndarray, count: np.ndarray) -> tuple[float, float]:
    """A stratum's weighted accuracy and the variance of that mean (half a pseudo-count each way: never 0); each
    row stands for `count` labelled predictions alike."""
    total = (count * weight).sum()
    value = float((count * weight * right).sum() / total)
    n_eff = total**2 / float((count * weight**2).sum())
    smoothed = (value * n_eff + 0.5) / (n_eff + 1)
    return value, smoothed * (1 - smoothed) / n_eff


TALLY = ("flagged", "audit", "audit_p", "labelled", "right")  # what every estimate needs of a prediction


def tallied(frame: pd.DataFrame) -> pd.DataFrame:
    """Predictions (flagged, audit, audit_p, label, predicted, ood; one row each) counted by TALLY (column n), as
    `requests` returns them."""
    labelled = frame["label"].notna()
    right = labelled & ((frame["label"] == frame["predicted"]) | ((frame["label"] == NONE_OF_THESE) & frame["ood"].astype(bool)))
    return _counted(frame.assign(labelled=labelled, right=right))


def _counted(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per prediction (TALLY's columns) as counts of the rows alike."""
    keys = pd.DataFrame(
        {
            "flagged": frame["flagged"].fillna(False).astype(bool),
            "audit": frame["audit"].fillna(False).astype(bool),
            "audit_p": frame["audit_p"].fillna(0.0).astype(float),
            "labelled": frame["labelled"].fillna(False).astype(bool),
            "right": frame["right"].fillna(False).astype(bool),
        }
    )
    return keys.value_counts(dropna=False).rename("n").reset_index()


def weighted(frame: pd.DataFrame) -> Interval:
    """The two-stratum estimate (frame: TALLY, with n the predictions each row stands for, or one row each)."""
    frame = frame if "n" in frame else _counted(frame)
    n = int(frame["n"].sum())
    parts, variance, used = [], 0.0, 0
    for hard in (True, False):
        rows = frame[frame["flagged"] == hard]
        if rows.empty:
            continue
        known = rows[rows["labelled"] & (hard | (rows["audit"] & (rows["audit_p"] > 0)))]
        k, size = int(known["n"].sum()), int(rows["n"].sum())
        if k == 0 or (k < MIN_N and k < size):  # a sample too small to stand for its stratum
            stratum = f"the {size:,} hard cases" if hard else f"the {size:,} other requests (audit labels only)"
            lacks = f"{k} label(s) among {stratum}; {MIN_N} needed"
            return Interval(None, None, None, int(frame.loc[frame["labelled"], "n"].sum()), lacks)
        weight = np.ones(len(known)) if hard else 1.0 / known["audit_p"].to_numpy(float)
        value, var = _stratum(known["right"].to_numpy(float), weight, known["n"].to_numpy(float))
        share = size / n
        parts.append(share * value)
        variance += share**2 * var
        used += k
    if not parts:
        return Interval(None, None, None, 0)
    value, half = float(sum(parts)), Z95 * math.sqrt(variance)
    return Interval(value, max(0.0, value - half), min(1.0, value + half), used)


_KEYS = ["flagged", "audit", "audit_p"]


def requests(ws: Workspace, f: LogFilter, con: duckdb.DuckDBPyConnection | None = None) -> pd.DataFrame:
    """The predictions in view counted by TALLY (column n): whether its request was a hard case, drawn by the audit
    (with its probability), labelled (the latest label on any prediction of the request) and right by that label.

    Without a scan of the whole log: every prediction in view counted as if unlabelled, day by day and kept
    (log_figures: a request's predictions are logged together, on one day), then the labelled requests' predictions
    (labelled: kept, with the other predictions of each request and the request's latest label) moved to labelled,
    right or wrong. Should the two ever disagree (a request's predictions split between the database's table and the
    files), the counts come from one query over the whole log instead."""
    day = replace(f, window="day", size=0)
    with store.reuse(ws, con) as c:
        labelled.load(ws, c)
        tally = lambda src: _counts_sql(day, src, labels=False)  # noqa: E731
        counted = log_figures.grouped(ws, c, "day", "accuracy-tally", tally, _KEYS)
        known = c.execute(*_labelled_sql(day)).df()
        if counted.empty and known.empty:
            return _whole(ws, f, c)
        every = counted.groupby(_KEYS, dropna=False)["n"].sum()
        moved = known.groupby(_KEYS, dropna=False)["n"].sum()
        left = every.sub(moved, fill_value=0)
        if (left < 0).any():
            return _whole(ws, f, c)
    rest = left[left > 0].rename("n").reset_index().assign(labelled=False, right=False)
    out = pd.concat([rest, known], ignore_index=True) if len(known) else rest
    return out[[*TALLY, "n"]].astype({"n": int})


def _labelled_sql(f: LogFilter) -> tuple[str, list[object]]:
    """The labelled requests' predictions in view (kept: labelled), counted by TALLY: a request's label is the latest
    on any of its predictions (a replay's aside), its flags those of all of them."""
    cte, params = logged(f, labelled.AS_LOG)
    return (
        f"""
        WITH {cte}
        SELECT flagged, request_audit AS audit, request_audit_p AS audit_p, TRUE AS labelled,
               coalesce(label = predicted OR (label = ? AND ood), FALSE) AS "right", count(*) AS n
        FROM logged WHERE stage <> 'backtest' AND label IS NOT NULL
        GROUP BY ALL
        """,
        [*params, NONE_OF_THESE],
    )


def _whole(ws: Workspace, f: LogFilter, con: duckdb.DuckDBPyConnection | None = None) -> pd.DataFrame:
    """`requests`' counts from one query over the whole log (every label joined with every prediction)."""
    with store.reuse(ws, con) as c:
        return c.execute(*_counts_sql(f)).df()


def _counts_sql(f: LogFilter, src: str = "log_predictions", labels: bool = True) -> tuple[str, list[object]]:
    """The predictions in view in `src` counted by TALLY, each with its request's flags and (with `labels`) its
    request's latest label; without, every one counted unlabelled (what is kept per day)."""
    cte, params = logged(f, src)
    fb = "fb AS (SELECT prediction_id, arg_max(label, ts) AS label, max(ts) AS at FROM log_feedback GROUP BY prediction_id),"
    sql = f"""
        WITH {cte},
        {fb if labels else ""}
        shared AS (  -- requests with more than one prediction: a candidate's (shadow, limited) or a replay's beside it
            SELECT DISTINCT request_id FROM {src} WHERE coalesce(stage, 'production') <> 'production'
        ),
        req AS (  -- those requests as a whole (every other request is its one prediction)
            SELECT p.request_id AS request,
                   bool_or(p.served IS NOT FALSE AND (p.ood OR coalesce(p.referred, FALSE)))
                       OR count(DISTINCT p.predicted) > 1 AS flagged,
                   bool_or(coalesce(p.audit, FALSE)) AS audit, max(coalesce(p.audit_p, 0)) AS audit_p,
                   {"arg_max(fb.label, fb.at)" if labels else "NULL::VARCHAR"} AS label
            FROM {src} p {"LEFT JOIN fb ON fb.prediction_id = p.id" if labels else ""}
            WHERE p.request_id IN (SELECT request_id FROM shared)
              AND p.request_id IN (SELECT request_id FROM logged)
              AND coalesce(p.stage, 'production') <> 'backtest'  -- a replay is no part of what production did
            GROUP BY 1
        ),
        each AS (
            SELECT l.predicted, l.ood,
                   CASE WHEN r.request IS NULL THEN l.served IS NOT FALSE AND (l.ood OR coalesce(l.referred, FALSE))
                        ELSE r.flagged END AS flagged,
                   CASE WHEN r.request IS NULL THEN coalesce(l.audit, FALSE) ELSE r.audit END AS audit,
                   CASE WHEN r.request IS NULL THEN coalesce(l.audit_p, 0) ELSE r.audit_p END AS audit_p,
                   {"CASE WHEN r.request IS NULL THEN fb.label ELSE r.label END" if labels else "NULL::VARCHAR"} AS label
            FROM logged l LEFT JOIN req r ON r.request = l.request_id
            {"LEFT JOIN fb ON fb.prediction_id = l.id" if labels else ""}
        )
        SELECT coalesce(flagged, FALSE) AS flagged, audit, audit_p, label IS NOT NULL AS labelled,
               coalesce(label = predicted OR (label = ? AND ood), FALSE) AS "right", count(*) AS n
        FROM each GROUP BY ALL
    """
    return sql, [*params, NONE_OF_THESE]


def estimate(frame: pd.DataFrame) -> Accuracy:
    """Every estimate from `requests`' counts (or from one row per prediction, counted first: `tallied`)."""
    frame = frame if "n" in frame else tallied(frame)
    frame = frame.astype({"flagged": bool, "audit": bool, "audit_p": float, "labelled": bool, "right": bool, "n": int})
    audited = frame[frame["audit"] & frame["labelled"]]
    hard = frame[frame["flagged"] & frame["labelled"]]
    unknown = frame[frame["labelled"] & ~frame["flagged"] & ~frame["audit"]]
    return Accuracy(
        int(frame["n"].sum()),
        Rate(int(audited.loc[audited["right"], "n"].sum()), int(audited["n"].sum())),
        int(frame.loc[frame["audit"], "n"].sum()),
        weighted(frame),
        Rate(int(hard.loc[hard["right"], "n"].sum()), int(hard["n"].sum())),
        int(frame.loc[frame["flagged"], "n"].sum()),
        int(unknown["n"].sum()),
    )


def accuracy(ws: Workspace, f: LogFilter, con: duckdb.DuckDBPyConnection | None = None) -> Accuracy:
    return estimate(requests(ws, f, con))


def atc_overall(report: DriftReport) -> tuple[float | None, int]:
    """ATC's estimate over every judged window, weighted by each window's predictions (no labels at all)."""
    rows = [(w.n, w.estimates.accuracy_atc) for w in report.windows if w.estimates is not None]
    n = sum(k for k, _ in rows)
    return (sum(k * v for k, v in rows) / n if n else None), n


def table(acc: Accuracy, atc: tuple[float | None, int], truth: float | None = None) -> pd.DataFrame:
    """Each estimate with its interval, its n and what it rests on, as Monitor and `monitor` show them."""
    rows = [
        ("audit sample (random, labelled blind)", acc.exact, "unbiased: drawn at random; exact interval"),
        ("weighted by inclusion probability", acc.weighted, "every label whose chance of being asked for is known"),
    ]
    low, high = acc.reviewed.interval if acc.reviewed.enough else (None, None)  # too few: no headline
    rows.append(("reviewed items (the hard cases: lower by design)",
                 Interval(acc.reviewed.value if acc.reviewed.enough else None, low, high, acc.reviewed.n),
                 "referred, out-of-domain and disputed items only"))  # fmt: skip
    rows.append(("ATC (no labels)", Interval(atc[0], None, None, atc[1]), "confidence alone: assumes nothing has shifted"))
    if truth is not None:
        rows.append(("true (simulated traffic)", Interval(truth, None, None, acc.served), "the simulator's record of each image"))
    out = [
        {"estimate": name, "reading": _reading(i), "accuracy": i.value, "low": i.low, "high": i.high, "n": i.n, "rests on": what}
        for name, i, what in rows
    ]
    return pd.DataFrame(out)


def _reading(i: Interval) -> str:
    """An estimate as a person reads it: with its interval and n, a point value where it has no interval (ATC, the
    simulator's truth), or why there is none."""
    if i.value is not None and (i.low is None or i.high is None):
        return f"{i.value:.1%} (a point value: no interval, n {i.n:,})"
    return i.text()


def summary(acc: Accuracy, atc: tuple[float | None, int]) -> dict[str, object]:
    """The estimates for `monitor --json`."""
    return {
        "served": acc.served,
        "audit": {
            "right": acc.audit.k,
            "labelled": acc.audit.n,
            "drawn": acc.drawn,
            "low": acc.exact.low,
            "high": acc.exact.high,
        },
        "weighted": {"value": acc.weighted.value, "low": acc.weighted.low, "high": acc.weighted.high, "n": acc.weighted.n},
        "reviewed": {"right": acc.reviewed.k, "labelled": acc.reviewed.n, "flagged": acc.flagged},
        "atc": atc[0],
        "unknown_labels": acc.unknown_labels,
        "believed": "weighted" if acc.believed is acc.weighted else "audit",
        "advice": acc.advice(),
    }
