"""Drift per window of the prediction log against the reference model's drift reference: every test with its
statistic, p, adjusted p and effect; estimates of accuracy and class mix without labels; alerts that name
the change in words, show the images that moved it and the lever to pull.

Only predictions scored by the reference version are judged (another version's confidence, energy and
embedding are not comparable); the report says how many that leaves.
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass, replace

import duckdb
import numpy as np
import pandas as pd

from core.model import registry
from core.production import log_figures, prediction_log
from core.production.monitoring import floors, queries, stats
from core.production.monitoring.queries import LogFilter, window_label
from core.production.monitoring.reference import DriftReference, drift_reference, with_aspect
from core.production.monitoring.stats import DriftTest, Estimate
from core.workspace import store
from core.workspace.paths import Workspace

# Benjamini-Hochberg level over every test of every window shown: under no drift at all, at most 5% of reports
# raise any alert (about one window in 600 of a 30-window report). bench/monitor_bench.py measured 0 of 210
# clean windows alerting at 0.05 and at 0.01 on bears and on the demo, and more power at 0.05 (drawings in 20%
# of 200 predictions: 98% vs 82% of windows; label shift: 75-88% vs 52-78%)
ALERT_Q = 0.05
MIN_FEEDBACK = 10  # labelled predictions a window needs before its accuracy is tested
PER_WINDOW = 500  # predictions sampled per window for the distribution tests (all of them in smaller windows)
PROPERTY_METRICS = ("brightness", "contrast", "saturation", "sharpness", "width", "height", "aspect")
EXAMPLES = 6

LEVERS = {
    "class_mix": "check that the decision policy still pays off with this class mix (Policy page); if the mix "
    "persists, gather more images of the classes that grew and retrain",
    "class_share": "check that the decision policy still pays off with this class mix (Policy page); if the mix "
    "persists, gather more images of the class that grew and retrain",
    "confidence": "review the least confident predictions (they are referred to a person if the policy says so); "
    "gather images like them and retrain",
    "energy": "look at these images: if they are not one of your classes, add an 'other' class or tighten the "
    "out-of-domain threshold; if they are, gather images like them and retrain",
    "embedding": "look at these images: production shows content the training data lacks; gather images like these and retrain",
    "ood_rate": "look at these images: add an 'other' class, tighten the scope statement users see, or gather "
    "images like these if they belong to a class",
    "feedback_accuracy": "retrain on recent feedback (its labels join the data), and check the decision policy",
}
for _m in PROPERTY_METRICS:
    LEVERS[_m] = "gather images like these (the same conditions) and retrain, or fix the camera or upload path"
for _m in ("confidence", "energy", *PROPERTY_METRICS):
    LEVERS[f"{_m}_tails"] = LEVERS[_m]


@dataclass(frozen=True)
class Example:
    id: str
    name: str
    image_path: str | None  # None where the workspace does not keep production images
    predicted: str
    value: float  # the image's value on the alert's metric


@dataclass(frozen=True)
class Estimates:
    """A window's accuracy and class mix without labels, next to accuracy from feedback."""

    accuracy_atc: float
    accuracy_confidence: float
    accuracy_feedback: float | None
    feedback: int
    class_mix: dict[str, Estimate]  # true share of each class, by black-box shift estimation
    predicted_mix: dict[str, float]
    accuracy_atc_low: float | None = None  # ATC's 95% bootstrap interval (reference and window resampled)
    accuracy_atc_high: float | None = None


@dataclass(frozen=True)
class WindowDrift:
    window: str
    n: int  # predictions
    judged: bool  # False: too few distinct images to judge
    tests: tuple[DriftTest, ...]
    estimates: Estimates | None
    images: int = 0  # distinct images among the predictions: what the tests count (a repeat is no new evidence)
    ood_share: float = 0.0  # share of the distinct images flagged out of domain
    feedback: int = 0  # labelled predictions
    feedback_correct: int = 0  # of them, the model was right (a "none of these" on a flagged image counts as right)

    @property
    def repeats(self) -> bool:
        """Whether the window holds few distinct images for its volume (each repeated twice or more on average)."""
        return self.images * 2 <= self.n

    def alerts(self, q: float) -> tuple[DriftTest, ...]:
        return tuple(t for t in self.tests if t.matters(q))

    def too_small(self, q: float) -> tuple[DriftTest, ...]:
        """Changes the tests detect whose effect is below the floor: detected, too small to matter."""
        return tuple(t for t in self.tests if t.significant(q) and not t.matters(q))


