"""Monitoring figures, measured as Failing Loudly (Rabanser et al. 2019) measures drift detectors, over several
split seeds, with no image twice in a window.

    .venv/bin/python bench/monitor_bench.py [--data ../shared/data/bears_small | --demo] [--seeds 5] [--windows 20]

For each seed, the data is re-split 40/20/40 (the largest test share a split allows: the test split is the pool of
clean traffic, never the validation images that form the reference nor the images the properties' reference counts),
the default recipe is trained and promoted, and every pool is scored through the real scoring path
(prediction.predict_images): each test photo as it is, each test photo once per kind (re-encoded as JPEG only: the
control; darker, grayscale, blurred, rotated: the simulator's shift_image, then the same JPEG encoding), and 300 line
drawings. A window is a set of distinct test photos (its classes drawn from the reference's class shares), a share of
which is replaced by their shifted copies (or by drawings): no photo twice in a window, so a window can be no larger
than the pool supports (sizes 50, 100, 150 of about 192 photos; a draw that needs more photos of a class than the pool
has is left out and counted). Each window is tested by the Monitor's own per-window tests (drift._window_tests, with
the page's floors) and judged inside a report of 30 windows, as on the page: Benjamini-Hochberg over all tests of the
report, an alert where an adjusted p < q and the effect reaches its floor.

The alert level is the page's q = 0.05 (drift.ALERT_Q), fixed before this benchmark was rerun on 2026-12-03 and not
changed after; 0.01 is shown beside it for the trade-off. Windows of one seed share its pool and reference, so a
seed is the unit of the false-alarm intervals (mean of the seeds' shares, Student's t over seeds).

1. False alarms: clean windows in reports of 30 clean windows: share of windows with an alert, and of reports with
   one (a clean month that shows an alert somewhere), per window size; which tests fired; the embedding test's p under
   no drift (calibration: shares below 0.05, 0.01, 0.001 and the Kolmogorov-Smirnov distance to uniform).
2. Detection power: share of windows with an alert per kind (re-encoded first: the control), shifted share
   (10/20/50%) and size, each judged in a report with 29 clean windows; and how often the embedding test fired.
3. Label shift (one class three times as frequent): the share of windows each class-mix test flags, the BBSE-based
   test (stats.bbse_shift_test: not on the page) beside the page's two, all three in the report's adjustment.
4. Gradual drift: a share of each day's 100 photos shifted, growing 3 points a day from day 1; days to the first
   alert on the page (a report over the days so far), and with no shift, days to the first false alarm (30 at most).
5. Estimates at 20% of 100-photo windows: mean absolute error of accuracy by ATC and by average confidence, how often
   the ATC interval holds the true accuracy, and the L1 error of the BBSE class mix.
6. Clean simulated traffic: 14 days with no shift through the real simulator (traffic.replay_traffic), judged as the
   Monitor judges them, at 60 and 200 predictions a day, over --sims seeds, on the data as a user has it (its own
   split; the simulator replays test images, so they repeat). --only-simulation runs this figure alone.
The speed over 10,000,000 distinct logged rows is bench/loggen.py's. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from core.data import gather  # noqa: E402
from core.data.images import load_rgb  # noqa: E402
from core.model import registry, runs, scoring  # noqa: E402
from core.production import prediction, prediction_log, traffic  # noqa: E402
from core.production.monitoring import drift, floors, queries, reference, stats, verdict  # noqa: E402
from core.workspace import split_ops, store, workspaces  # noqa: E402
from core.workspace.splits import SplitPlan  # noqa: E402

SHIFTS = ("darker", "grayscale", "blurred", "rotated")
KINDS = ("re-encoded", *SHIFTS, "drawings")
SHARES = (0.1, 0.2, 0.5)
SIZES = (50, 100, 150)
REPORT = 30  # windows per report, as a month of days on the page
LEVELS = (0.01, drift.ALERT_Q)  # a stricter level, to show the trade-off, and the page's (fixed before the rerun)
Q = drift.ALERT_Q
GRADUAL_RATE = 0.03  # of each day's traffic, added per day
GRADUAL_DAYS = 30
GRADUAL_SIZE = 100
DRAWINGS = 300


def trained(data: Path | None, seed: int, resplit: bool = True) -> workspaces.Workspace:
    """The data trained with the default recipe and promoted: re-split 40/20/40 with this seed for the detection
    figures, or with the split a user gets (resplit False) for the clean simulation."""
    ws = workspaces.resolve(f"monitor-bench-{seed}" if resplit else "as-a-user-has-it", create=True)
    if data is None:
        gather.add_demo(ws)
    else:
        gather.ingest(ws, gather.folder_items(data)[0])
    if resplit:
        split_ops.resplit(ws, SplitPlan(seed=seed, valid=0.2, test=0.4))
    summary = runs.train_workspace(ws, runs.defaults(ws))
    registry.promote(ws, summary["version"])
    print(f"seed {seed}: trained {summary['version']} at {summary['size']} px, test accuracy {summary['test_accuracy']:.1%}")
    return ws


def score(
    ws: workspaces.Workspace, predictor: scoring.Predictor, items: list[tuple[str, bytes]], truth: list[str], kind: str
) -> pd.DataFrame:
    preds, failed = prediction.predict_images(predictor, items, 64)
    assert not failed, failed
    frame = reference.with_aspect(prediction_log.to_frame(ws, preds, "simulation", predictor.version))
    return frame.assign(truth=truth, kind=kind).reset_index(drop=True)


def pools(ws: workspaces.Workspace, rng: np.random.Generator) -> dict[str, pd.DataFrame]:
    """Scored predictions, row i of every photo pool being test photo i: as it is, re-encoded, and each shift of it;
    and line drawings."""
    predictor = scoring.load_predictor(ws)
    meta = registry.read_meta(ws, predictor.version)
    catalog = store.images(ws)
    test = catalog[(catalog["split"] == "test") & ~catalog["id"].isin(meta["train_ids"] + meta["valid_ids"])]
    images = [load_rgb(ws.root / p) for p in test["path"]]
    labels = list(test["label"])
    files = [(Path(p).name, (ws.root / p).read_bytes()) for p in test["path"]]  # clean: the files as they are
    out = {"clean": score(ws, predictor, files, labels, "clean")}
    out["re-encoded"] = score(
        ws, predictor, [(f"re{i}.jpg", prediction.encode_jpeg(img)) for i, img in enumerate(images)], labels, "re-encoded"
    )
    for kind in SHIFTS:
        items = [(f"{kind}{i}.jpg", prediction.encode_jpeg(traffic.shift_image(img, kind, rng))) for i, img in enumerate(images)]
        out[kind] = score(ws, predictor, items, labels, kind)
    side = int(np.median(test["width"]))
    drawings = [(f"draw{i}.jpg", prediction.encode_jpeg(traffic.line_drawing(side, rng))) for i in range(DRAWINGS)]
    out["drawings"] = score(ws, predictor, drawings, [prediction_log.NONE_OF_THESE] * DRAWINGS, "drawings")
    per_class = ", ".join(f"{c} {n}" for c, n in test["label"].value_counts().sort_index().items())
    print(f"  pools: {len(test)} test photos ({per_class}), each also re-encoded and shifted 4 ways; {DRAWINGS} drawings")
    return out


@dataclass
class Seed:
    """One split seed: its reference, pools, and the page's floors per window size."""

    ref: reference.DriftReference
    pool: dict[str, pd.DataFrame]
    floors: dict[int, dict[str, float]] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)  # windows the pool could not fill without a repeat, by key

    def __post_init__(self) -> None:
        truth = self.pool["clean"]["truth"].to_numpy(object)
        self.members = [np.flatnonzero(truth == c) for c in self.ref.classes]

    def photos(self, size: int, prior: np.ndarray, rng: np.random.Generator, key: str) -> np.ndarray | None:
        """size distinct test photos whose classes are drawn from `prior`; None (counted) when a class runs short."""
        counts = rng.multinomial(size, prior / prior.sum())
        if any(k > len(m) for k, m in zip(counts, self.members, strict=True)):
            self.skipped[key] = self.skipped.get(key, 0) + 1
            return None
        return np.concatenate([rng.choice(m, int(k), replace=False) for m, k in zip(self.members, counts, strict=True)])

    def window(self, kind: str, share: float, size: int, rng: np.random.Generator) -> pd.DataFrame | None:
        """A window of traffic: distinct photos in the reference's class shares (for label shift, the first class
        three times as frequent), `share` of them shifted as `kind` says (or replaced by drawings)."""
        prior = self.ref.prior.copy()
        if kind == "label shift":
            prior[0] *= 3.0
        k = 0 if kind in ("clean", "label shift") else int(rng.binomial(size, share))
        photos = self.photos(size - k if kind == "drawings" else size, prior, rng, f"{kind} {share:.0%} n={size}")
        if photos is None:
            return None
        clean = self.pool["clean"].iloc[photos]
        if kind == "drawings":
            rows = pd.concat([clean, self.pool["drawings"].iloc[rng.choice(DRAWINGS, k, replace=False)]])
        elif k:
            moved = rng.choice(len(photos), k, replace=False)
            keep = np.setdiff1d(np.arange(len(photos)), moved)
            rows = pd.concat([clean.iloc[keep], self.pool[kind].iloc[photos[moved]]])
        else:
            rows = clean
        return rows.sample(frac=1.0, random_state=int(rng.integers(1 << 31)))

    def tests(self, frame: pd.DataFrame) -> list[stats.DriftTest]:
        """The page's tests of one window, each carrying the floor the page gives it; the BBSE test is added by
        `with_bbse`."""
        n = len(frame)
        row = pd.Series(
            {"predictions": n, "images": n, "ood_images": int(frame["ood"].sum()), "feedback": 0, "feedback_accuracy": None}
        )
        counts = {str(c): int(k) for c, k in frame["predicted"].value_counts().items()}
        size = min(n, floors.FLOOR_WINDOW)
        if size not in self.floors:
            self.floors[size] = floors.reference_floors(self.ref, size)
        found = drift._window_tests(self.ref, row, counts, frame)
        return [replace(t, floor=floors.floor_for(t.metric, self.floors[size], {})) for t in found]

    def bbse(self, frame: pd.DataFrame) -> stats.DriftTest:
        index = {c: i for i, c in enumerate(self.ref.classes)}
        predicted = frame["predicted"].map(index).dropna().astype(int).to_numpy()
        found = stats.bbse_shift_test(
            self.ref.predicted, self.ref.labels, self.ref.prior, self.ref.prior_n, predicted, self.ref.classes, boot=100
        )
        return replace(found, floor=self.floors[min(len(frame), floors.FLOOR_WINDOW)]["class_share"])


