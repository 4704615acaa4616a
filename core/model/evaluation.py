"""How a model version does on its validation images (which chose its epoch: optimistic) and on the
workspace's test images it never learnt from nor selected on (for reporting only), and two versions
compared on the test images both held out."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from core.model import registry
from core.model.rates import Rate
from core.workspace import store
from core.workspace.paths import Workspace, write_atomic

VALID, TEST = "valid", "test"
TEST_SCORES = "test_scores.json"  # probabilities of test images that joined the test split after training


@dataclass(frozen=True)
class Evaluation:
    version: str
    classes: list[str]
    ids: list[str]
    labels: np.ndarray  # actual class index per image
    probs: np.ndarray  # [n, classes]
    images: str = VALID  # which images: valid, or test (held out from every choice)
    unknown: int = 0  # test images left out because their label is not one of the version's classes

    @property
    def predicted(self) -> np.ndarray:
        return self.probs.argmax(1)

    @property
    def accuracy(self) -> float:
        return float((self.predicted == self.labels).mean()) if len(self.labels) else float("nan")

    @property
    def rate(self) -> Rate:
        """Accuracy as a sample rate: correct of n, with its Wilson interval."""
        return Rate(int((self.predicted == self.labels).sum()), len(self.labels))


def load(ws: Workspace, version: str) -> Evaluation:
    """The stored validation probabilities of a version (no model run needed)."""
    meta = registry.read_meta(ws, version)
    ref = registry.load_reference(ws, version)
    return Evaluation(version, meta["classes"], meta["valid_ids"], ref["valid_labels"], ref["valid_probs"])


def _stored_test(ws: Workspace, version: str, meta: dict[str, Any]) -> dict[str, np.ndarray]:
    """id -> probabilities: from training, and from any scoring since."""
    ref = registry.load_reference(ws, version)
    found = dict(zip(meta.get("test_ids", []), ref.get("test_probs", np.zeros((0, 0))), strict=False))
    extra = ws.models_dir / version / TEST_SCORES
    if extra.is_file():
        found.update({k: np.asarray(v, np.float32) for k, v in json.loads(extra.read_text()).items()})
    return found


def _score_missing(ws: Workspace, version: str, rows: pd.DataFrame) -> dict[str, np.ndarray]:
    """Score test images this version has no probabilities for (they joined test after it was trained)."""
    from core.model import datasets, runs, scoring

    cfg = runs.config_of(ws, version)
    predictor = scoring.load_predictor(ws, version)
    probs = scoring.probabilities(predictor.model, datasets.load_pixels(ws, rows, cfg.data), predictor.mean, predictor.std)
    scored = dict(zip(rows["id"], probs, strict=True))
    path = ws.models_dir / version / TEST_SCORES
    kept = json.loads(path.read_text()) if path.is_file() else {}
    kept.update({k: v.tolist() for k, v in scored.items()})
    write_atomic(path, json.dumps(kept))
    return scored


def load_test(ws: Workspace, version: str, catalog: pd.DataFrame | None = None) -> Evaluation:
    """The version on the workspace's test images, minus any it trained or selected on (a test set drawn
    after it was trained can hold its training images). Labels are the catalog's current ones."""
    meta = registry.read_meta(ws, version)
    catalog = store.images(ws) if catalog is None else catalog
    used = set(meta.get("train_ids", [])) | set(meta.get("valid_ids", []))
    rows = catalog[(catalog["split"] == TEST) & ~catalog["id"].isin(used)]
    index = {c: i for i, c in enumerate(meta["classes"])}
    known = rows[rows["label"].isin(index)]
    probs = _stored_test(ws, version, meta)
    missing = known[~known["id"].isin(probs)]
    if len(missing):
        probs.update(_score_missing(ws, version, missing))
    k = len(meta["classes"])
    return Evaluation(
        version,
        meta["classes"],
        known["id"].tolist(),
        known["label"].map(index).to_numpy(np.int64),
        np.stack([probs[i] for i in known["id"]]) if len(known) else np.zeros((0, k), np.float32),
        TEST,
        len(rows) - len(known),
    )


def restrict(ev: Evaluation, order: list[str]) -> Evaluation:
    """The same evaluation on the given images only, in that order."""
    position = {image_id: n for n, image_id in enumerate(ev.ids)}
    idx = np.array([position[i] for i in order], np.int64)
    return replace(ev, ids=list(order), labels=ev.labels[idx], probs=ev.probs[idx])


