"""Find images worth a second look, with honest scores, and apply keep / delete / relabel with undo.

Training images are scored out of fold: a logistic regression on the version's body features is
fitted k times, each time without the fold it then scores, so no image is judged by a model that
memorised it (fastai's ImageClassifierCleaner sorts by in-sample loss). Confident learning
(Northcutt et al.) flags labels whose out-of-fold probability for another class passes that class's
own average confidence.
"""

from __future__ import annotations

import io
import json
import shutil
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold

from core.data import verify
from core.data.gather import validate_label
from core.errors import UserError
from core.model import datasets, registry, weights
from core.model.config import DataConfig
from core.progress import ProgressFn
from core.workspace import failpoints, store
from core.workspace.paths import Workspace, free_name, write_atomic

ACTIONS = ("keep", "delete", "relabel")
_APPLY_LOCK = threading.Lock()


@dataclass(frozen=True)
class Decision:
    image_id: str
    action: str  # keep / delete / relabel
    new_label: str | None = None
    seen: str | None = None  # the label shown when the choice was made: skipped if another session changed it since


@dataclass(frozen=True)
class Applied:
    """One applied cleaning batch: its id (for undo), the changes made, and the choices skipped because another
    session had changed or removed the image since it was shown."""

    batch: str
    changed: int
    skipped: tuple[str, ...]


FEATURES = "clean_features.npz"  # per version: body features by image content, so an Apply re-scores only new images


def body_features(ws: Workspace, version: str, catalog: pd.DataFrame, on_progress: ProgressFn | None = None) -> np.ndarray:
    """Pooled body features of every catalog image under a version's preprocessing (no augmentation). They depend
    only on the image's bytes and the version, so they are kept by sha256 beside the version: relabels, deletions
    and restores reuse them, and only images new to the version go through the network."""
    path = ws.models_dir / version / FEATURES
    known: dict[str, np.ndarray] = {}
    if path.is_file():
        try:
            with np.load(path) as saved:
                known = dict(zip(saved["sha256"].tolist(), saved["features"], strict=True))
        except (OSError, ValueError, KeyError):  # a damaged cache is only a cache: compute again
            known = {}
    missing = catalog[~catalog["sha256"].isin(known)]
    if len(missing):
        fresh = _forward(ws, version, missing, on_progress)
        known.update(zip(missing["sha256"].tolist(), fresh, strict=True))
        keep = catalog["sha256"].tolist()
        buffer = io.BytesIO()
        np.savez(buffer, sha256=np.array(keep), features=np.stack([known[h] for h in keep]))
        write_atomic(path, buffer.getvalue())
    if catalog.empty:
        return np.zeros((0, 0), np.float32)
    return np.stack([known[h] for h in catalog["sha256"]])


def _forward(ws: Workspace, version: str, catalog: pd.DataFrame, on_progress: ProgressFn | None = None) -> np.ndarray:
    model, meta = weights.load_version(ws, version)
    pre = meta["preprocessing"]
    say = on_progress or (lambda *_: None)
    pixels = datasets.load_pixels(
        ws, catalog, DataConfig(size=pre["size"], resize=pre["resize"]), on_progress=lambda d, t, _: say(d, t, "preparing images")
    )
    out = []
    with torch.inference_mode():
        for i in range(0, len(pixels), 64):
            out.append(model.body(datasets.to_batch(pixels[i : i + 64], pre["mean"], pre["std"])).float().numpy())
            say(min(i + 64, len(pixels)), len(pixels), "measuring images with the model")
    return np.concatenate(out)


def out_of_fold_probs(
    features: np.ndarray,
    labels: np.ndarray,
    n_classes: int,
    folds: int = 5,
    seed: int = 42,
    on_progress: ProgressFn | None = None,
) -> np.ndarray:
    """Each image's class probabilities from a model fitted without it (progress: folds fitted of k)."""
    counts = np.bincount(labels, minlength=n_classes)
    k = int(max(2, min(folds, counts[counts > 0].min())))
    say = on_progress or (lambda *_: None)
    probs = np.zeros((len(labels), n_classes))
    scaled = (features - features.mean(0)) / (features.std(0) + 1e-6)
    say(0, k, f"fitting {k} out-of-fold classifiers")
    for done, (fit, score) in enumerate(StratifiedKFold(k, shuffle=True, random_state=seed).split(scaled, labels), 1):
        clf = LogisticRegression(C=0.1, max_iter=500).fit(scaled[fit], labels[fit])
        probs[np.ix_(score, clf.classes_)] = clf.predict_proba(scaled[score])
        say(done, k, f"fitting {k} out-of-fold classifiers")
    return probs