def judged(target: list[stats.DriftTest], others: list[list[stats.DriftTest]]) -> list[stats.DriftTest]:
    """The target window's tests adjusted in a report with the other windows (Benjamini-Hochberg over all)."""
    return stats.benjamini_hochberg(target + [t for w in others for t in w])[: len(target)]


def alerts(tests: list[stats.DriftTest], q: float = Q) -> list[str]:
    return [t.metric for t in tests if t.matters(q)]


def interval(shares: list[float]) -> str:
    """Mean of per-seed shares with a 95% Student's t interval over seeds."""
    from scipy.stats import t

    x = np.asarray(shares, float)
    if len(x) < 2:
        return f"{x.mean():.1%} (one seed: no interval)"
    half = float(t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / np.sqrt(len(x)))
    return f"{x.mean():.1%} [{max(0.0, x.mean() - half):.1%}, {min(1.0, x.mean() + half):.1%}]"


Window = tuple[list[stats.DriftTest], stats.DriftTest]  # the page's tests of a window, and its BBSE test


def clean_reports(seed: Seed, size: int, reports: int, rng: np.random.Generator) -> list[list[Window]]:
    out = []
    while len(out) < reports:
        frames = [seed.window("clean", 0, size, rng) for _ in range(REPORT)]
        out.append([(seed.tests(f), seed.bbse(f)) for f in frames if f is not None])
    return out