def held_out_by_both(ws: Workspace, a: str, b: str) -> tuple[Evaluation, Evaluation]:
    """Both versions on the test images neither learnt from nor selected on: same images, same order."""
    catalog = store.images(ws)
    ea, eb = load_test(ws, a, catalog), load_test(ws, b, catalog)
    held_by_b = set(eb.ids)
    common = [i for i in ea.ids if i in held_by_b]
    return restrict(ea, common), restrict(eb, common)


def side_by_side(evaluations: list[Evaluation]) -> pd.DataFrame:
    """Accuracy and error count per version (on whatever images each evaluation holds)."""
    return pd.DataFrame(
        [
            {"version": e.version, "images": len(e.ids), "accuracy": e.accuracy, "errors": int((e.predicted != e.labels).sum())}
            for e in evaluations
        ]
    )


def report(ws: Workspace, version: str) -> dict[str, Any]:
    """`evaluate --json`: the validation figures (the contract's keys) and the test figures beside them."""
    valid, test = load(ws, version), load_test(ws, version)
    tested = len(test.ids) > 0
    return {
        **summary(valid),
        "valid_accuracy": valid.accuracy,
        "valid_error": 1 - valid.accuracy,
        "test_accuracy": test.accuracy if tested else None,
        "test_error": 1 - test.accuracy if tested else None,
        "test_images": len(test.ids),
        "test_unknown_labels": test.unknown,
        "test": summary(test) if tested else None,
    }


def confusion_matrix(ev: Evaluation) -> np.ndarray:
    """Counts, rows actual, columns predicted."""
    k = len(ev.classes)
    return np.bincount(ev.labels * k + ev.predicted, minlength=k * k).reshape(k, k)


def per_class(ev: Evaluation) -> pd.DataFrame:
    """Precision, recall, F1 and support per class; recall and precision also as 95% Wilson intervals with their
    n: a class holds few images, and the interval says how little a share of them pins down."""
    cm = confusion_matrix(ev)
    tp = np.diag(cm).astype(float)
    precision = np.divide(tp, cm.sum(0), out=np.zeros_like(tp), where=cm.sum(0) > 0)
    recall = np.divide(tp, cm.sum(1), out=np.zeros_like(tp), where=cm.sum(1) > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros_like(tp), where=precision + recall > 0)
    recall_ci = [_interval(Rate(int(k), int(n))) for k, n in zip(tp, cm.sum(1), strict=True)]
    precision_ci = [_interval(Rate(int(k), int(n))) for k, n in zip(tp, cm.sum(0), strict=True)]
    return pd.DataFrame(
        {
            "class": ev.classes,
            "precision": precision,
            "recall": recall,
            "f1": f1,
            "support": cm.sum(1),
            "recall 95% CI": recall_ci,
            "precision 95% CI": precision_ci,
        }
    )


def _interval(rate: Rate) -> str:
    """'83-99% (n 45)' (wide, not hidden, when n is small), or 'no images (n 0)'."""
    if not rate.n:
        return "no images (n 0)"
    low, high = rate.interval
    return f"{low:.0%}-{high:.0%} (n {rate.n})"


def most_confused(ev: Evaluation, min_count: int = 1) -> pd.DataFrame:
    """Off-diagonal (actual, predicted) pairs, most frequent first, as fastai's most_confused."""
    cm = confusion_matrix(ev)
    rows = [
        {"actual": ev.classes[i], "predicted": ev.classes[j], "count": int(cm[i, j])}
        for i in range(len(cm))
        for j in range(len(cm))
        if i != j and cm[i, j] >= min_count
    ]
    return pd.DataFrame(rows, columns=["actual", "predicted", "count"]).sort_values("count", ascending=False, kind="stable")


def losses(ev: Evaluation) -> np.ndarray:
    """Cross-entropy of each validation image under the stored probabilities."""
    return -np.log(np.clip(ev.probs[np.arange(len(ev.labels)), ev.labels], 1e-12, 1.0))


def top_losses(ws: Workspace, ev: Evaluation, k: int = 16) -> pd.DataFrame:
    """The k validation images the model got most wrong, with their files (wherever they are now)."""
    loss = losses(ev)
    order = np.argsort(-loss)[:k]
    catalog = store.images(ws, status=None).set_index("id")
    rows = []
    for i in order:
        image_id = ev.ids[i]
        rows.append(
            {
                "id": image_id,
                "actual": ev.classes[ev.labels[i]],
                "predicted": ev.classes[ev.predicted[i]],
                "loss": float(loss[i]),
                "probability": float(ev.probs[i, ev.predicted[i]]),
                "path": catalog.loc[image_id, "path"] if image_id in catalog.index else None,
            }
        )
    return pd.DataFrame(rows)