def confident_learning(probs: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Label-issue flags and a margin (other class's probability minus the given one's), per image."""
    n_classes = probs.shape[1]
    thresholds = np.array([probs[labels == j, j].mean() if (labels == j).any() else 1.0 for j in range(n_classes)])
    above = probs >= thresholds[None, :]
    above[np.arange(len(labels)), labels] = False
    others = np.where(above, probs, -np.inf)
    best_other = others.max(1)
    given = probs[np.arange(len(labels)), labels]
    issue = np.isfinite(best_other) & (others.argmax(1) != labels)
    return issue, np.where(np.isfinite(best_other), best_other - given, -given)


def centroid_distance(features: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Cosine distance of each image to its label's mean embedding, as a z-score within the label."""
    unit = features / (np.linalg.norm(features, axis=1, keepdims=True) + 1e-9)
    z = np.zeros(len(labels))
    for j in np.unique(labels):
        mask = labels == j
        centre = unit[mask].mean(0)
        dist = 1 - unit[mask] @ (centre / (np.linalg.norm(centre) + 1e-9))
        z[mask] = (dist - dist.mean()) / (dist.std() + 1e-9)
    return z


def score_images(ws: Workspace, version: str, on_progress: ProgressFn | None = None) -> pd.DataFrame:
    """Every usable image with its out-of-fold prediction, loss, confident-learning flag and outlier score."""
    meta = registry.read_meta(ws, version)
    catalog = store.images(ws)
    classes = meta["classes"]
    unknown = sorted(set(catalog["label"]) - set(classes))
    if unknown:
        raise UserError(f"Labels {unknown} are new since {version} was trained; retrain before cleaning with it.")
    labels = catalog["label"].map({c: i for i, c in enumerate(classes)}).to_numpy()
    features = body_features(ws, version, catalog, on_progress)
    probs = out_of_fold_probs(features, labels, len(classes), on_progress=on_progress)
    issue, margin = confident_learning(probs, labels)
    given = probs[np.arange(len(labels)), labels]
    return catalog.assign(
        predicted=[classes[i] for i in probs.argmax(1)],
        confidence=probs.max(1),
        given_prob=given,
        loss=-np.log(np.clip(given, 1e-12, 1)),
        label_issue=issue,
        cl_margin=margin,
        outlier_z=centroid_distance(features, labels),
    )


def queue(scores: pd.DataFrame, label: str | None, split: str, ranking: str = "out-of-fold loss") -> pd.DataFrame:
    """One label's images (all labels when None) in one split, most suspicious first."""
    rows = scores if label is None else scores[scores["label"] == label]
    if split != "all":
        rows = rows[rows["split"] == split]
    if ranking == "confident learning":
        return rows.sort_values(["label_issue", "cl_margin"], ascending=[False, False], kind="stable")
    if ranking == "embedding outliers":
        return rows.sort_values("outlier_z", ascending=False, kind="stable")
    return rows.sort_values("loss", ascending=False, kind="stable")


def flagged(catalog: pd.DataFrame) -> pd.DataFrame:
    """Images verification let through with a conversion worth checking (grayscale alone is not flagged)."""
    notes = catalog["notes"].fillna("").str.split(",").map(lambda n: [x for x in n if x and x != "grayscale"])
    keep = notes.map(len).to_numpy() > 0
    return catalog[keep].assign(notes=notes[keep].map(", ".join).to_numpy())


def leakage_groups(catalog: pd.DataFrame) -> list[list[str]]:
    """Exact or near-duplicate groups with members in train and in valid or test: they flatter those scores.
    (Exact copies share a split by construction; near duplicates can straddle.)"""
    split = catalog.set_index("id")["split"]
    groups = verify.exact_duplicate_groups(catalog) + verify.near_duplicate_groups(catalog)
    return [g for g in groups if "train" in set(split.loc[g]) and {"valid", "test"} & set(split.loc[g])]


def _relabel(ws: Workspace, image_id: str, new_label: str, batch: str, action: str = "clean_relabel") -> None:
    with store.connect(ws) as con:
        row = con.execute("SELECT path, label, status FROM images WHERE id = ?", [image_id]).fetchone()
    if row is None or row[2] != "ok" or row[1] == new_label:
        return  # gone, in quarantine, or already there (another session applied it): nothing to move
    path, label, _ = row
    folder = ws.images_dir / new_label
    folder.mkdir(parents=True, exist_ok=True)
    target = free_name(folder, Path(path).name)
    shutil.move(str(ws.root / path), str(target))
    failpoints.hit("clean.moved")
    rel = str(target.relative_to(ws.root))
    store.update_image(
        ws,
        image_id,
        {"label": new_label, "path": rel},
        action,
        before={"label": label, "path": path},
        after={"label": new_label, "path": rel},
        detail={"batch": batch},
    )


def apply(ws: Workspace, decisions: list[Decision]) -> Applied:
    """Apply deletions (to quarantine) and relabels as one batch that can be undone. A choice made on an image
    another session has changed since (its label, or no longer in the data) is skipped, never applied twice."""
    for d in decisions:
        if d.action not in ACTIONS:
            raise UserError(f"Unknown action {d.action!r}; choose one of {', '.join(ACTIONS)}.")
        if d.action == "relabel":
            validate_label(d.new_label or "")
    batch = uuid.uuid4().hex[:12]
    with _APPLY_LOCK, _file_lock(ws):
        # the batch's row first: a batch stopped halfway (a killed process) can still be undone as one
        store.audit(ws, "clean_batch", detail={"batch": batch, "changes": sum(d.action != "keep" for d in decisions)})
        skipped = []
        for d in decisions:
            if d.action != "keep" and d.seen is not None and _now(ws, d.image_id) != ("ok", d.seen):
                skipped.append(d.image_id)
            elif d.action == "delete":
                verify.quarantine(ws, d.image_id, "deleted while cleaning", action="clean_delete", batch=batch)
            elif d.action == "relabel":
                _relabel(ws, d.image_id, d.new_label.strip(), batch)
            failpoints.hit("clean.applied")
        if skipped:
            store.audit(ws, "clean_skipped", detail={"batch": batch, "images": skipped, "reason": "changed in another session"})
    return Applied(batch, sum(d.action != "keep" for d in decisions) - len(skipped), tuple(skipped))


def _now(ws: Workspace, image_id: str) -> tuple[str, str] | None:
    with store.connect(ws) as con:
        row = con.execute("SELECT status, label FROM images WHERE id = ?", [image_id]).fetchone()
    return tuple(row) if row else None


def _batch_of(detail: object) -> str | None:
    return json.loads(detail).get("batch") if isinstance(detail, str) else None


def undo_last(ws: Workspace) -> int:
    """Reverse the most recent cleaning batch not yet undone; returns how many changes were reversed."""
    with _APPLY_LOCK, _file_lock(ws):
        log = store.audit_log(ws, limit=1_000_000)  # newest first
        log = log.assign(batch=log["detail"].map(_batch_of))
        undone = set(log.loc[log["action"] == "clean_undo", "batch"])
        pending = [b for b in log.loc[log["action"] == "clean_batch", "batch"] if b not in undone]
        if not pending:
            raise UserError("There is no cleaning batch left to undo.")
        batch = pending[0]
        changes = log[(log["batch"] == batch) & log["action"].isin(["clean_relabel", "clean_delete"])]
        for change in changes.itertuples():  # newest first: the reverse of the order they were applied in
            if change.action == "clean_delete":
                if _now(ws, change.image_id)[0] == "quarantined":  # not restored already by an undo stopped halfway
                    verify.restore(ws, change.image_id)
            else:
                _relabel(ws, change.image_id, json.loads(change.before)["label"], f"undo-{batch}", "clean_undo_relabel")
            failpoints.hit("clean.undone")
        store.audit(ws, "clean_undo", detail={"batch": batch, "reversed": len(changes)})
        return len(changes)


class _file_lock:
    """An exclusive lock file so two processes never apply cleaning batches at once."""

    def __init__(self, ws: Workspace) -> None:
        self.path = ws.root / "cleaning.lock"

    def __enter__(self) -> None:
        import fcntl

        self.fh = open(self.path, "w")  # noqa: SIM115 - held until __exit__
        fcntl.flock(self.fh, fcntl.LOCK_EX)

    def __exit__(self, *exc: object) -> None:
        import fcntl

        fcntl.flock(self.fh, fcntl.LOCK_UN)
        self.fh.close()