@dataclass(frozen=True)
class DriftAlert:
    window: str
    metric: str
    words: str
    effect: float
    p_value: float
    adjusted_p: float
    n: int
    examples: tuple[Example, ...]
    lever: str
    images_kept: bool


@dataclass(frozen=True, eq=False)
class DriftReport:
    reference_version: str
    windows: tuple[WindowDrift, ...]
    alerts: tuple[DriftAlert, ...]
    excluded: int  # predictions in the filter scored by other versions (not judged)
    q: float = ALERT_Q
    chosen_floors: dict[str, float] | None = None  # floors a user set by hand (metric -> floor)
    reference: DriftReference | None = None
    samples: pd.DataFrame | None = None  # the predictions each window was tested on (window label in "label", aspect added)


def _window_tests(ref: DriftReference, row: pd.Series, counts: dict[str, int], sample: pd.DataFrame) -> list[DriftTest]:
    classes = list(ref.classes) + sorted(set(counts) - set(ref.classes))
    ref_counts = np.array([*ref.expected_counts, *[0] * (len(classes) - len(ref.classes))])
    window_counts = np.array([counts.get(c, 0) for c in classes])
    tests = [stats.class_mix_test(ref_counts, window_counts, classes), stats.class_share_test(ref_counts, window_counts, classes)]
    pairs = [("confidence", ref.confidence), ("energy", ref.energy)]
    pairs += [(metric, ref.properties[metric].to_numpy()) for metric in PROPERTY_METRICS]
    for metric, reference in pairs:
        values = sample[metric].to_numpy(float)
        values = values[np.isfinite(values)]  # an image the log could not measure has no properties
        if len(values) < stats.MIN_WINDOW:
            continue
        tests.append(stats.ks_shift(metric, reference, values))  # the whole distribution moved
        tests.append(stats.tail_test(metric, reference, values))  # part of the traffic moved far
    embedding = np.stack(sample["embedding"].map(np.asarray).to_numpy())
    tests.append(stats.mmd_test(ref.embedding, embedding))
    n, flagged = _distinct_ood(row, sample)
    tests.append(stats.rate_test("ood_rate", int(ref.ood.sum()), len(ref.ood), flagged, n, "greater"))
    labelled = int(row["feedback"])
    if labelled >= MIN_FEEDBACK:
        correct = int(row["feedback_correct"]) if "feedback_correct" in row else round(row["feedback_accuracy"] * labelled)
        ref_correct = int((ref.predicted == ref.labels).sum())
        tests.append(stats.rate_test("feedback_accuracy", ref_correct, len(ref.labels), correct, labelled, "less"))
    return tests


SPAN = {"hour": pd.Timedelta(hours=1), "day": pd.Timedelta(days=1), "week": pd.Timedelta(days=7)}


def _judged(
    kept: log_figures.Results,
    reference: str,
    window: str,
    label: str,
    ref: DriftReference,
    row: pd.Series,
    counts: dict[str, int],
    sample: pd.DataFrame,
) -> tuple[list[DriftTest], Estimates]:
    """A window's tests (before the adjustment over all windows) and estimates: kept ones when its inputs are the
    same as when they were kept; a window that still grows (it holds today, UTC) is computed and never kept."""
    figures = [int(row[c]) for c in ("images", "ood_images", "feedback", "feedback_correct")]
    key = log_figures.inputs_key(
        _code(), reference, [*figures, float(row["feedback_accuracy"]), sorted(counts.items())], sample["id"]
    )
    done = window in SPAN and pd.Timestamp(row["window"]) + SPAN[window] <= pd.Timestamp(store.now().date())
    found = kept.get(label, key) if done else None
    if found is not None:
        estimates = dict(found["estimates"])
        estimates["class_mix"] = {c: Estimate(**e) for c, e in estimates["class_mix"].items()}
        return [DriftTest(**t) for t in found["tests"]], Estimates(**estimates)
    tests, estimates = _window_tests(ref, row, counts, sample), _estimates(ref, row, sample)
    if done:
        kept.put(label, key, {"tests": [asdict(t) for t in tests], "estimates": asdict(estimates)})
    return tests, estimates


@functools.cache
def _code() -> str:
    """What a window's kept tests are keyed by besides their inputs: the source that computes them."""
    return log_figures.source_digest(stats, _window_tests, _estimates, _distinct_ood)


