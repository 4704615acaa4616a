"""Check every image in a workspace, quarantine the broken ones, find duplicate groups."""

from __future__ import annotations

import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from core.data.gather import Incoming, allocate_id, catalog_row, file_loader, finish_staged, validate_label
from core.data.images import VerifyConfig, inspect
from core.errors import UserError
from core.progress import ProgressFn
from core.workspace import failpoints, store
from core.workspace.paths import Workspace, free_name


@dataclass
class VerifyReport:
    checked: int = 0
    quarantined: list[dict[str, str]] = field(default_factory=list)  # {id, source, reason}
    adopted: list[str] = field(default_factory=list)  # files found on disk, now cataloged
    failed: list[dict[str, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def quarantine(ws: Workspace, image_id: str, reason: str, action: str = "quarantined", batch: str | None = None) -> None:
    """Move an image's file to quarantine/ and mark it, with an audit row; never unlinks."""
    with store.connect(ws) as con:
        row = con.execute("SELECT path, label, status FROM images WHERE id = ?", [image_id]).fetchone()
    if row is None:
        raise UserError(f"No image with id {image_id!r} in this workspace.")
    path, label, status = row
    if status == "quarantined":
        return
    src = ws.root / path
    dst = ws.quarantine_dir / Path(path).name
    ws.quarantine_dir.mkdir(parents=True, exist_ok=True)
    if src.exists():
        shutil.move(str(src), str(dst))
        failpoints.hit("verify.moved")
    rel = str(dst.relative_to(ws.root)) if dst.exists() else path
    store.update_image(
        ws,
        image_id,
        {"status": "quarantined", "reason": reason, "path": rel},
        action,
        before={"path": path, "status": status},
        after={"path": rel, "status": "quarantined"},
        detail={"reason": reason, "label": label, **({"batch": batch} if batch else {})},
    )


def restore(ws: Workspace, image_id: str) -> str:
    """Move a quarantined image back to images/<label>/; returns its new path."""
    with store.connect(ws) as con:
        row = con.execute("SELECT path, label, status, reason FROM images WHERE id = ?", [image_id]).fetchone()
    if row is None or row[2] != "quarantined":
        raise UserError(f"Image {image_id!r} is not in quarantine.")
    path, label, _, reason = row
    src = ws.root / path
    if not src.exists():
        raise UserError(f"The quarantined file {path} is missing on disk; it cannot be restored.")
    dst = ws.images_dir / label / src.name
    if dst.exists():
        raise UserError(f"{dst.relative_to(ws.root)} already exists; move it away before restoring.")
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(src), str(dst))
    rel = str(dst.relative_to(ws.root))
    store.update_image(
        ws,
        image_id,
        {"status": "ok", "reason": None, "path": rel},
        "restored",
        before={"path": path, "status": "quarantined", "reason": reason},
        after={"path": rel, "status": "ok"},
    )
    return rel


def _check(ws: Workspace, row: pd.Series, cfg: VerifyConfig) -> str | None:
    path = ws.root / row["path"]
    if not path.is_file() and not finish_staged(ws, row["path"]):  # an interrupted import's file takes its name
        return "file missing on disk"
    try:
        inspect(path.read_bytes(), cfg)
    except UserError as exc:
        return str(exc)
    except OSError as exc:
        return f"could not read: {exc}"
    return None


def _untracked_files(ws: Workspace, tracked: set[str]) -> list[Path]:
    found = []
    for path in sorted(ws.images_dir.rglob("*")):
        if path.is_file() and not path.name.startswith(".") and str(path.relative_to(ws.root)) not in tracked:
            found.append(path)
    return found


def adopt_untracked(ws: Workspace, cfg: VerifyConfig, report: VerifyReport) -> None:
    """Files dropped into images/<label>/ by hand: catalog the good ones, quarantine the rest."""
    tracked = set(store.images(ws, status=None)["path"])
    known = store.known_keys(ws).by_sha256
    rows = []
    for path in _untracked_files(ws, tracked):
        rel = str(path.relative_to(ws.root))
        try:
            label = validate_label(path.parent.name) if path.parent.parent == ws.images_dir else None
        except UserError:
            label = None
        if label is None:
            report.failed.append({"source": rel, "reason": "not directly in images/<label>/ with a valid label; left in place"})
            continue
        try:
            info, _ = inspect(path.read_bytes(), cfg)
        except UserError as exc:
            _move_loose(ws, path, str(exc), report)
            continue
        image_id = allocate_id(info, known)
        dst = ws.images_dir / label / f"{image_id}{info.extension}"
        os.replace(path, dst)
        failpoints.hit("verify.adopted")
        known.setdefault(info.sha256, []).append((image_id, label, "ok", rel))
        rows.append(catalog_row(Incoming(file_loader(dst), label, "disk", rel), info, str(dst.relative_to(ws.root)), image_id))
        report.adopted.append(image_id)
    store.insert_images(ws, rows, action="image_adopted")


def _move_loose(ws: Workspace, src: Path, reason: str, report: VerifyReport) -> None:
    dst = free_name(ws.quarantine_dir, f"loose-{src.parent.name}-{src.name}")
    shutil.move(str(src), str(dst))
    rel_src, rel_dst = str(src.relative_to(ws.root)), str(dst.relative_to(ws.root))
    store.audit(ws, "loose_file_moved", before={"path": rel_src}, after={"path": rel_dst}, detail={"reason": reason})
    report.quarantined.append({"id": "", "source": rel_src, "reason": reason})


def verify_workspace(ws: Workspace, cfg: VerifyConfig = VerifyConfig(), on_progress: ProgressFn | None = None) -> VerifyReport:
    """Decode every cataloged image fully; quarantine what fails; adopt files placed by hand."""
    report = VerifyReport()
    adopt_untracked(ws, cfg, report)
    catalog = store.images(ws, status="ok")
    rows = [row for _, row in catalog.iterrows()]
    with ThreadPoolExecutor(max_workers=(os.cpu_count() or 2) * 2) as pool:
        for done, (row, reason) in enumerate(zip(rows, pool.map(lambda r: _check(ws, r, cfg), rows), strict=True), 1):
            report.checked += 1
            if reason:
                quarantine(ws, row["id"], reason)
                report.quarantined.append({"id": row["id"], "source": row["path"], "reason": reason})
            if on_progress:
                on_progress(done, len(rows), row["path"])
    report.warnings = dataset_warnings(store.label_counts(ws)) + [
        f"Label folder {d.name!r} is empty: add images to it or remove it."
        for d in sorted(ws.images_dir.iterdir())
        if d.is_dir() and not any(f.is_file() and not f.name.startswith(".") for f in d.iterdir())
    ]
    store.audit(ws, "verified", detail={"checked": report.checked, "quarantined": len(report.quarantined)})
    return report


def dataset_warnings(counts: dict[str, int]) -> list[str]:
    """What stops training on this dataset, in words."""
    out = []
    if len(counts) < 2:
        out.append(f"Only {len(counts)} label(s) with images: a classifier needs at least two.")
    for label, n in counts.items():
        if n < 5:
            out.append(f"Label {label!r} has only {n} image(s): gather at least a few dozen per label.")
    return out


def exact_duplicate_groups(catalog: pd.DataFrame) -> list[list[str]]:
    """Ids sharing a sha256, in groups of two or more."""
    groups = catalog.groupby("sha256")["id"].apply(list)
    return [sorted(g) for g in groups if len(g) > 1]


def near_duplicate_groups(catalog: pd.DataFrame, max_distance: int = 4) -> list[list[str]]:
    """Groups of ids whose perceptual hashes differ in at most max_distance of 64 bits (not all exact copies)."""
    if len(catalog) < 2:
        return []
    ids = catalog["id"].tolist()
    hashes = np.array([int(h, 16) for h in catalog["phash"]], dtype=np.uint64)
    parent = list(range(len(ids)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for start in range(0, len(ids), 1024):
        block = hashes[start : start + 1024]
        dist = np.bitwise_count(block[:, None] ^ hashes[None, :])
        for a, b in zip(*np.nonzero(dist <= max_distance), strict=True):
            i, j = start + int(a), int(b)
            if i < j:
                parent[find(i)] = find(j)
    groups: dict[int, list[int]] = {}
    for i in range(len(ids)):
        groups.setdefault(find(i), []).append(i)
    shas = catalog["sha256"].tolist()
    near = [sorted(ids[i] for i in g) for g in groups.values() if len({shas[i] for i in g}) > 1]
    return sorted(near, key=lambda g: (-len(g), g))