def false_alarms(seeds: list[Seed], reports: int, rng: np.random.Generator) -> dict[int, list[list[list[Window]]]]:
    """Figure 1; returns each seed's clean windows per size (the reports the power figures judge in)."""
    print(
        f"\n1. false alarms: clean windows of distinct test photos, {reports} reports of {REPORT} windows per seed and size, "
        f"{len(seeds)} seeds; alert = adjusted p < q and effect >= the page's floor"
    )
    print(
        f"   {'n':>4} {'windows':>8}  {'windows alerting, q=0.05':>28}  {'at q=0.01':>22}  {'reports with an alert, q=0.05':>30}"
    )
    clean: dict[int, list] = {}
    fired: dict[str, int] = {}
    mmd_p: list[float] = []
    for size in SIZES:
        per_seed = [clean_reports(s, size, reports, rng) for s in seeds]
        clean[size] = per_seed
        windows, reports_alerting = {q: [] for q in LEVELS}, []
        for found in per_seed:
            flags = {q: [] for q in LEVELS}
            months = []
            for report in found:
                adjusted = stats.benjamini_hochberg([t for w, _ in report for t in w])
                at = 0
                month = False
                for w, _ in report:
                    mine = adjusted[at : at + len(w)]
                    at += len(w)
                    for q in LEVELS:
                        flags[q].append(bool(alerts(mine, q)))
                    month |= bool(alerts(mine))
                    for metric in alerts(mine):
                        fired[metric] = fired.get(metric, 0) + 1
                    mmd_p += [t.p_value for t in w if t.metric == "embedding"]
                months.append(month)
            for q in LEVELS:
                windows[q].append(float(np.mean(flags[q])))
            reports_alerting.append(float(np.mean(months)))
        total = sum(len(w) for found in per_seed for w in found)
        cells = f"{interval(windows[Q]):>28}  {interval(windows[0.01]):>22}  {interval(reports_alerting):>30}"
        print(f"   {size:>4} {total:>8}  {cells}")
    print(f"   tests that raised those alerts (q=0.05): {fired or 'none'}")
    print(f"   embedding (MMD) p in these windows: {calibration(np.asarray(mmd_p))}")
    print("   (the windows of a seed share its pool and its chance difference from the reference: not a calibration)")
    mmd_calibration(seeds, rng)
    return clean


