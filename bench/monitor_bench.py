"""Monitoring figures, measured as Failing Loudly (Rabanser et al. 2019) measures drift detectors.

    .venv/bin/python bench/monitor_bench.py [--data ../shared/data/bears_small | --demo] [--windows 40]

Trains the default recipe on a workspace re-split 50/20/30 (the test split is the pool of clean traffic:
replayed, never the validation images that form the reference), promotes it, then scores through the real
scoring path (prediction.predict_images) every test image as it is, every test image once per shift
(darker, grayscale, blurred, rotated: the simulator's shift_image) and 300 line drawings. Windows are drawn
from these scored pools (distinct images first: an image repeats within a window only when the window is
larger than its pool, and the figures say how often), tested by the Monitor's own per-window tests
(drift._window_tests, each distinct image once, as the page does), and every window is judged inside a 30-window
report, as on the page: Benjamini-Hochberg over all tests of that report, alert when an adjusted p < q (the page's 0.05, and
0.01 beside it to show the trade-off).

1. False alarms: clean windows of 200 predictions; share of windows with any alert, without and with the page's floors
   (an alert also needs an effect at least the floor: drift.floors).
2. Detection power: share of shifted windows with any alert, per kind, share of the window shifted
   (10/20/50%) and window size (50/100/200/500). Label shift: one class three times as frequent as in
   the reference. Every window's classes follow the reference's class shares (drawn per class from
   the pool: the test pool alone holds a few hundred images, whose mix differs from the population's).
3. Estimates: mean absolute error of accuracy by ATC and by average confidence, and the L1 error of the
   BBSE class mix, per kind at 20% of 200-prediction windows (drawings count as errors: no class fits).
4. Speed: drift_report over 30 daily windows of 1,000,000 logged rows (database reads included).
5. Clean simulated traffic: 14 days with no shift through the real simulator (traffic.replay_traffic), judged as
   the Monitor judges them (drift_report with its floors, verdict.verdict): windows alerting, and the verdict,
   at 60 (the default) and 200 predictions a day, over --sims seeds, on the data as a user has it (trained
   again on its own split, not re-split). --only-simulation runs this figure alone.
Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from dataclasses import replace
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

KINDS = ("darker", "grayscale", "blurred", "rotated", "drawings")
SHARES = (0.1, 0.2, 0.5)
SIZES = (50, 100, 200, 500)
REPORT = 30  # windows per report, as a month of days on the page
LEVELS = (0.01, drift.ALERT_Q)  # a stricter level, to show the trade-off, and the page's


def trained(data: Path | None, seed: int, resplit: bool = True) -> workspaces.Workspace:
    """The data trained with the default recipe and promoted: re-split 50/20/30 for the detection figures, or
    with the split a user gets (resplit False) for the clean simulation."""
    ws = workspaces.resolve("monitor-bench" if resplit else "as-a-user-has-it", create=True)
    if data is None:
        gather.add_demo(ws)
    else:
        gather.ingest(ws, gather.folder_items(data)[0])
    if resplit:
        split_ops.resplit(ws, SplitPlan(seed=seed, valid=0.2, test=0.3))
    summary = runs.train_workspace(ws, runs.defaults(ws))
    registry.promote(ws, summary["version"])
    print(f"trained {summary['version']} at {summary['size']} px: test accuracy {summary['test_accuracy']:.1%}")
    return ws


def score(
    ws: workspaces.Workspace, predictor: scoring.Predictor, items: list[tuple[str, bytes]], truth: list[str], kind: str
) -> pd.DataFrame:
    preds, failed = prediction.predict_images(predictor, items, 64)
    assert not failed, failed
    frame = reference.with_aspect(prediction_log.to_frame(ws, preds, "simulation", predictor.version))
    return frame.assign(truth=truth, kind=kind)


def pools(ws: workspaces.Workspace, rng: np.random.Generator) -> dict[str, pd.DataFrame]:
    """Scored predictions: the clean test images, each shift of them, and line drawings."""
    predictor = scoring.load_predictor(ws)
    meta = registry.read_meta(ws, predictor.version)
    catalog = store.images(ws)
    test = catalog[(catalog["split"] == "test") & ~catalog["id"].isin(meta["train_ids"] + meta["valid_ids"])]
    images = [load_rgb(ws.root / p) for p in test["path"]]
    labels = list(test["label"])
    files = [(Path(p).name, (ws.root / p).read_bytes()) for p in test["path"]]  # clean: the files as they are
    out = {"clean": score(ws, predictor, files, labels, "clean")}
    for kind in KINDS[:-1]:
        items = [(f"{kind}{i}.jpg", prediction.encode_jpeg(traffic.shift_image(img, kind, rng))) for i, img in enumerate(images)]
        out[kind] = score(ws, predictor, items, labels, kind)
    side = int(np.median(test["width"]))
    drawings = [(f"draw{i}.jpg", prediction.encode_jpeg(traffic.line_drawing(side, rng))) for i in range(300)]
    out["drawings"] = score(ws, predictor, drawings, [prediction_log.NONE_OF_THESE] * len(drawings), "drawings")
    print(f"pools: {len(test)} clean test images (and one shifted copy of each per kind), 300 drawings")
    return out


def distinct_first(members: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """count of members, each once before any repeats (a shuffled pass, then another): production traffic is
    distinct images, and an image twice in one window makes the distribution tests' p-values too small."""
    passes = [rng.permutation(members) for _ in range(-(-count // max(len(members), 1)))]
    return np.concatenate(passes)[:count] if passes else members[:0]


def by_class(frame: pd.DataFrame, classes: tuple[str, ...], shares: np.ndarray, n: int, rng: np.random.Generator) -> pd.DataFrame:
    """n rows of frame whose true classes follow `shares` (within each class, distinct images first)."""
    counts = rng.multinomial(n, shares / shares.sum())
    truth = frame["truth"].to_numpy(object)
    rows = [distinct_first(np.flatnonzero(truth == c), int(k), rng) for c, k in zip(classes, counts, strict=True)]
    return frame.iloc[np.concatenate(rows)]


def window(
    pool: dict[str, pd.DataFrame], kind: str, share: float, size: int, rng: np.random.Generator, ref: reference.DriftReference
) -> pd.DataFrame:
    """A window of traffic: classes in the reference's proportions (the test pool alone holds a few hundred
    images, whose own class mix differs from the population's by chance), part of it shifted as `kind` says."""
    prior = ref.prior.copy()
    if kind == "label shift":  # one class (the first) three times as frequent as it is in the reference
        prior[0] *= 3.0
        return by_class(pool["clean"], ref.classes, prior, size, rng)
    k = 0 if kind == "clean" else int((rng.random(size) < share).sum())
    clean = by_class(pool["clean"], ref.classes, prior, size - k, rng)
    if kind == "drawings":
        moved = pool[kind].iloc[distinct_first(np.arange(len(pool[kind])), k, rng)]
    else:
        moved = by_class(pool[kind], ref.classes, prior, k, rng) if k else pool["clean"].iloc[:0]
    return pd.concat([clean, moved]).sample(frac=1.0, random_state=int(rng.integers(1 << 31)))


FLOORS: dict[int, dict[str, float]] = {}  # window size -> the page's default floors (floors.reference_floors)


def tests_of(ref: reference.DriftReference, frame: pd.DataFrame) -> list[stats.DriftTest]:
    """The page's tests of one window: each distinct image once (an image sent twice is no new evidence), each
    test carrying the floor the page would give it (the reference's own window-to-window variability)."""
    frame = frame.drop_duplicates("sha256")
    n = len(frame)
    row = pd.Series(
        {"predictions": n, "images": n, "ood_images": int(frame["ood"].sum()), "feedback": 0, "feedback_accuracy": None}
    )
    counts = {str(c): int(n) for c, n in frame["predicted"].value_counts().items()}
    size = min(n, floors.FLOOR_WINDOW)
    if size not in FLOORS:
        FLOORS[size] = floors.reference_floors(ref, size)
    tests = drift._window_tests(ref, row, counts, frame)
    return [replace(t, floor=floors.floor_for(t.metric, FLOORS[size], {})) for t in tests]


def strongest(target: list[stats.DriftTest], others: list[list[stats.DriftTest]]) -> tuple[float, float]:
    """The target window's smallest adjusted p in a report with the other windows (BH over all tests): it
    raises an alert at level q when this is below q. First over all its tests (no floors, as before issue 20),
    then over the tests whose effect reaches the floor (the page's alerts)."""
    adjusted = stats.benjamini_hochberg(target + [t for w in others for t in w])[: len(target)]
    above = [t.adjusted_p for t in adjusted if abs(t.effect) >= t.floor]
    return min(t.adjusted_p for t in adjusted), min(above, default=1.0)


def shares(found: list[tuple[float, float]]) -> str:
    """Share of windows alerting at each level (the stricter first, then the page's), without floors | with."""
    ps = np.array(found)
    return " | ".join("/".join(f"{np.mean(ps[:, k] < q):.0%}" for q in LEVELS) for k in (0, 1))


def distinct(frame: pd.DataFrame) -> float:
    return frame["id"].nunique() / max(len(frame), 1)


def accuracy_errors(ref: reference.DriftReference, frame: pd.DataFrame) -> tuple[float, float, float]:
    truth_acc = float((frame["truth"] == frame["predicted"]).mean())
    threshold = stats.atc_threshold(ref.confidence, ref.predicted == ref.labels)
    atc = stats.atc_accuracy(frame["confidence"].to_numpy(), threshold)
    conf = stats.average_confidence(frame["confidence"].to_numpy())
    index = {c: i for i, c in enumerate(ref.classes)}
    predicted = frame["predicted"].map(index).to_numpy(int)
    mix = np.array([e.value for e in stats.bbse_class_mix(ref.predicted, ref.labels, predicted, len(ref.classes), boot=20)])
    known = frame["truth"].map(index).dropna().astype(int).to_numpy()
    true_mix = np.bincount(known, minlength=len(ref.classes)) / max(len(known), 1)
    return abs(atc - truth_acc), abs(conf - truth_acc), float(np.abs(mix - true_mix).sum())


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


def speed(ws: workspaces.Workspace, pool: dict[str, pd.DataFrame], n: int, rng: np.random.Generator) -> None:
    everything = pd.concat(pool.values(), ignore_index=True)
    rows = everything.iloc[rng.integers(len(everything), size=n)].reset_index(drop=True)
    rows = rows.assign(
        id=[f"{i:012x}" for i in range(n)],
        ts=pd.Timestamp("2026-01-01") + pd.to_timedelta(np.arange(n) * (30 * 86_400 / n), unit="s"),
    )
    t0 = time.perf_counter()
    with store.connect(ws) as con:
        con.register("rows", rows[list(prediction_log.COLUMNS)])
        cols = ", ".join(prediction_log.COLUMNS)
        con.execute(f"INSERT INTO predictions ({cols}) SELECT {cols} FROM rows")
    print(f"\n4. speed: {prediction_log.count(ws):,} rows logged ({time.perf_counter() - t0:.1f} s to insert)")
    for attempt in range(2):
        t0 = time.perf_counter()
        report = drift.drift_report(ws, queries.LogFilter(window="day", sources=("simulation",)))
        wall = time.perf_counter() - t0
        tests = sum(len(w.tests) for w in report.windows)
        print(
            f"   drift_report over {len(report.windows)} daily windows, {tests} tests: {wall:.2f} s"
            + (" (warm)" if attempt else "")
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "bears_small")
    parser.add_argument("--demo", action="store_true")
    parser.add_argument("--windows", type=int, default=40, help="windows per kind, share and size")
    parser.add_argument("--clean", type=int, default=210, help="clean 200-prediction windows for the false-alarm share")
    parser.add_argument("--sims", type=int, default=3, help="seeds of the clean 14-day simulation per volume")
    parser.add_argument("--only-simulation", action="store_true", help="figure 5 alone")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    os.environ[workspaces.DATA_ROOT_ENV] = tempfile.mkdtemp(prefix="monitor-bench-")
    rng = np.random.default_rng(args.seed)
    if args.only_simulation:
        simulations(trained(None if args.demo else args.data.resolve(), args.seed, resplit=False), args.sims)
        return
    ws = trained(None if args.demo else args.data.resolve(), args.seed)
    pool = pools(ws, rng)
    ref = reference.drift_reference(ws, registry.production_version(ws))
    print(f"reference: {len(ref.labels)} validation images, {len(ref.properties)} images for the properties")

    clean = {
        size: [tests_of(ref, window(pool, "clean", 0, size, rng, ref)) for _ in range(max(REPORT, args.windows))]
        for size in SIZES
    }
    repeats = {size: np.mean([distinct(window(pool, "clean", 0, size, rng, ref)) for _ in range(20)]) for size in SIZES}
    print("distinct images per clean window: " + ", ".join(f"n={s}: {r:.0%}" for s, r in repeats.items()))
    false_200 = [tests_of(ref, window(pool, "clean", 0, 200, rng, ref)) for _ in range(args.clean)]
    groups = [false_200[i : i + REPORT] for i in range(0, len(false_200), REPORT)]
    lowest = [strongest(w, g[:k] + g[k + 1 :]) for g in groups for k, w in enumerate(g)]
    which: dict[str, int] = {}
    for g in groups:
        for t in stats.benjamini_hochberg([t for w in g for t in w]):
            if t.adjusted_p < LEVELS[-1]:
                key = t.metric if abs(t.effect) >= t.floor else f"{t.metric} (below floor)"
                which[key] = which.get(key, 0) + 1
    print(
        f"\n1. false alarms: share of {len(false_200)} clean 200-prediction windows that raise any alert, at q = "
        + " / ".join(map(str, LEVELS))
        + f": {shares(lowest)}"
        + (f"; tests that fired at {LEVELS[-1]}: {which}" if which else "")
    )

    print(
        f"\n2. detection power: share of shifted windows with any alert at q = {' / '.join(map(str, LEVELS))} "
        f"(each judged in a report with {REPORT - 1} clean windows), without floors | with the page's floors"
    )
    print(f"   {'kind':<12} {'share':>5} " + " ".join(f"{f'n={s}':>15}" for s in SIZES))
    for kind in (*KINDS, "label shift"):
        for share in SHARES if kind != "label shift" else (None,):
            cells = []
            for size in SIZES:
                ps = []
                for _ in range(args.windows):
                    others = [clean[size][i] for i in rng.choice(len(clean[size]), REPORT - 1, replace=False)]
                    ps.append(strongest(tests_of(ref, window(pool, kind, share or 0, size, rng, ref)), others))
                cells.append(f"{shares(ps):>15}")
            print(f"   {kind:<12} {'' if share is None else f'{share:.0%}':>5} " + " ".join(cells))

    print("\n3. estimates at 20% of 200-prediction windows: mean absolute error (accuracy in points, class mix as L1)")
    for kind in ("clean", *KINDS, "label shift"):
        errors = np.array([accuracy_errors(ref, window(pool, kind, 0.2, 200, rng, ref)) for _ in range(args.windows)])
        print(
            f"   {kind:<12} ATC {errors[:, 0].mean() * 100:5.1f}  average confidence {errors[:, 1].mean() * 100:5.1f}  "
            f"BBSE class mix L1 {errors[:, 2].mean():.3f}"
        )
    speed(ws, pool, args.rows, rng)
    simulations(trained(None if args.demo else args.data.resolve(), args.seed, resplit=False), args.sims)


def simulations(ws: workspaces.Workspace, sims: int) -> None:
    test = int((store.images(ws)["split"] == "test").sum())
    print(
        "\n5. clean simulated traffic, as `simulate --shift-day 14` then Monitor (day windows, the page's floors and "
        f"q = {drift.ALERT_Q}), on the data as a user has it (its own split, {test} test images): windows with any "
        "alert, and the verdict"
    )
    for per_day in (60, 200):
        for seed in range(sims):
            print("   " + clean_simulation(ws, per_day, seed), flush=True)


if __name__ == "__main__":
    main()