def _distinct_ood(row: pd.Series, sample: pd.DataFrame) -> tuple[int, int]:
    """Distinct images in the window, and how many of them were flagged out of domain (from the log's counts when
    the window has them, else from its sample)."""
    if "images" in row and pd.notna(row["images"]):
        return int(row["images"]), int(row["ood_images"])
    return len(sample), int(sample["ood"].astype(bool).sum())


def _estimates(ref: DriftReference, row: pd.Series, sample: pd.DataFrame) -> Estimates:
    index = {c: i for i, c in enumerate(ref.classes)}
    predicted = sample["predicted"].map(index).dropna().astype(int).to_numpy()
    correct = ref.predicted == ref.labels
    atc = stats.atc_interval(ref.confidence, correct, sample["confidence"].to_numpy())
    mix = stats.bbse_class_mix(ref.predicted, ref.labels, predicted, len(ref.classes), boot=100) if len(predicted) else []
    shares = np.bincount(predicted, minlength=len(ref.classes)) / max(len(predicted), 1)
    labelled = int(row["feedback"])
    return Estimates(
        atc.value,
        stats.average_confidence(sample["confidence"].to_numpy()),
        float(row["feedback_accuracy"]) if labelled else None,
        labelled,
        dict(zip(ref.classes, mix, strict=False)),
        {c: float(s) for c, s in zip(ref.classes, shares, strict=True)},
        atc.low,
        atc.high,
    )


class _Columns:
    """A window's sample as numpy columns, each converted once: a window's alerts read the same few (hundreds of
    alerts over a month of windows each converting them again took a quarter of a second)."""

    def __init__(self, sample: pd.DataFrame) -> None:
        self.sample = sample
        self._got: dict[tuple[str, str], np.ndarray] = {}

    def __call__(self, name: str, dtype: type) -> np.ndarray:
        key = (name, dtype.__name__)
        if key not in self._got:
            if name == "embedding":
                column = self.sample["embedding"]
                self._got[key] = np.stack(column.map(np.asarray).to_numpy()) if len(column) else np.zeros((0, 1))
            else:
                self._got[key] = self.sample[name].to_numpy(dtype)
        return self._got[key]


def _examples(test: DriftTest, sample: pd.DataFrame | _Columns, ref: DriftReference) -> tuple[Example, ...]:
    """The window's images that show the change most: the most extreme on the metric, in its direction."""
    col = sample if isinstance(sample, _Columns) else _Columns(sample)
    metric = test.metric.removesuffix("_tails")
    if metric in PROPERTY_METRICS or metric in ("confidence", "energy"):
        values = col(metric, float)
        lowest = test.subject == "low" if test.metric.endswith("_tails") else test.effect < 0
        order = np.argsort(values if lowest else -values, kind="stable")
    elif metric in ("class_mix", "class_share"):
        values = col("confidence", float)
        chosen = np.flatnonzero(col("predicted", object) == test.subject)
        order = chosen[np.argsort(-values[chosen], kind="stable")]
    elif metric == "embedding":
        values = np.linalg.norm(col("embedding", object) - ref.embedding.mean(0), axis=1)
        order = np.argsort(-values, kind="stable")
    elif metric == "ood_rate":
        values = col("energy", float)
        chosen = np.flatnonzero(col("ood", bool))
        order = chosen[np.argsort(-values[chosen], kind="stable")]
    else:  # feedback_accuracy: the mistakes people reported
        values = col("confidence", float)
        labels, predicted = col("feedback_label", object), col("predicted", object)
        right = (labels == predicted) | ((labels == prediction_log.NONE_OF_THESE) & col("ood", bool))
        chosen = np.flatnonzero(pd.notna(labels) & ~right)
        order = chosen[np.argsort(-values[chosen], kind="stable")]
    top = order[:EXAMPLES]
    ids, names, paths, predicted = (col(c, object)[top] for c in ("id", "name", "image_path", "predicted"))
    return tuple(
        Example(str(i), str(n), p if isinstance(p, str) else None, str(c), float(v))
        for i, n, p, c, v in zip(ids, names, paths, predicted, values[top], strict=True)
    )