def calibration(p: np.ndarray) -> str:
    p = np.sort(p)
    ks = float(np.max(np.abs(np.arange(1, len(p) + 1) / len(p) - p))) if len(p) else float("nan")
    return (
        f"{len(p)} p-values, below 0.05 {np.mean(p < 0.05):.1%}, below 0.01 {np.mean(p < 0.01):.1%}, below 0.001 "
        f"{np.mean(p < 0.001):.2%}; largest distance from uniform (KS) {ks:.3f}"
    )


def mmd_calibration(seeds: list[Seed], rng: np.random.Generator, draws: int = 200) -> None:
    """The embedding test under an exact null on real embeddings: each seed's held-out embeddings (validation and
    test photos, none trained on) split at random into a reference of the validation set's size and a window."""
    for size in SIZES:
        found = []
        for seed in seeds:
            pool = np.vstack([seed.ref.embedding, np.stack(seed.pool["clean"]["embedding"].map(np.asarray).to_numpy())])
            m = len(seed.ref.embedding)
            for _ in range(draws):
                if m + size > len(pool):
                    break
                order = rng.permutation(len(pool))
                found.append(stats.mmd_test(pool[order[:m]], pool[order[m : m + size]]).p_value)
        print(f"   embedding (MMD) p, random splits of held-out photos, n={size}: {calibration(np.asarray(found))}")


def others(clean: list[list[Window]], rng: np.random.Generator) -> list[Window] | None:
    """29 clean windows of the seed and size to judge a window among; None where the pool made too few."""
    windows = [w for report in clean for w in report]
    if len(windows) < REPORT - 1:
        return None
    return [windows[i] for i in rng.choice(len(windows), REPORT - 1, replace=False)]


def power(seeds: list[Seed], clean: dict[int, list], windows: int, rng: np.random.Generator) -> None:
    print(
        f"\n2. detection power: share of shifted windows with an alert at q = 0.01 / 0.05 (page floors), each judged in a "
        f"report with {REPORT - 1} clean windows; {windows} windows per cell and seed, {len(seeds)} seeds"
    )
    print(f"   {'kind':<11} {'share':>5} " + " ".join(f"{f'n={s}':>11}" for s in SIZES) + "   embedding fired (all sizes)")
    mmd_min = 1.0
    for kind in KINDS:
        for share in SHARES:
            cells, mmd = [], []
            for size in SIZES:
                flags = {q: [] for q in LEVELS}
                for s, seed in enumerate(seeds):
                    for _ in range(windows):
                        frame = seed.window(kind, share, size, rng)
                        context = others(clean[size][s], rng)
                        if frame is None or context is None:
                            continue
                        mine = judged(seed.tests(frame), [w for w, _ in context])
                        for q in LEVELS:
                            flags[q].append(bool(alerts(mine, q)))
                        mmd.append("embedding" in alerts(mine))
                        mmd_min = min([mmd_min, *(t.p_value for t in mine if t.metric == "embedding")])
                cells.append("/".join(f"{np.mean(flags[q]):.0%}" if flags[q] else "-" for q in LEVELS))
            print(f"   {kind:<11} {share:>5.0%} " + " ".join(f"{c:>11}" for c in cells) + f"   {np.mean(mmd):.0%}")
    print(f"   smallest embedding p in a shifted window: {mmd_min:.1e}")


