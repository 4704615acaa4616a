"""Which review-queue order buys the most with the fewest labels?

    .venv/bin/python bench/review_bench.py [--folder ../shared/data/bears_small] [--seeds 10] [--ks 25 50 100 200]

A model trained on a small part of the data (`--initial` images, a third per class) meets a production-like
pool: the rest of the training images in arrival order, the later half shifted as a camera in the field shifts
them (darker, blurred or grey, traffic.shift_image). The queue is ordered once by that model, by each ordering:
random, oldest (arrival), uncertainty (1 - top probability) and value (the utility the decision taken is expected
to have lost: core.production.review_order, under an asymmetric utility matrix where acting on a grizzly as
anything else costs 100 and other mistakes 10). The first k of each are labelled (their true class), the model is
retrained on the initial images plus those k, and scored on a test set nothing chose on (held out per seed, half
of it shifted like the pool's later half): accuracy, and utility per image under the expected-utility policy.

Retraining is the head alone, a logistic regression on the frozen pretrained body's features (what the default
recipe's frozen epochs train), so that many seeds fit in minutes: fine-tuning the body is left out. Prints
figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from sklearn.linear_model import LogisticRegression

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.drivetrain.decisions import Policy, decide  # noqa: E402
from core.drivetrain.levers import OUT_OF_DOMAIN, REFER, Utility  # noqa: E402
from core.model import backbones  # noqa: E402
from core.production import review_order  # noqa: E402
from core.production.traffic import shift_image  # noqa: E402

ORDERINGS = ("random", "oldest", "uncertainty", "value")
SIZE = 224


def load(folder: Path) -> tuple[list[Image.Image], np.ndarray, list[str]]:
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir())
    images, labels = [], []
    for c, name in enumerate(classes):
        for path in sorted((folder / name).iterdir()):
            try:
                images.append(Image.open(path).convert("RGB").resize((SIZE, SIZE)))
                labels.append(c)
            except OSError:
                continue
    return images, np.array(labels), classes


def features(images: list[Image.Image]) -> np.ndarray:
    """The default backbone's pooled features (ImageNet weights, frozen), as the tool's model sees the images."""
    model = backbones.build(backbones.OFFLINE, 2)
    model.eval()
    spec = backbones.spec(backbones.OFFLINE)
    mean, std = torch.tensor(spec.mean).view(1, 3, 1, 1), torch.tensor(spec.std).view(1, 3, 1, 1)
    out = []
    with torch.inference_mode():
        for i in range(0, len(images), 32):
            x = torch.from_numpy(np.stack([np.asarray(im) for im in images[i : i + 32]])).permute(0, 3, 1, 2).float() / 255
            out.append(model.body((x - mean) / std).numpy())
    return np.concatenate(out)


def utility(classes: list[str]) -> Utility:
    """Right +10, wrong -10, a grizzly taken for anything else -100; referring pays 0 and costs 2."""
    actions = (*[f"act on {c}" for c in classes], REFER)
    rows = []
    for true in classes:
        row = [10.0 if c == true else (-100.0 if true == "grizzly" else -10.0) for c in classes]
        rows.append((*row, 0.0))
    rows.append((*[-10.0] * len(classes), 0.0))  # out of domain: not in this benchmark
    return Utility(actions, (*[0.0] * len(classes), 2.0), (*classes, OUT_OF_DOMAIN), tuple(rows))


def fit(x: np.ndarray, y: np.ndarray, n_classes: int) -> LogisticRegression:
    model = LogisticRegression(C=1.0, max_iter=3000)
    model.fit(x, y)
    if len(model.classes_) < n_classes:
        raise SystemExit("the initial set lacks a class: raise --initial")
    return model


def scores(model: LogisticRegression, x: np.ndarray, y: np.ndarray, u: Utility) -> tuple[float, float]:
    probs = model.predict_proba(x)
    chosen = decide(u, Policy(), np.log(np.clip(probs, 1e-12, 1)), np.zeros(len(x), bool))
    net = u.net()
    return float((probs.argmax(1) == y).mean()), float(net[y, chosen].mean())


def order(name: str, model: LogisticRegression, x: np.ndarray, u: Utility, rng: np.random.Generator) -> np.ndarray:
    if name == "random":
        return rng.permutation(len(x))
    if name == "oldest":
        return np.arange(len(x))
    probs = model.predict_proba(x)
    if name == "uncertainty":
        return np.argsort(-(1 - probs.max(1)), kind="stable")
    taken = decide(u, Policy(), np.log(np.clip(probs, 1e-12, 1)), np.zeros(len(x), bool))
    return np.argsort(-review_order.utility_lost(u.net(), probs, taken), kind="stable")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--folder", default=str(Path(__file__).resolve().parents[2] / "shared/data/bears_small"))
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--ks", type=int, nargs="+", default=[25, 50, 100, 200])
    parser.add_argument("--initial", type=int, default=24, help="images the first model is trained on")
    parser.add_argument("--test", type=float, default=0.3, help="share held out for scoring")
    args = parser.parse_args()
    torch.manual_seed(0)
    start = time.perf_counter()
    images, labels, classes = load(Path(args.folder))
    shift_rng = np.random.default_rng(0)
    kinds = ("darker", "blurred", "grayscale")
    shifted = [shift_image(im, kinds[i % 3], shift_rng) for i, im in enumerate(images)]
    plain_x, shifted_x = features(images), features(shifted)
    print(f"{len(images)} images of {', '.join(classes)}; features in {time.perf_counter() - start:.0f} s")
    u = utility(classes)
    results: dict[tuple[str, int], list[tuple[float, float]]] = {}
    start_scores = []
    for seed in range(args.seeds):
        rng = np.random.default_rng(seed)
        ids = rng.permutation(len(images))
        n_test = int(len(ids) * args.test)
        test, rest = ids[:n_test], ids[n_test:]
        per_class = args.initial // len(classes)
        initial = np.concatenate([rest[labels[rest] == c][:per_class] for c in range(len(classes))])
        pool = rng.permutation(np.setdiff1d(rest, initial))  # arrival order: random, then the later half shifted
        late = np.arange(len(pool)) >= len(pool) // 2
        pool_x = np.where(late[:, None], shifted_x[pool], plain_x[pool])
        test_late = rng.random(len(test)) < 0.5
        test_x = np.where(test_late[:, None], shifted_x[test], plain_x[test])
        first = fit(plain_x[initial], labels[initial], len(classes))
        start_scores.append(scores(first, test_x, labels[test], u))
        for name in ORDERINGS:
            ranked = order(name, first, pool_x, u, np.random.default_rng(1000 + seed))
            for k in args.ks:
                chosen = ranked[:k]
                model = fit(
                    np.concatenate([plain_x[initial], pool_x[chosen]]),
                    np.concatenate([labels[initial], labels[pool[chosen]]]),
                    len(classes),
                )
                results.setdefault((name, k), []).append(scores(model, test_x, labels[test], u))
    acc0 = np.array(start_scores)
    print(f"seeds {args.seeds}; initial model ({args.initial} images): accuracy {acc0[:, 0].mean():.1%} "
          f"(sd {acc0[:, 0].std(ddof=1):.1%}), utility/image {acc0[:, 1].mean():+.2f}")  # fmt: skip
    print(f"pool per seed: {len(pool)} images (later half shifted); test: {n_test} images (half shifted)")
    print(f"{'ordering':<12}" + "".join(f"{'k=' + str(k):>26}" for k in args.ks))
    for name in ORDERINGS:
        cells = []
        for k in args.ks:
            r = np.array(results[(name, k)])
            cells.append(f"{r[:, 0].mean():.1%} ({r[:, 0].std(ddof=1):.1%}) {r[:, 1].mean():+.2f} ({r[:, 1].std(ddof=1):.2f})")
        print(f"{name:<12}" + "".join(f"{c:>26}" for c in cells))
    print("cells: test accuracy mean (sd over seeds), utility per image mean (sd)")
    print("paired against random on the same seed (same split, same first model): accuracy points, utility; mean [95% CI]")
    for name in ORDERINGS[1:]:
        cells = []
        for k in args.ks:
            d = np.array(results[(name, k)]) - np.array(results[("random", k)])
            half = 1.96 * d.std(axis=0, ddof=1) / np.sqrt(len(d))
            m = d.mean(axis=0)
            cells.append(f"{m[0] * 100:+.1f} [{(m[0] - half[0]) * 100:+.1f},{(m[0] + half[0]) * 100:+.1f}] {m[1]:+.2f}")
        print(f"{name:<12}" + "".join(f"{c:>26}" for c in cells))
    target_k = max(args.ks)
    target = np.mean([a for a, _ in results[("random", target_k)]])
    for name in ORDERINGS:
        reached = [k for k in args.ks if np.mean([a for a, _ in results[(name, k)]]) >= target]
        print(
            f"{name}: reaches random's accuracy at k={target_k} ({target:.1%}) with "
            + (f"k={reached[0]}" if reached else "none of the k tried")
        )
    print(f"total {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