def examples_for(report: DriftReport, metric: str, window: str) -> tuple[Example, ...]:
    """The window's images that show most of what one metric measures (as an alert on it would show)."""
    if report.reference is None or report.samples is None:
        return ()
    test = next((t for w in report.windows if w.window == window for t in w.tests if t.metric == metric), None)
    sample = report.samples[report.samples["label"] == window]
    return _examples(test, sample, report.reference) if test is not None and len(sample) else ()


def drift_report(
    ws: Workspace, f: LogFilter = LogFilter(), version: str | None = None, con: duckdb.DuckDBPyConnection | None = None
) -> DriftReport:
    """Every window of the filtered log tested against `version`'s reference (default: f.version, else
    production), each distinct image once; Benjamini-Hochberg over all tests; an alert needs a significant test
    and an effect at least as large as the metric's floor; alerts with examples and levers."""
    with store.reuse(ws, con) as c:  # one connection for every query
        reference_version = version or f.version or registry.production_version(ws, c)
        if reference_version is None:
            return DriftReport("", (), (), 0)
        ref = drift_reference(ws, reference_version)
        judged_filter = replace(f, version=reference_version)
        everything = queries.count(ws, replace(f, version=None), c) if f.version is None else None
        win = queries.windows(ws, judged_filter, c)
        mix = queries.class_mix(ws, judged_filter, c)
        samples = queries.window_samples(ws, judged_filter, PER_WINDOW, c)
    chosen = floors.chosen_floors(ws)
    excluded = everything - int(win["predictions"].sum()) if everything is not None else 0
    labels = {w: window_label(w) for w in samples["window"].unique()}
    samples = with_aspect(samples).assign(
        predicted=samples["predicted"].astype(object),  # plain strings: compared per row below
        label=samples["window"].map(labels),
    )
    samples = samples.drop_duplicates(["window", "sha256"])  # an image sent again is no new evidence
    kept = log_figures.Results(ws, "drift", queries.filter_key(judged_filter), reference_version)
    reference = log_figures.fingerprint(
        ref.labels, ref.predicted, ref.confidence, ref.energy, ref.embedding, ref.ood, ref.properties, ref.prior,
        list(ref.classes), [ref.prior_n],
    )  # fmt: skip
    pending: list[tuple[WindowDrift, pd.Series | None, list[DriftTest], pd.DataFrame | None, Estimates | None]] = []
    for _, row in win.iterrows():
        label, n, images = window_label(row["window"]), int(row["predictions"]), int(row["images"])
        shell = WindowDrift(
            label, n, False, (), None, images, float(row["ood_images"]) / max(images, 1), int(row["feedback"]),
            int(row["feedback_correct"]),
        )  # fmt: skip
        if images < stats.MIN_WINDOW:
            pending.append((shell, None, [], None, None))  # too few distinct images to judge
            continue
        sample = samples[samples["window"] == row["window"]]
        part = mix[mix["window"] == row["window"]]
        counts = {str(c): int(k) for c, k in zip(part["predicted"], part["images"], strict=True)}
        tests, estimates = _judged(kept, reference, f.window, label, ref, row, counts, sample)
        pending.append((shell, row, tests, sample, estimates))
    kept.save()
    adjusted = iter(stats.benjamini_hochberg([t for _, _, tests, _, _ in pending for t in tests]))
    computed: dict[tuple[int, int], dict[str, float]] = {}  # floors per (sample size, labelled): windows share them
    windows: list[WindowDrift] = []
    alerts: list[DriftAlert] = []
    for shell, row, tests, sample, estimates in pending:
        if row is None or sample is None:
            windows.append(shell)
            continue
        key = (min(len(sample), floors.FLOOR_WINDOW), min(shell.feedback, floors.FLOOR_WINDOW))
        if key not in computed:
            computed[key] = floors.reference_floors(ref, *key)
        done = tuple(replace(t, floor=floors.floor_for(t.metric, computed[key], chosen)) for t in (next(adjusted) for _ in tests))
        windows.append(replace(shell, judged=True, tests=done, estimates=estimates))
        kept = bool(sample["image_path"].notna().any())
        columns = _Columns(sample)
        for t in done:
            if t.matters(ALERT_Q):
                examples = _examples(t, columns, ref)
                alerts.append(
                    DriftAlert(
                        shell.window, t.metric, t.words, t.effect, t.p_value, t.adjusted_p, t.n, examples, LEVERS[t.metric], kept
                    )
                )
    return DriftReport(reference_version, tuple(windows), tuple(alerts), excluded, ALERT_Q, chosen, ref, samples)