def reliability(ev: Evaluation, bins: int = 10) -> tuple[pd.DataFrame, float]:
    """Confidence against accuracy in equal-width bins, and the expected calibration error."""
    confidence = ev.probs.max(1)
    correct = (ev.predicted == ev.labels).astype(float)
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1]), 0, bins - 1)
    rows, ece = [], 0.0
    for b in range(bins):
        mask = which == b
        if mask.any():
            gap = abs(correct[mask].mean() - confidence[mask].mean())
            ece += mask.mean() * gap
            rows.append(
                {
                    "bin": f"{edges[b]:.1f}-{edges[b + 1]:.1f}",
                    "confidence": confidence[mask].mean(),
                    "accuracy": correct[mask].mean(),
                    "images": int(mask.sum()),
                }
            )
    return pd.DataFrame(rows), float(ece)


def changed_predictions(a: Evaluation, b: Evaluation) -> pd.DataFrame:
    """Images both evaluations hold whose predicted class differs between them."""
    index_b = {image_id: i for i, image_id in enumerate(b.ids)}
    rows = []
    for i, image_id in enumerate(a.ids):
        j = index_b.get(image_id)
        if j is None or a.classes[a.predicted[i]] == b.classes[b.predicted[j]]:
            continue
        rows.append(
            {
                "id": image_id,
                "actual": a.classes[a.labels[i]],
                a.version: a.classes[a.predicted[i]],
                b.version: b.classes[b.predicted[j]],
            }
        )
    return pd.DataFrame(rows, columns=["id", "actual", a.version, b.version])


def summary(ev: Evaluation) -> dict[str, Any]:
    """The contract's evaluate keys, plus calibration."""
    _, ece = reliability(ev)
    return {
        "version": ev.version,
        "classes": ev.classes,
        "accuracy": ev.accuracy,
        "images": len(ev.ids),
        "which_images": ev.images,
        "confusion_matrix": confusion_matrix(ev).tolist(),
        "per_class": per_class(ev).to_dict(orient="records"),
        "most_confused": most_confused(ev).head(10).to_dict(orient="records"),
        "ece": ece,
    }


def confusion_figure(ev: Evaluation, normalise: bool = False) -> go.Figure:
    """Heatmap, rows actual, columns predicted; counts or shares of each actual class."""
    cm = confusion_matrix(ev).astype(float)
    values = cm / np.maximum(cm.sum(1, keepdims=True), 1) if normalise else cm
    text = [[f"{v:.0%}" if normalise else f"{int(v)}" for v in row] for row in values]
    fig = go.Figure(
        go.Heatmap(z=values, x=ev.classes, y=ev.classes, text=text, texttemplate="%{text}", colorscale="Blues", showscale=False)
    )
    fig.update_layout(
        title="Confusion matrix" + (" (share of each actual class)" if normalise else " (counts)"),
        xaxis_title="predicted",
        yaxis_title="actual",
        yaxis_autorange="reversed",
        xaxis_type="category",
        yaxis_type="category",
        margin={"t": 50, "b": 10},
    )
    return fig


def reliability_figure(ev: Evaluation) -> go.Figure:
    """Accuracy against confidence per bin; the diagonal is perfect calibration."""
    table, ece = reliability(ev)
    fig = go.Figure()
    fig.add_trace(
        go.Scatter(x=[0, 1], y=[0, 1], mode="lines", line={"dash": "dash", "color": "grey"}, name="perfect calibration")
    )
    fig.add_trace(
        go.Scatter(
            x=table["confidence"],
            y=table["accuracy"],
            mode="lines+markers",
            name="this model",
            text=table["images"],
            hovertemplate="confidence %{x:.2f}<br>accuracy %{y:.2f}<br>%{text} images",
        )
    )
    fig.update_layout(
        title=f"Reliability (expected calibration error {ece:.3f})",
        xaxis_title="confidence",
        yaxis_title="accuracy",
        xaxis_range=[0, 1],
        yaxis_range=[0, 1.02],
        margin={"t": 50, "b": 10},
    )
    return fig