def label_shift(seeds: list[Seed], clean: dict[int, list], windows: int, rng: np.random.Generator) -> None:
    metrics = ("class_mix", "class_share", "class_mix_bbse")
    print(
        "\n3. label shift (the first class three times as frequent): share of windows each test flags (q = 0.05, page "
        "floors), the BBSE-based test added to every window of the report; no shift beside it (false alarms)"
    )
    print(f"   {'':<12} {'n':>4} " + " ".join(f"{m:>15}" for m in metrics) + "   any alert")
    for kind in ("label shift", "clean"):
        for size in SIZES[:2]:
            flags: dict[str, list[bool]] = {m: [] for m in (*metrics, "any")}
            for s, seed in enumerate(seeds):
                for _ in range(windows):
                    frame = seed.window(kind, 0, size, rng)
                    around = others(clean[size][s], rng)
                    if frame is None or around is None:
                        continue
                    context = [w + [b] for w, b in around]
                    mine = judged(seed.tests(frame) + [seed.bbse(frame)], context)
                    fired = alerts(mine)
                    for m in metrics:
                        flags[m].append(m in fired)
                    flags["any"].append(bool(set(fired) - {"class_mix_bbse"}))
            print(
                f"   {kind:<12} {size:>4} "
                + " ".join(f"{np.mean(flags[m]):>15.0%}" for m in metrics)
                + f"   {np.mean(flags['any']):.0%} (the page's tests)"
            )


def gradual(seeds: list[Seed], runs_per_seed: int, rng: np.random.Generator) -> None:
    print(
        f"\n4. gradual drift: each day {GRADUAL_SIZE} distinct photos, {GRADUAL_RATE:.0%} more of them shifted every day "
        f"(day d: {GRADUAL_RATE:.0%} x d); the day the page first shows an alert (its report: the days so far), "
        f"{runs_per_seed} runs per seed"
    )
    for kind in ("darker", "blurred", "drawings", "clean"):
        first: list[float] = []
        for seed in seeds:
            for _ in range(runs_per_seed):
                days: list[list[stats.DriftTest]] = []
                day = np.inf
                for d in range(1, GRADUAL_DAYS + 1):
                    frame = seed.window(kind, min(1.0, GRADUAL_RATE * d) if kind != "clean" else 0.0, GRADUAL_SIZE, rng)
                    if frame is None:
                        continue
                    days.append(seed.tests(frame))
                    if alerts(stats.benjamini_hochberg([t for w in days for t in w])):
                        day = d
                        break
                first.append(day)
        x = np.array(first)
        seen = x[np.isfinite(x)]
        if len(seen):
            q1, med, q3 = np.percentile(seen, [25, 50, 75])
            shifted = "" if kind == "clean" else f"; {GRADUAL_RATE * med:.0%} of that day shifted"
            shown = f"day {med:.0f} (quartiles {q1:.0f}-{q3:.0f}{shifted})"
        else:
            shown = "never"
        label = "no shift (first false alarm)" if kind == "clean" else kind
        print(f"   {label:<29} first alert {shown}; {len(seen)} of {len(x)} runs alerted within {GRADUAL_DAYS} days")


def estimates(seeds: list[Seed], windows: int, rng: np.random.Generator) -> None:
    print(
        "\n5. estimates at 20% of 100-photo windows: mean absolute error (accuracy in points; class mix as L1), and how "
        "often ATC's 95% interval holds the true accuracy"
    )
    for kind in ("clean", *KINDS, "label shift"):
        rows = []
        for seed in seeds:
            ref = seed.ref
            correct = ref.predicted == ref.labels
            index = {c: i for i, c in enumerate(ref.classes)}
            for _ in range(windows):
                frame = seed.window(kind, 0.2, 100, rng)
                if frame is None:
                    continue
                truth = float((frame["truth"] == frame["predicted"]).mean())
                atc = stats.atc_interval(ref.confidence, correct, frame["confidence"].to_numpy())
                conf = stats.average_confidence(frame["confidence"].to_numpy())
                predicted = frame["predicted"].map(index).to_numpy(int)
                mix = np.array(
                    [e.value for e in stats.bbse_class_mix(ref.predicted, ref.labels, predicted, len(ref.classes), boot=20)]
                )
                known = frame["truth"].map(index).dropna().astype(int).to_numpy()
                true_mix = np.bincount(known, minlength=len(ref.classes)) / max(len(known), 1)
                rows.append(
                    (abs(atc.value - truth), abs(conf - truth), atc.low <= truth <= atc.high, float(np.abs(mix - true_mix).sum()))
                )
        e = np.array(rows, float)
        print(
            f"   {kind:<12} ATC {e[:, 0].mean() * 100:5.1f}  average confidence {e[:, 1].mean() * 100:5.1f}  "
            f"ATC interval holds the truth {e[:, 2].mean():4.0%}  BBSE class mix L1 {e[:, 3].mean():.3f}   ({len(e)} windows)"
        )


