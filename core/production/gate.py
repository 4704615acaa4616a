"""A candidate against production on the same requests: agreement, accuracy of each from the same labelled
images with an interval on the difference, the disagreements, and the promotion gate with its criteria.

Every request in shadow or limited is scored by both models (same bytes, one decode), so the comparison is
paired: the difference in accuracy is measured on the same images, and its interval is the paired one.

The labels are not a random sample: the review queue takes every disputed request and few others. So the figures
are weighted by how each label was chosen. The difference comes from the disputed requests alone (where the two
agree, it is 0 whatever the truth), scaled by their share of all requests. Each model's own accuracy is the
two-stratum estimate of monitoring.accuracy: the hard cases, and the audit's random sample of the rest.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime, timedelta

import duckdb
import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from core.model.rates import Rate, points
from core.production import labelled, log_figures
from core.production.monitoring import accuracy
from core.workspace import store
from core.workspace.paths import Workspace

Z95 = 1.959963984540054


@dataclass(frozen=True)
class Criteria:
    """What the gate asks before a candidate takes over (the analyst may still decide otherwise; it is recorded)."""

    min_paired: int = 200  # requests both models scored
    min_agreement: float = 0.90  # share of those where they predict the same class
    min_labelled: int = 30  # of those, labelled (feedback, review, import; the simulator's feedback on simulated traffic)
    margin: float = 0.02  # the candidate may be worse by at most this much: the 95% interval's low end must be above -margin


@dataclass(frozen=True)
class Paired:
    """Accuracy of both models on the same requests, and the paired difference (candidate - production)."""

    labelled: int
    production: float | None
    candidate: float | None
    difference: float | None
    low: float | None
    high: float | None
    disputed: int = 0  # requests the two answered differently: the only ones the difference depends on
    disputed_labelled: int = 0
    production_interval: accuracy.Interval | None = None  # each model's accuracy weighted by how its labels were chosen
    candidate_interval: accuracy.Interval | None = None


@dataclass(frozen=True)
class Comparison:
    candidate: str
    production: str
    paired: int  # requests scored by both
    agreement: float | None
    acted: int  # requests the candidate answered (limited)
    accuracy: Paired
    windows: pd.DataFrame  # per window: paired, agreement, labelled, production/candidate accuracy, difference, low, high
    disputes: pd.DataFrame  # the latest requests the two answered differently (labels, truth, time, name, kept image)

    @property
    def agreement_rate(self) -> Rate:
        return Rate.of(self.agreement, self.paired)


@dataclass(frozen=True)
class Check:
    criterion: str
    met: bool
    value: str


@dataclass(frozen=True)
class Gate:
    checks: tuple[Check, ...]

    @property
    def passed(self) -> bool:
        return all(c.met for c in self.checks)


def paired_accuracy(production_right: np.ndarray, candidate_right: np.ndarray) -> Paired:
    """Accuracy of each on the same images and a 95% interval for the difference: Wald on the paired counts
    with half a pseudo-count in each cell (Agresti and Min 2005), so no interval is ever a single point."""
    a, b = np.asarray(production_right, bool), np.asarray(candidate_right, bool)
    n = len(a)
    if n == 0:
        return Paired(0, None, None, None, None, None)
    only_production, only_candidate = float((a & ~b).sum()) + 0.5, float((~a & b).sum()) + 0.5
    total = n + 2.0
    centre = (only_candidate - only_production) / total
    var = ((only_production + only_candidate) - (only_candidate - only_production) ** 2 / total) / total**2
    half = Z95 * float(np.sqrt(max(var, 0.0)))
    return Paired(n, float(a.mean()), float(b.mean()), float(b.mean() - a.mean()), centre - half, centre + half)


PAIR_KEYS = ("disputed", "labelled", "production_right", "candidate_right", "flagged", "audit", "audit_p")


def paired_counts(frame: pd.DataFrame) -> pd.DataFrame:
    """Requests both scored, one row each (production_label, candidate_label, truth, flagged, audit, audit_p), as
    counts of the rows alike by PAIR_KEYS (column n): what `weighted_paired` needs of them."""
    truth = frame["truth"]
    keys = pd.DataFrame(
        {
            "disputed": (frame["production_label"] != frame["candidate_label"]).to_numpy(bool),
            "labelled": truth.notna().to_numpy(bool),
            "production_right": (frame["production_label"] == truth).to_numpy(bool),
            "candidate_right": (frame["candidate_label"] == truth).to_numpy(bool),
            "flagged": frame["flagged"].fillna(False).astype(bool).to_numpy(),
            "audit": frame["audit"].fillna(False).astype(bool).to_numpy(),
            "audit_p": frame["audit_p"].fillna(0.0).astype(float).to_numpy(),
        }
    )
    return keys.value_counts(dropna=False).rename("n").reset_index()


def weighted_paired(frame: pd.DataFrame) -> Paired:
    """The comparison over every request both scored, its labels weighted by how they were chosen. frame: PAIR_KEYS
    with n, the requests each row stands for (as `_counts` returns them), or one row per request
    (production_label, candidate_label, truth, flagged, audit, audit_p), counted first.

    The difference is (disputed / all) times its mean over the labelled disputed requests. Its variance: the paired
    one (Agresti-Min, as `paired_accuracy`) over all the requests, the disputed ones counted as the labelled ones
    say, plus the error of that mean while some disputed requests wait for a label."""
    frame = frame if "n" in frame else paired_counts(frame)
    frame = frame.astype({k: bool for k in PAIR_KEYS if k != "audit_p"} | {"audit_p": float, "n": int})
    n = int(frame["n"].sum())
    if n == 0:
        return Paired(0, None, None, None, None, None)
    labelled = int(frame.loc[frame["labelled"], "n"].sum())
    seen = frame[frame["disputed"] & frame["labelled"]]
    p_right, c_right, count = (seen[k].to_numpy() for k in ("production_right", "candidate_right", "n"))
    big_d, small_d = int(frame.loc[frame["disputed"], "n"].sum()), int(count.sum())
    weights = {
        side: accuracy.weighted(frame.assign(right=frame[f"{side}_right"] & frame["labelled"])[[*accuracy.TALLY, "n"]])
        for side in ("production", "candidate")
    }  # fmt: skip
    if big_d and not small_d:  # they differ somewhere, and nobody has said who was right
        return Paired(labelled, weights["production"].value, weights["candidate"].value, None, None, None,
                      big_d, 0, weights["production"], weights["candidate"])  # fmt: skip
    seen_c = float(count[c_right & ~p_right].sum())  # labelled disputed requests only the candidate got right
    seen_p = float(count[p_right & ~c_right].sum())
    only_c, only_p = seen_c * big_d / max(small_d, 1), seen_p * big_d / max(small_d, 1)
    difference = (only_c - only_p) / n
    b, c, total = only_c + 0.5, only_p + 0.5, n + 2.0
    var = ((b + c) - (b - c) ** 2 / total) / total**2
    if small_d:  # per labelled disputed request d = candidate right - production right: |d| sums to seen_c + seen_p
        spread = ((seen_c + seen_p + 1.0) - (seen_c - seen_p) ** 2 / (small_d + 2.0)) / (small_d + 2.0)
        var += (big_d / n) ** 2 * spread / small_d * (1 - small_d / big_d)
    centre, half = (b - c) / total, Z95 * float(np.sqrt(max(var, 0.0)))
    return Paired(
        labelled, weights["production"].value, weights["candidate"].value, difference, centre - half, centre + half,
        big_d, small_d, weights["production"], weights["candidate"],
    )  # fmt: skip


def _both(window: str, source: str = "log_predictions", truth: bool = True) -> str:
    """Every request both models scored in `source` (parameters: candidate, production twice, the time span `_span`
    gives): its window, each model's class, whether the candidate acted, the truth (the latest label on either
    prediction; NULL without `truth`), and how its label was chosen (a request's predictions are drawn by the audit
    alike: production's flags say it)."""
    if window not in ("hour", "day", "week"):
        raise ValueError(f"window must be hour, day or week, not {window!r}")  # pages and the CLI offer only these
    labels = (
        "fb AS (SELECT prediction_id, arg_max(label, ts) AS label FROM log_feedback GROUP BY prediction_id)," if truth else ""
    )
    joined = "LEFT JOIN fb f1 ON f1.prediction_id = p.id LEFT JOIN fb f2 ON f2.prediction_id = c.id" if truth else ""
    return f"""
        {labels}
        c AS (SELECT request_id, id, predicted, served, ood, referred FROM {source}
              WHERE model_version = ? AND stage IN ('shadow', 'limited')),
        p AS (SELECT request_id, id, model_version, predicted, ts, ood, referred, audit, audit_p FROM {source}
              WHERE coalesce(stage, 'production') = 'production' AND (? IS NULL OR model_version = ?) AND ts BETWEEN ? AND ?),
        pairs AS (
            SELECT date_trunc('{window}', p.ts) AS "window", p.id AS production_id, c.id AS candidate_id,
                   p.model_version AS production_version, p.predicted AS production_label, c.predicted AS candidate_label,
                   coalesce(c.served, FALSE) AS acted, {"coalesce(f1.label, f2.label)" if truth else "NULL::VARCHAR"} AS truth,
                   p.ts, p.predicted IS DISTINCT FROM c.predicted AS disputed,
                   coalesce(p.predicted <> c.predicted OR (CASE WHEN c.served THEN c.ood OR coalesce(c.referred, FALSE)
                                                       ELSE p.ood OR coalesce(p.referred, FALSE) END), FALSE) AS flagged,
                   coalesce(p.audit, FALSE) AS audit, coalesce(p.audit_p, 0.0) AS audit_p
            FROM p JOIN c ON c.request_id = p.request_id {joined}
        )"""


def _span(con: duckdb.DuckDBPyConnection, candidate: str) -> list[object]:
    """The time the candidate scored requests in, a day wider each way: production's predictions of those requests
    were logged with them (one batch), so only these days' files are read, not the whole log."""
    first, last = con.execute(
        "SELECT min(ts), max(ts) FROM log_predictions WHERE model_version = ? AND stage IN ('shadow', 'limited')", [candidate]
    ).fetchone()
    day = timedelta(days=1)
    return [first - day, last + day] if first is not None else [None, None]


_EVER = [datetime(1, 1, 1), datetime(9999, 1, 1)]  # a span that holds every time

DISPUTE_COLUMNS = (
    "production_id", "candidate_id", "production_version", "production_label", "candidate_label", "acted", "truth", "ts",
    "name", "image_path",
)  # fmt: skip


_KEYS = ["window", "production_version", "acted", "disputed", "flagged", "audit", "audit_p"]
_COUNTED = """
    SELECT "window", production_version, acted, disputed, truth IS NOT NULL AS labelled,
           coalesce(production_label = truth, FALSE) AS production_right,
           coalesce(candidate_label = truth, FALSE) AS candidate_right, flagged, audit, audit_p, count(*) AS n
    FROM pairs {where} GROUP BY ALL"""


def _read(ws: Workspace, candidate: str, production: str | None, window: str, latest: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The requests both scored: counted by window, production version, whether the candidate acted and PAIR_KEYS
    (column n), and the `latest` disputed ones, newest first, with the kept image.

    Without joining the candidate's days on every call: the pairs are counted day by day as if unlabelled and kept
    (log_figures: a request's predictions are logged together), and the labelled pairs (labelled holds both
    predictions of every labelled request) moved to labelled. Should the two disagree, one join of every pair."""
    with store.connect(ws) as con:
        span = _span(con, candidate)
        params = [candidate, production, production, *span]
        labelled.load(ws, con)

        def per_day(src: str) -> tuple[str, list[object]]:  # every time (a group is one day): kept while it lasts
            return f"WITH {_both(window, src, truth=False)} {_COUNTED.format(where='')}", [*params[:3], *_EVER]

        every = log_figures.grouped(ws, con, window, "gate-pairs", per_day, _KEYS)
        pairs = con.execute(
            f"WITH {_both(window, labelled.AS_LOG)} {_COUNTED.format(where='WHERE truth IS NOT NULL')}", params
        ).df()
        counts = _moved(every, pairs)
        if counts is None:
            counts = con.execute(f"WITH {_both(window)} {_COUNTED.format(where='')}", params).df()
        disputes = _latest(con, params, latest)
    return counts.sort_values("window", kind="stable").reset_index(drop=True), disputes


def _moved(every: pd.DataFrame, labelled: pd.DataFrame) -> pd.DataFrame | None:
    """The kept counts (all as unlabelled) with the labelled pairs moved out of them; None if they disagree."""
    if every.empty:
        return None if len(labelled) else every
    left = every.groupby(_KEYS, dropna=False)["n"].sum().sub(labelled.groupby(_KEYS, dropna=False)["n"].sum(), fill_value=0)
    if (left < 0).any():
        return None
    rest = left[left > 0].rename("n").reset_index().assign(labelled=False, production_right=False, candidate_right=False)
    out = pd.concat([rest, labelled], ignore_index=True) if len(labelled) else rest
    return out[list(every.columns)].astype({"n": int})


def _latest(con: duckdb.DuckDBPyConnection, params: list[object], latest: int) -> pd.DataFrame:
    """The `latest` disputed requests, newest first, with the kept image: looked for in the candidate's last two
    days, then in all of its days if those hold fewer."""
    first, last = params[-2], params[-1]
    spans = [[max(first, last - timedelta(days=3)), last], [first, last]] if first is not None else [[first, last]]
    columns = ", ".join(DISPUTE_COLUMNS[:-2])
    newest = f"WITH {_both('day', truth=False)} SELECT {columns} FROM pairs WHERE disputed ORDER BY ts DESC, production_id"
    for low, high in spans:
        disputes = con.execute(
            f"{newest} LIMIT ?",
            [*params[:3], low, high, latest],
        ).df()
        if len(disputes) >= latest:
            break
    kept = con.execute(  # their names and kept images, read for these few alone
        "SELECT id AS production_id, name, image_path FROM log_predictions WHERE list_contains(?, id) AND ts BETWEEN ? AND ?",
        [disputes["production_id"].tolist(), disputes["ts"].min(), disputes["ts"].max()],
    ).df()
    ids = [*disputes["production_id"], *disputes["candidate_id"]]
    said = dict(  # and their truth: the latest label on either prediction
        con.execute(
            "SELECT prediction_id, arg_max(label, ts) FROM log_feedback WHERE list_contains(?, prediction_id) GROUP BY 1", [ids]
        ).fetchall()
    )
    truth = [said.get(p, said.get(c)) for p, c in zip(disputes["production_id"], disputes["candidate_id"], strict=True)]
    return disputes.assign(truth=truth).merge(kept, on="production_id", how="left")[list(DISPUTE_COLUMNS)]


def compare(ws: Workspace, candidate: str, production: str | None = None, window: str = "day", latest: int = 12) -> Comparison:
    """The candidate against production (any production version it ran beside, unless one is named), with the
    `latest` disagreements."""
    counts, disputes = _read(ws, candidate, production, window, latest)
    paired = int(counts["n"].sum())
    agreeing = int(counts.loc[~counts["disputed"].astype(bool), "n"].sum())
    rows = []
    for start, part in counts.groupby("window", sort=True):
        acc = weighted_paired(part)
        size = int(part["n"].sum())
        same = int(part.loc[~part["disputed"].astype(bool), "n"].sum())
        rows.append(
            {
                "window": start,
                "paired": size,
                "agreement": same / size,
                **{f: getattr(acc, f) for f in Paired.__dataclass_fields__},
            }
        )
    names = sorted(set(counts["production_version"])) if paired else [production or ""]
    return Comparison(
        candidate,
        production or ", ".join(names),
        paired,
        agreeing / paired if paired else None,
        int(counts.loc[counts["acted"].astype(bool), "n"].sum()),
        weighted_paired(counts),
        pd.DataFrame(rows, columns=["window", "paired", "agreement", *Paired.__dataclass_fields__]),
        disputes,
    )


def gate(c: Comparison, criteria: Criteria = Criteria()) -> Gate:
    acc = c.accuracy
    low = acc.low if acc.low is not None else float("-inf")
    return Gate(
        (
            Check(f"at least {criteria.min_paired} requests scored by both", c.paired >= criteria.min_paired, f"{c.paired}"),
            Check(
                f"agreement at least {criteria.min_agreement:.0%}",
                c.agreement is not None and c.agreement >= criteria.min_agreement,
                "no requests yet" if c.agreement is None else f"{c.agreement:.1%}",
            ),
            Check(
                f"at least {criteria.min_labelled} of them labelled (feedback, review or import)",
                acc.labelled >= criteria.min_labelled,
                f"{acc.labelled}",
            ),
            Check(
                f"accuracy not worse by more than {criteria.margin * 100:.0f} points (95% interval of candidate - production)",
                acc.labelled >= criteria.min_labelled and low >= -criteria.margin,
                difference_words(acc),
            ),
        )
    )


def difference_words(acc: Paired) -> str:
    """The difference as the gate states it: from the disputed requests, with each model's weighted accuracy."""
    if acc.difference is None:
        return (
            f"none of the {acc.disputed} disputed request(s) labelled yet: label them on Review"
            if acc.disputed
            else "no labels yet"
        )
    each = ", ".join(
        f"{name} {i.text()}" for name, i in (("candidate", acc.candidate_interval), ("production", acc.production_interval)) if i
    )
    return (
        f"{points(acc.difference)} points ({points(acc.low)} to {points(acc.high)}), from the "
        f"{acc.disputed_labelled} labelled of {acc.disputed} disputed request(s); accuracy weighted by how each label "
        f"was chosen: {each}"
    )


def figures(c: Comparison, g: Gate) -> dict[str, object]:
    """What the analyst saw, recorded with a decision."""
    a = c.accuracy
    return {
        "candidate": c.candidate,
        "production": c.production,
        "paired": c.paired,
        "agreement": c.agreement,
        "acted": c.acted,
        "labelled": a.labelled,
        "production_accuracy": a.production,
        "candidate_accuracy": a.candidate,
        "difference": a.difference,
        "difference_low": a.low,
        "difference_high": a.high,
        "disputed": a.disputed,
        "disputed_labelled": a.disputed_labelled,
        "gate_passed": g.passed,
        "checks": [asdict(x) for x in g.checks],
    }


def windows_table(c: Comparison) -> pd.DataFrame:
    """The per-window figures as a person reads them: percentages, the difference with its 95% interval."""

    def signed(v: object) -> str:
        return "" if v is None or pd.isna(v) else points(float(v))

    def share(v: object, n: int) -> str:  # the rate with its 95% Wilson interval (n is the column beside it)
        if v is None or pd.isna(v) or not n:
            return ""
        low, high = Rate.of(float(v), n).interval
        return f"{float(v):.1%} ({low:.0%}-{high:.0%})"

    def weighted(i: object) -> str:  # each model's accuracy weighted by how its labels were chosen, or why not
        return i.text() if isinstance(i, accuracy.Interval) else ""

    w = c.windows
    return pd.DataFrame(
        {
            "window": w["window"],
            "scored by both": w["paired"],
            "agreement (95% CI)": [share(v, n) for v, n in zip(w["agreement"], w["paired"], strict=True)],
            "labelled": w["labelled"],
            "production accuracy (weighted, 95% CI)": [weighted(i) for i in w["production_interval"]],
            "candidate accuracy (weighted, 95% CI)": [weighted(i) for i in w["candidate_interval"]],
            "difference (points)": w["difference"].map(signed),
            "95% interval": [
                "" if pd.isna(lo) else f"{signed(lo)} to {signed(hi)}" for lo, hi in zip(w["low"], w["high"], strict=True)
            ],
        }
    )


def disagreements(c: Comparison, limit: int = 12) -> pd.DataFrame:
    """The latest requests where the two models answered differently, newest first, with the kept image (disputes
    are kept); at most as many as `compare` was asked for."""
    return c.disputes.head(limit).reset_index(drop=True)


def comparison_figure(c: Comparison) -> go.Figure:
    """Per window: agreement, and each model's accuracy on the labelled requests (with the difference's interval)."""
    w = c.windows
    titles = ("Agreement between candidate and production", "Accuracy on the same labelled requests")
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.12, subplot_titles=titles)
    agreement = go.Scatter(x=w["window"], y=w["agreement"], mode="lines+markers", name="agreement", line={"color": "#54A24B"})
    fig.add_trace(agreement, row=1, col=1)
    styles = (("production", "#4C78A8", "solid", "circle", 9), ("candidate", "#F58518", "dash", "diamond-open", 13))
    for name, colour, dash, symbol, size in styles:  # drawn so that equal values still show both
        line = {"color": colour, "dash": dash}
        marker = {"symbol": symbol, "size": size}
        trace = go.Scatter(x=w["window"], y=w[name], mode="lines+markers", name=f"{name} accuracy", line=line, marker=marker)
        fig.add_trace(trace, row=2, col=1)
    fig.update_yaxes(tickformat=".0%", range=[0, 1.04], row=1, col=1)  # rates: never an axis past 100%
    fig.update_yaxes(tickformat=".0%", range=[0, 1.04], row=2, col=1)
    labelled = bool(len(w)) and bool(w["production"].notna().any() or w["candidate"].notna().any())
    if not labelled:
        fig.add_annotation(
            text="no window has labelled requests scored by both yet", xref="x2 domain", yref="y2 domain", x=0.5, y=0.5,
            showarrow=False, font={"color": "#888"},
        )  # fmt: skip
    fig.update_layout(height=460, margin={"t": 40, "b": 10, "l": 10, "r": 10}, legend={"orientation": "h", "y": -0.12})
    return fig
