"""The statistics monitoring rests on, as pure functions of numbers: two-sample tests of a window against
the reference (itself a sample), effects a person can read, multiple-testing control, and estimates of
the class mix and the accuracy without labels.

- one number per image (confidence, energy, an image property): two-sample Kolmogorov-Smirnov; effect:
  the shift of the median in reference standard deviations, and the change in words;
- the predicted-class mix: chi-square on the 2 x K table; effect: total variation distance;
- a rate (out-of-domain, accuracy from feedback): Fisher's exact test against the reference's own counts;
- the embedding: maximum mean discrepancy on random Fourier features (linear time) with an analytic p (its null
  distribution, a weighted sum of chi-squares, through Liu, Tang and Zhang's approximation);
- Benjamini-Hochberg across every test of every window shown;
- class mix without labels: black-box shift estimation (Lipton et al. 2018); accuracy without labels:
  average thresholded confidence (Garg et al. 2022) and average confidence.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

MIN_WINDOW = 30  # fewer predictions: "too few predictions to judge", no test


def fisher_greater(a: np.ndarray | int, b: np.ndarray | int, c: np.ndarray | int, d: np.ndarray | int) -> np.ndarray:
    """One-sided Fisher's exact p for [[a, b], [c, d]]: the first row's share of the first column is higher.
    The hypergeometric tail directly, vectorised (the same p as scipy's fisher_exact, far faster)."""
    from scipy.stats import hypergeom

    a, b, c, d = (np.asarray(x, np.int64) for x in (a, b, c, d))
    return np.asarray(hypergeom.sf(a - 1, a + b + c + d, a + c, a + b), float)


@dataclass(frozen=True)
class DriftTest:
    """One metric of one window against the reference."""

    metric: str
    statistic: float
    p_value: float
    effect: float  # median shift in reference SDs; total variation; difference of rates; MMD
    value: float  # the window's median / rate / share
    reference: float  # the reference's
    n: int  # the window's sample for this test
    n_reference: int
    words: str  # the change as a person says it
    adjusted_p: float = math.nan  # after Benjamini-Hochberg over every test reported together
    subject: str = ""  # what moved most, where that is one thing (the class, for the class mix)
    floor: float = 0.0  # the smallest effect that matters (drift.floors): below it a change is detected, too small to matter

    def significant(self, q: float) -> bool:
        return self.adjusted_p < q

    def matters(self, q: float) -> bool:
        """An alert: significant after multiple-testing control, and an effect at least as large as the floor."""
        return self.significant(q) and abs(self.effect) >= self.floor


# metric -> (word when the window is lower, word when higher)
DIRECTIONS = {
    "brightness": ("darker", "brighter"),
    "contrast": ("flatter (less contrast)", "more contrasted"),
    "saturation": ("greyer (less colour)", "more colourful"),
    "sharpness": ("blurrier", "sharper"),
    "width": ("narrower", "wider"),
    "height": ("shorter", "taller"),
    "aspect": ("taller in shape", "wider in shape"),
    "confidence": ("less confident", "more confident"),
    "energy": ("more in-domain-like", "more out-of-domain-like"),  # energy grows for unfamiliar inputs
}
NOUNS = {"confidence": "predictions", "energy": "images"}


def _describe(metric: str, value: float, reference: float) -> str:
    lower, higher = DIRECTIONS.get(metric, ("lower", "higher"))
    word = lower if value < reference else higher
    noun = NOUNS.get(metric, "images")
    if reference and np.isfinite(reference) and abs(reference) > 1e-9:
        change = f"{abs(value / reference - 1):.0%} "
    else:
        change = ""
    return f"{noun} {change}{word} than the reference: median {metric} {value:.3g} vs {reference:.3g}"


def ks_shift(metric: str, reference: np.ndarray, window: np.ndarray) -> DriftTest:
    """Two-sample KS on one number per image; effect: median shift in reference standard deviations."""
    from scipy.stats import ks_2samp

    ref = np.asarray(reference, float)
    win = np.asarray(window, float)
    ref, win = ref[np.isfinite(ref)], win[np.isfinite(win)]
    result = ks_2samp(ref, win, method="asymp")  # exact is slow past a few hundred and changes nothing here
    ref_med, win_med = float(np.median(ref)), float(np.median(win))
    sd = float(np.std(ref, ddof=1)) if len(ref) > 1 else 0.0
    effect = (win_med - ref_med) / sd if sd > 0 else 0.0
    return DriftTest(
        metric, float(result.statistic), float(result.pvalue), effect, win_med, ref_med, len(win), len(ref),
        _describe(metric, win_med, ref_med),
    )  # fmt: skip


def tail_test(metric: str, reference: np.ndarray, window: np.ndarray) -> DriftTest:
    """Whether more of the window than of the reference lies beyond the reference's extremes (its lowest and
    highest few percent): Fisher's exact test per tail against the reference's own counts, the smaller p
    doubled. Far more sensitive than KS when part of the traffic changes a lot, as when one camera or one
    source starts sending dark, blurred or foreign images among normal ones."""
    ref = np.asarray(reference, float)
    win = np.asarray(window, float)
    ref, win = ref[np.isfinite(ref)], win[np.isfinite(win)]
    tail = max(0.01, 5.0 / max(len(ref), 1))  # a few reference images in each tail, at least
    low, high = np.quantile(ref, tail), np.quantile(ref, 1.0 - tail)
    beyond = {"low": ((ref < low).sum(), (win < low).sum()), "high": ((ref > high).sum(), (win > high).sum())}
    ps = {side: float(fisher_greater(w, len(win) - w, r, len(ref) - r)) for side, (r, w) in beyond.items()}
    side = min(ps, key=lambda k: ps[k])
    p, (r, w) = ps[side], (int(beyond[side][0]), int(beyond[side][1]))
    lower, higher = DIRECTIONS.get(metric, ("lower", "higher"))
    share, ref_share = w / max(len(win), 1), r / max(len(ref), 1)
    bound = low if side == "low" else high
    words = (
        f"{share:.0%} of {NOUNS.get(metric, 'images')} {lower if side == 'low' else higher} than all but "
        f"{tail:.0%} of the reference ({metric} {'below' if side == 'low' else 'above'} {bound:.3g}; "
        f"{ref_share:.0%} of the reference)"
    )
    effect = (share - ref_share) * (-1 if side == "low" else 1)
    return DriftTest(
        f"{metric}_tails", float(share - ref_share), min(1.0, 2 * float(p)), effect, share, ref_share, len(win), len(ref),
        words, subject=side,
    )  # fmt: skip


def class_mix_test(reference_counts: np.ndarray, window_counts: np.ndarray, classes: Sequence[str]) -> DriftTest:
    """Chi-square on the 2 x K table of predicted classes; effect: total variation distance of the shares."""
    from scipy.stats import chi2_contingency

    ref = np.asarray(reference_counts, float)
    win = np.asarray(window_counts, float)
    keep = (ref + win) > 0
    ref_share, win_share = ref / max(ref.sum(), 1), win / max(win.sum(), 1)
    tvd = 0.5 * float(np.abs(ref_share - win_share).sum())
    if keep.sum() < 2:
        statistic, p = 0.0, 1.0
    else:
        statistic, p, _, _ = chi2_contingency(np.vstack([ref[keep], win[keep]]))
    moved = int(np.argmax(np.abs(win_share - ref_share)))
    words = (
        f"class mix moved by {tvd:.0%} (total variation): {classes[moved]!r} is {win_share[moved]:.0%} of "
        f"predictions vs {ref_share[moved]:.0%} expected from the reference"
    )
    return DriftTest(
        "class_mix", float(statistic), float(p), tvd, float(win_share[moved]), float(ref_share[moved]),
        int(win.sum()), int(ref.sum()), words, subject=str(classes[moved]),
    )  # fmt: skip


def class_share_test(reference_counts: np.ndarray, window_counts: np.ndarray, classes: Sequence[str]) -> DriftTest:
    """The class whose share moved most, by Fisher's exact test on its count against the reference's, the p
    multiplied by the number of classes (Bonferroni): more sensitive than the chi-square when one class
    grows or shrinks, as when one kind of customer starts coming more often."""
    ref = np.round(np.asarray(reference_counts, float)).astype(int)
    win = np.asarray(window_counts, int)
    n_ref, n_win = int(ref.sum()), int(win.sum())
    more = fisher_greater(win, n_win - win, ref, n_ref - ref)  # the window has more of the class
    fewer = fisher_greater(ref, n_ref - ref, win, n_win - win)  # the window has less of it
    two_sided = np.minimum(1.0, 2 * np.minimum(more, fewer))
    two_sided[(ref + win) == 0] = 1.0
    i = int(np.argmin(two_sided))
    p = float(two_sided[i])
    share, expected = win[i] / max(n_win, 1), ref[i] / max(n_ref, 1)
    words = f"{classes[i]!r} is {share:.0%} of predictions vs {expected:.0%} expected from the reference"
    return DriftTest(
        "class_share", share - expected, min(1.0, p * len(classes)), share - expected, share, expected, n_win, n_ref,
        words, subject=str(classes[i]),
    )  # fmt: skip


def rate_test(metric: str, ref_k: int, ref_n: int, win_k: int, win_n: int, alternative: str) -> DriftTest:
    """Fisher's exact test of a window's rate against the reference's own counts (the reference is a sample).
    alternative: 'greater' (alarm when the window's rate is higher, as OOD) or 'less' (as accuracy)."""
    # rows: window, reference; columns: event, no event. 'greater': the window's rate is higher
    if alternative == "greater":
        p = float(fisher_greater(win_k, win_n - win_k, ref_k, ref_n - ref_k))
    else:
        p = float(fisher_greater(ref_k, ref_n - ref_k, win_k, win_n - win_k))
    value, reference = win_k / max(win_n, 1), ref_k / max(ref_n, 1)
    name = {"ood_rate": "out-of-domain rate", "feedback_accuracy": "accuracy from feedback"}.get(metric, metric)
    words = f"{name} {value:.1%} vs {reference:.1%} in the reference ({win_k} of {win_n})"
    return DriftTest(metric, value - reference, float(p), value - reference, value, reference, win_n, ref_n, words)


def _fourier_features(x: np.ndarray, scale: float, dim: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    w = rng.normal(0.0, 1.0 / scale, (x.shape[1], dim))
    b = rng.uniform(0, 2 * np.pi, dim)
    return np.sqrt(2.0 / dim) * np.cos(x @ w + b)


def mmd_features(reference: np.ndarray, rows: np.ndarray, dim: int = 128, seed: int = 0) -> np.ndarray:
    """Random Fourier features of `rows` for a Gaussian kernel whose bandwidth is the median distance between
    reference embeddings (from the reference alone, so a window never changes how the reference is mapped)."""
    ref = np.asarray(reference, np.float64)
    rng = np.random.default_rng(seed)
    sample = ref[rng.choice(len(ref), min(len(ref), 200), replace=False)]
    dists = np.sqrt(((sample[:, None, :] - sample[None, :, :]) ** 2).sum(-1))
    scale = float(np.median(dists[np.triu_indices(len(sample), 1)])) or 1.0
    return _fourier_features(np.asarray(rows, np.float64), scale, dim, seed)


def mmd_test(reference: np.ndarray, window: np.ndarray, dim: int = 128, seed: int = 0) -> DriftTest:
    """Maximum mean discrepancy between embeddings with a Gaussian kernel (median-distance bandwidth, from
    the reference alone), approximated by random Fourier features.

    The p is analytic. Under no drift the difference of the two feature means is close to Gaussian, with the
    features' covariance (both samples pooled) times 1/n + 1/m, so the statistic, its squared length, is a sum of
    chi-squares weighted by that matrix's eigenvalues; `quadratic_form_sf` gives its tail to any depth. A
    permutation p cannot go below 1 / (permutations + 1): with 200, the embedding could never alert on its own
    among the hundreds of tests a report adjusts for."""
    ref = np.asarray(reference, np.float64)
    win = np.asarray(window, np.float64)
    phi = mmd_features(ref, np.vstack([ref, win]), dim, seed)
    n, m = len(ref), len(win)
    observed = float(((phi[:n].mean(0) - phi[n:].mean(0)) ** 2).sum())
    weights = np.linalg.eigvalsh(np.cov(phi, rowvar=False)) * (1.0 / n + 1.0 / m)
    p = quadratic_form_sf(observed, weights[weights > 1e-12 * max(float(weights.max()), 1e-300)])
    words = f"image content (the model's embedding) differs from the reference: MMD {observed:.4f}"
    return DriftTest("embedding", observed, p, observed, observed, 0.0, m, n, words)


def quadratic_form_sf(q: float, weights: np.ndarray) -> float:
    """P(sum_i w_i z_i^2 >= q) for independent standard normal z: Liu, Tang and Zhang (2009), matching the first
    three cumulants and the kurtosis (Lee, Wu and Lin 2012), accurate far into the tail."""
    from scipy.stats import chi2, ncx2

    w = np.asarray(weights, np.float64)
    if not len(w):
        return 1.0
    c1, c2, c3, c4 = (float(np.sum(w**k)) for k in (1, 2, 3, 4))
    s1, s2 = c3 / c2**1.5, c4 / c2**2
    if s1**2 > s2:
        a = 1.0 / (s1 - math.sqrt(s1**2 - s2))
        d = s1 * a**3 - a**2
        df = a**2 - 2 * d
    else:
        df, d = 1.0 / s2, 0.0
        a = math.sqrt(df)
    x = (q - c1) / math.sqrt(2 * c2) * math.sqrt(2) * a + df + d
    return float(ncx2.sf(x, df, d) if d > 0 else chi2.sf(x, df))


def benjamini_hochberg(tests: Sequence[DriftTest]) -> list[DriftTest]:
    """The same tests with adjusted_p: Benjamini-Hochberg over all of them (under no drift at all, the chance
    of any alert among them stays at the level chosen)."""
    if not tests:
        return []
    p = np.array([t.p_value for t in tests])
    order = np.argsort(p)
    m = len(p)
    ranked = p[order] * m / np.arange(1, m + 1)
    adjusted = np.minimum.accumulate(ranked[::-1])[::-1].clip(max=1.0)
    out = np.empty(m)
    out[order] = adjusted
    return [replace(t, adjusted_p=float(a)) for t, a in zip(tests, out, strict=True)]


@dataclass(frozen=True)
class Estimate:
    value: float
    low: float
    high: float


def _bbse_solve(rp: np.ndarray, rl: np.ndarray, wp: np.ndarray, k: int) -> np.ndarray:
    """The window's true class shares from its predicted classes `wp` and the reference's predicted `rp` and true
    `rl` classes (the joint confusion matrix), under label shift."""
    joint = np.zeros((k, k))
    np.add.at(joint, (rp, rl), 1.0)
    joint /= max(len(rp), 1)
    prior = np.bincount(rl, minlength=k) / max(len(rl), 1)
    mu = np.bincount(wp, minlength=k) / max(len(wp), 1)
    weights, *_ = np.linalg.lstsq(joint, mu, rcond=None)
    shares = np.clip(weights, 0, None) * prior
    return shares / shares.sum() if shares.sum() > 0 else prior


def _bbse_draws(
    ref_predicted: np.ndarray, ref_labels: np.ndarray, window_predicted: np.ndarray, k: int, boot: int, seed: int
) -> np.ndarray:
    """[boot, k] bootstrap estimates, resampling both the reference and the window: `_bbse_solve` of each resample,
    all at once (the joint matrices stacked, solved by their pseudo-inverses: lstsq's least-norm solution)."""
    rng = np.random.default_rng(seed)
    n_ref, n_win = len(ref_labels), len(window_predicted)
    r, w = np.empty((boot, n_ref), np.int64), np.empty((boot, n_win), np.int64)
    for b in range(boot):  # drawn in the order one resample at a time draws them
        r[b] = rng.integers(n_ref, size=n_ref)
        w[b] = rng.integers(n_win, size=n_win)
    row = np.arange(boot)[:, None]
    cells = (row * k + ref_predicted[r]) * k + ref_labels[r]
    joint = np.bincount(cells.ravel(), minlength=boot * k * k).reshape(boot, k, k) / max(n_ref, 1)
    prior = np.bincount((row * k + ref_labels[r]).ravel(), minlength=boot * k).reshape(boot, k) / max(n_ref, 1)
    mu = np.bincount((row * k + window_predicted[w]).ravel(), minlength=boot * k).reshape(boot, k) / max(n_win, 1)
    weights = np.einsum("bij,bj->bi", np.linalg.pinv(joint, rcond=k * np.finfo(float).eps), mu)
    shares = np.clip(weights, 0, None) * prior
    total = shares.sum(1, keepdims=True)
    return np.where(total > 0, shares / np.where(total > 0, total, 1), prior)


def bbse_class_mix(
    ref_predicted: np.ndarray, ref_labels: np.ndarray, window_predicted: np.ndarray, k: int, boot: int = 200, seed: int = 0
) -> list[Estimate]:
    """Black-box shift estimation (Lipton et al. 2018): the window's true class shares from its predicted
    shares and the reference's joint confusion matrix, assuming only the class mix changed (label shift).
    The interval is the bootstrap's 5th-95th percentile, resampling both the reference and the window."""
    point = _bbse_solve(ref_predicted, ref_labels, window_predicted, k)
    low, high = np.percentile(_bbse_draws(ref_predicted, ref_labels, window_predicted, k, boot, seed), [5, 95], axis=0)
    return [Estimate(float(v), float(lo), float(hi)) for v, lo, hi in zip(point, low, high, strict=True)]


def bbse_shift_test(
    ref_predicted: np.ndarray,
    ref_labels: np.ndarray,
    prior: np.ndarray,
    prior_n: int,
    window_predicted: np.ndarray,
    classes: Sequence[str],
    boot: int = 200,
    seed: int = 0,
) -> DriftTest:
    """Label shift tested on the true class mix: the class whose BBSE share moved most from the reference's prior
    (`prior`, counted on `prior_n` labelled images), as a z against the estimate's bootstrap spread plus the prior's
    own binomial one, its two-sided normal p multiplied by the number of classes (Bonferroni). Unlike the tests
    on predicted classes, the effect is in true shares: a model that confuses two classes does not hide a move."""
    from scipy.stats import norm

    k = len(classes)
    point = _bbse_solve(ref_predicted, ref_labels, window_predicted, k)
    spread = _bbse_draws(ref_predicted, ref_labels, window_predicted, k, boot, seed).var(0, ddof=1)
    p0 = np.asarray(prior, float)
    sd = np.sqrt(spread + p0 * (1 - p0) / max(prior_n, 1))
    z = (point - p0) / np.where(sd > 0, sd, np.inf)
    i = int(np.argmax(np.abs(z)))
    p = float(min(1.0, k * 2 * norm.sf(abs(z[i]))))
    effect = float(point[i] - p0[i])
    words = f"true class mix (BBSE): {classes[i]!r} is about {point[i]:.0%} of the traffic vs {p0[i]:.0%} in the reference"
    return DriftTest(
        "class_mix_bbse", float(z[i]), p, effect, float(point[i]), float(p0[i]), len(window_predicted), len(ref_labels),
        words, subject=str(classes[i]),
    )  # fmt: skip


def atc_threshold(ref_confidence: np.ndarray, ref_correct: np.ndarray) -> float:
    """ATC's threshold (Garg et al. 2022): the confidence above which the reference's share of images equals
    its accuracy."""
    accuracy = float(np.mean(ref_correct))
    return float(np.quantile(np.asarray(ref_confidence, float), 1.0 - accuracy))


def atc_accuracy(window_confidence: np.ndarray, threshold: float) -> float:
    """Estimated accuracy of a window: the share of its predictions above the ATC threshold."""
    return float(np.mean(np.asarray(window_confidence) > threshold))


def atc_interval(
    ref_confidence: np.ndarray, ref_correct: np.ndarray, window_confidence: np.ndarray, boot: int = 200, seed: int = 0
) -> Estimate:
    """ATC's estimate with its 95% bootstrap interval, resampling the reference (the threshold is learnt from a
    sample too) and the window. It leaves out what ATC assumes: that confidence means on the window what it
    meant on the reference; under a shift that breaks that, the truth can sit outside the band."""
    ref_c, ref_ok, win = (np.asarray(x) for x in (ref_confidence, ref_correct, window_confidence))
    point = atc_accuracy(win, atc_threshold(ref_c, ref_ok))
    rng = np.random.default_rng(seed)
    r, w = np.empty((boot, len(ref_c)), np.int64), np.empty((boot, len(win)), np.int64)
    for b in range(boot):  # drawn in the order one resample at a time draws them
        r[b] = rng.integers(len(ref_c), size=len(ref_c))
        w[b] = rng.integers(len(win), size=len(win))
    thresholds = _row_quantiles(np.sort(ref_c.astype(float)[r], axis=1), 1.0 - ref_ok[r].mean(1))
    draws = (win[w] > thresholds[:, None]).mean(1)
    low, high = np.percentile(draws, [2.5, 97.5])
    return Estimate(point, float(low), float(high))


def _row_quantiles(ordered: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Each sorted row's quantile q[i], as np.quantile's default (linear) method finds it."""
    n = ordered.shape[1]
    virtual = n * q + (1 - q) - 1  # numpy's virtual index for alpha = beta = 1
    below = np.clip(np.floor(virtual), 0, n - 1).astype(np.int64)
    above = np.clip(below + 1, 0, n - 1)
    gamma = np.clip(virtual - np.floor(virtual), 0, 1)[:, None]
    a = np.take_along_axis(ordered, below[:, None], 1)
    b = np.take_along_axis(ordered, above[:, None], 1)
    diff = b - a
    out = np.where(gamma >= 0.5, b - diff * (1 - gamma), a + diff * gamma)  # numpy's _lerp
    return out[:, 0]


def average_confidence(window_confidence: np.ndarray) -> float:
    return float(np.mean(window_confidence))