def clean_simulation(ws: workspaces.Workspace, per_day: int, seed: int) -> str:
    """14 days of traffic with no shift through the real simulator and Monitor, on a copy of the workspace."""
    name = f"sim-{per_day}-{seed}"
    shutil.copytree(ws.root, workspaces.workspaces_dir() / name)
    copy = workspaces.resolve(name)
    cfg = traffic.TrafficConfig(days=14, per_day=per_day, shift_day=14, seed=seed)
    sim = traffic.replay_traffic(copy, cfg)
    report = drift.drift_report(copy, queries.LogFilter(window="day", sources=("simulation",)))
    judged = [w for w in report.windows if w.judged]
    alerting = [w for w in judged if w.alerts(drift.ALERT_Q)]
    metrics = sorted({t.metric for w in alerting for t in w.alerts(drift.ALERT_Q)})
    found = verdict.verdict(report)
    ref = reference.drift_reference(copy, registry.production_version(copy))
    return (
        f"{per_day}/day, seed {seed}: {len(alerting)} of {len(judged)} judged windows alert"
        + (f" ({', '.join(metrics)})" if metrics else "")
        + f"; verdict {found.status}; pool {sim['pool']} test images, each replayed {sim['repeats']:.1f} times; "
        f"{sim['ood_rate_before_shift']:.0%} of the traffic flagged out of domain (validation: {np.mean(ref.ood):.0%})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "bears_small")
    parser.add_argument("--demo", action="store_true")
    parser.add_argument("--seeds", type=int, default=5, help="split seeds (a model trained on each)")
    parser.add_argument("--windows", type=int, default=20, help="windows per cell and seed")
    parser.add_argument("--reports", type=int, default=4, help="clean reports of 30 windows per size and seed")
    parser.add_argument("--gradual", type=int, default=4, help="gradual-drift runs per kind and seed")
    parser.add_argument("--sims", type=int, default=3, help="seeds of the clean 14-day simulation per volume")
    parser.add_argument("--only-simulation", action="store_true", help="figure 6 alone")
    parser.add_argument("--no-simulation", action="store_true", help="figures 1-5 alone")
    args = parser.parse_args()
    os.environ[workspaces.DATA_ROOT_ENV] = tempfile.mkdtemp(prefix="monitor-bench-")
    data = None if args.demo else args.data.resolve()
    if not args.only_simulation:
        seeds = []
        for s in range(1, args.seeds + 1):
            ws = trained(data, s)
            rng = np.random.default_rng(s)
            seeds.append(Seed(reference.drift_reference(ws, registry.production_version(ws)), pools(ws, rng)))
        rng = np.random.default_rng(0)
        clean = false_alarms(seeds, args.reports, rng)
        power(seeds, clean, args.windows, rng)
        label_shift(seeds, clean, args.windows, rng)
        gradual(seeds, args.gradual, rng)
        estimates(seeds, args.windows, rng)
        skipped = {k: v for s in seeds for k, v in s.skipped.items()}
        print(f"\nwindows left out because a class had too few photos left for them: {skipped or 'none'}")
    if not args.no_simulation:
        simulations(trained(data, 1, resplit=False), args.sims)


def simulations(ws: workspaces.Workspace, sims: int) -> None:
    test = int((store.images(ws)["split"] == "test").sum())
    print(
        "\n6. clean simulated traffic, as `simulate --shift-day 14` then Monitor (day windows, the page's floors and "
        f"q = {drift.ALERT_Q}), on the data as a user has it (its own split, {test} test images): windows with any "
        "alert, and the verdict"
    )
    for per_day in (60, 200):
        for seed in range(sims):
            print("   " + clean_simulation(ws, per_day, seed), flush=True)


if __name__ == "__main__":
    main()
