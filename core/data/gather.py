"""Bring images into a workspace: demo digits, folders, uploads, zip archives.

Every source becomes a stream of `Incoming` items that `ingest` decodes, measures, de-duplicates
and writes under images/<label>/<id>.<ext>; nothing a source gives is dropped without a reason.
"""

from __future__ import annotations

import io
import os
import re
import stat
import zipfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
from PIL import Image

from core.data.images import ImageInfo, VerifyConfig, inspect, too_large
from core.errors import UserError
from core.progress import ProgressFn
from core.workspace import failpoints, store, workspaces
from core.workspace.paths import DEVICE_NAME, Workspace, write_synced

Loader = Callable[[], tuple[bytes, str | None]]  # bytes, and a hint of what they were (content type)
_LABEL_RE = re.compile(r"^[\w][\w .+-]{0,63}$", re.UNICODE)
SPLIT_FOLDERS = ("train", "valid", "test")
DOWNLOAD_KINDS = ("url", "search", "production")  # stored once per content: the same bytes again add nothing


@dataclass(frozen=True)
class Incoming:
    """One candidate image: how to get its bytes and where it came from."""

    load: Loader
    label: str
    source_kind: str
    source: str
    query: str | None = None
    url: str | None = None
    split: str | None = None
    provenance: dict[str, Any] | None = None  # a production image: label_source, labelled_by, prediction_id, model_version


@dataclass
class GatherReport:
    added: list[str] = field(default_factory=list)  # new image ids
    skipped: list[dict[str, str]] = field(default_factory=list)  # {source, reason}: already there
    failed: list[dict[str, str]] = field(default_factory=list)  # {source, reason}: not usable

    def merge(self, other: GatherReport) -> GatherReport:
        return GatherReport(self.added + other.added, self.skipped + other.skipped, self.failed + other.failed)


def validate_label(label: str) -> str:
    """Return the stripped label or raise UserError saying what a label may contain."""
    clean = label.strip()
    if not _LABEL_RE.match(clean) or clean in SPLIT_FOLDERS or DEVICE_NAME.match(clean):
        raise UserError(
            f"Label {label!r} is not allowed: use 1-64 letters, digits, spaces, '_', '-', '+' or '.', "
            "starting with a letter or digit, no slashes, not 'train' or 'valid' and not a device name like NUL or CON."
        )
    return clean


def _prepare(item: Incoming, cfg: VerifyConfig) -> tuple[Incoming, ImageInfo | None, bytes | str]:
    """Worker: fetch and decode; returns the bytes, or the failure reason."""
    try:
        data, hint = item.load()
    except UserError as exc:
        return item, None, str(exc)
    except OSError as exc:
        return item, None, f"could not read: {exc.strerror or exc}"
    try:
        info, _ = inspect(data, cfg)
    except UserError as exc:
        reason = str(exc)
        if hint and not hint.startswith("image/") and reason.startswith("not an image"):
            reason = f"not an image: the server sent {hint.split(';')[0]}"
        return item, None, reason
    return item, info, data


def part_path(path: Path) -> Path:
    """Where a file waits, hidden, until its catalog row is committed."""
    return path.with_name(f".{path.name}.part")


def _stage(path: Path, data: bytes) -> None:
    """Write a new image beside its final name, flushed to disk; it takes its name once its row is committed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_synced(part_path(path), data)


def _commit(ws: Workspace, rows: list[dict[str, Any]], report: GatherReport) -> None:
    """Catalog rows in one transaction, then give their staged files their names: a kill before the commit
    leaves hidden .part files no row names (gathering again rewrites them; `check --repair` moves them to
    quarantine), a kill after it leaves rows whose files are still staged (`finish_staged` completes them)."""
    failpoints.hit("gather.staged")
    taken = store.insert_images(ws, rows)
    failpoints.hit("gather.committed")
    for row in rows:
        final = ws.root / row["path"]
        if row["id"] in taken:  # another import cataloged the same content meanwhile: this staged copy is not needed
            part_path(final).unlink(missing_ok=True)  # our own temporary copy of bytes the catalog holds
            report.added.remove(row["id"])
            report.skipped.append({"source": row.get("source") or row["path"], "reason": "added meanwhile by another import"})
            continue
        os.replace(part_path(final), final)
        failpoints.hit("gather.renamed")


def finish_staged(ws: Workspace, rel: str) -> bool:
    """Complete an interrupted import: a cataloged file still waiting under its staged name takes its name."""
    final = ws.root / rel
    if final.exists() or not part_path(final).is_file():
        return False
    os.replace(part_path(final), final)
    return True


def duplicate_reason(item: Incoming, prior: Sequence[store.KnownImage]) -> str | None:
    """Why item is not stored again, or None.

    Downloads are stored once per content: a web search returns the same photo under many URLs.
    A user's own files are their dataset: a copy from another source is kept and reported as
    an exact duplicate by verification, so the user decides. The same source twice is a re-run.
    """
    for known in prior:
        where = f"{known.id} in label {known.label!r}" + (" (in quarantine)" if known.status != "ok" else "")
        if known.source == item.source:
            return f"already imported as {where}"
        if item.source_kind in DOWNLOAD_KINDS:
            return f"same content already stored as {where}"
    return None


def allocate_id(info: ImageInfo, known: dict[str, list[store.KnownImage]]) -> str:
    """The first 16 hex digits of sha256, with -2, -3, ... for further copies of the same content."""
    copies = len(known.get(info.sha256, []))
    return info.id if copies == 0 else f"{info.id}-{copies + 1}"


def catalog_row(item: Incoming, info: ImageInfo, rel: str, image_id: str) -> dict[str, Any]:
    return {
        "id": image_id,
        "path": rel,
        "label": item.label,
        "split": item.split,
        "sha256": info.sha256,
        "phash": info.phash,
        "width": info.width,
        "height": info.height,
        "mode": info.mode,
        "format": info.format,
        "bytes": info.bytes,
        "brightness": info.brightness,
        "contrast": info.contrast,
        "source_kind": item.source_kind,
        "source": item.source,
        "query": item.query,
        "url": item.url,
        "added_at": store.now(),
        "status": "ok",
        "reason": None,
        "notes": info.notes,
        **(item.provenance or {}),
    }


def ingest(
    ws: Workspace,
    items: Sequence[Incoming],
    cfg: VerifyConfig = VerifyConfig(),
    workers: int | None = None,
    on_progress: ProgressFn | None = None,
    batch: int = 200,
) -> GatherReport:
    """Decode items in a bounded pool, store new content once, catalog it with audit rows."""
    report = GatherReport()
    known = store.known_keys(ws).by_sha256
    rows: list[dict[str, Any]] = []
    total = len(items)
    with ThreadPoolExecutor(max_workers=workers or min(8, (os.cpu_count() or 2) * 2)) as pool:
        for done, (item, info, payload) in enumerate(pool.map(lambda it: _prepare(it, cfg), items), 1):
            if info is None:
                report.failed.append(
                    {"source": item.source, "reason": str(payload), "kind": item.source_kind, "label": item.label}
                )
            elif reason := duplicate_reason(item, known.get(info.sha256, [])):
                report.skipped.append({"source": item.source, "reason": reason})
            else:
                image_id = allocate_id(info, known)
                rel = f"images/{item.label}/{image_id}{info.extension}"
                _stage(ws.root / rel, payload)  # type: ignore[arg-type]
                known.setdefault(info.sha256, []).append(store.KnownImage(image_id, item.label, "ok", item.source))
                rows.append(catalog_row(item, info, rel, image_id))
                report.added.append(image_id)
            if len(rows) >= batch:
                _commit(ws, rows, report)
                rows = []
            if on_progress:
                on_progress(done, total, item.source)
    _commit(ws, rows, report)
    store.record_failures(ws, report.failed)
    return report


def add_demo(ws: Workspace, classes: Sequence[str] | None = None, on_progress: ProgressFn | None = None) -> GatherReport:
    """The demo digits, plus the training defaults digits need: no flips (a mirrored 2 is not a 2), and
    three unfrozen epochs, because 64-pixel grey scans are far from ImageNet photos (frozen features: 85%)."""
    report = ingest(ws, demo_items(classes), on_progress=on_progress)
    if store.get_setting(ws, "train_defaults") is None:
        store.set_setting(ws, "train_defaults", {"data": {"flip": False}, "freeze_epochs": 1, "epochs": 3})
    return report


def create_demo_workspace(
    name: str, classes: Sequence[str] | None = None, on_progress: ProgressFn | None = None
) -> tuple[Workspace, GatherReport]:
    """A new workspace holding the demo digits (all ten, or the chosen ones)."""
    demo_classes(classes)  # an unknown digit is refused before any folder is made
    ws = workspaces.create_workspace(name)
    return ws, add_demo(ws, classes, on_progress)


def file_loader(path: Path) -> Loader:
    """The file's bytes, its size checked before it is read (a huge file never reaches memory)."""

    def load() -> tuple[bytes, str | None]:
        if refused := too_large(path.stat().st_size):
            raise refused
        return path.read_bytes(), None

    return load


def _bytes_loader(data: bytes) -> Loader:
    return lambda: (data, None)


def demo_classes(classes: Sequence[str] | None) -> set[str] | None:
    """The chosen digits as labels (None: all ten); anything else is refused."""
    wanted = {str(c).strip() for c in classes} if classes else None
    if wanted is not None and not wanted <= {str(t) for t in range(10)}:
        raise UserError(f"Demo classes must be digits 0-9; got {sorted(wanted)}.")
    return wanted


def demo_items(classes: Sequence[str] | None = None, size: int = 64) -> list[Incoming]:
    """scikit-learn's 1,797 bundled digit scans as PNG bytes, upscaled from 8x8 so they train."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    wanted = demo_classes(classes)
    items = []
    for index, (pixels, target) in enumerate(zip(digits.images, digits.target, strict=True)):
        if wanted is not None and str(target) not in wanted:
            continue
        img = Image.fromarray((pixels * 255.0 / 16.0).astype(np.uint8), "L")
        buf = io.BytesIO()
        img.resize((size, size), Image.Resampling.BICUBIC).save(buf, format="PNG")
        items.append(Incoming(_bytes_loader(buf.getvalue()), str(target), "demo", f"sklearn digits #{index}"))
    return items


def _image_files(folder: Path) -> Iterator[Path]:
    for path in sorted(folder.rglob("*")):
        if path.is_file() and not path.name.startswith("."):
            yield path


def folder_items(root: Path, label: str | None = None) -> tuple[list[Incoming], list[dict[str, str]]]:
    """Items from <root>/<label>/<image> (or <root>/{train,valid}/<label>/...); bad folders fail."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise UserError(f"Folder {root} does not exist or is not a folder.")
    if label is not None:
        label = validate_label(label)
        return [Incoming(file_loader(p), label, "folder", str(p)) for p in _image_files(root)], []
    items: list[Incoming] = []
    failed: list[dict[str, str]] = []
    split_roots = [(root / s, s) for s in SPLIT_FOLDERS if (root / s).is_dir()]
    for base, split in split_roots or [(root, None)]:
        for path in sorted(p for p in base.iterdir() if not p.name.startswith(".")):
            if path.is_file():
                failed.append(
                    {
                        "source": str(path),
                        "reason": "not inside a <label>/ folder; put images in one folder per label (or pass a label)",
                        "kind": "folder",
                    }
                )
                continue
            try:
                name = validate_label(path.name)
            except UserError as exc:
                failed.append({"source": str(path), "reason": str(exc), "kind": "folder"})
                continue
            items += [Incoming(file_loader(p), name, "folder", str(p), split=split) for p in _image_files(path)]
    if not items and not failed:
        raise UserError(f"No images found in {root}: expected <label>/<image> subfolders.")
    return items, failed


def upload_items(files: Iterable[tuple[str, bytes]], label: str) -> list[Incoming]:
    """Uploaded (name, bytes) pairs into one label."""
    label = validate_label(label)
    return [Incoming(_bytes_loader(data), label, "upload", name) for name, data in files]


@dataclass(frozen=True)
class ZipLimits:
    max_members: int = 20_000
    max_total_bytes: int = 2_000_000_000  # uncompressed, over the whole archive
    max_ratio: float = 200.0  # uncompressed/compressed per member: past this, a bomb


def _check_member(info: zipfile.ZipInfo, limits: ZipLimits) -> None:
    name = info.filename
    path = PurePosixPath(name.replace("\\", "/"))
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name) or ".." in path.parts:
        raise UserError(f"Archive refused: member {name!r} has an unsafe path; nothing was imported.")
    mode = info.external_attr >> 16
    if stat.S_ISLNK(mode):
        raise UserError(f"Archive refused: member {name!r} is a link; nothing was imported.")
    if stat.S_IFMT(mode) not in (0, stat.S_IFREG, stat.S_IFDIR):
        raise UserError(f"Archive refused: member {name!r} is a device or pipe, not a file; nothing was imported.")
    if any(DEVICE_NAME.match(part) for part in path.parts):
        raise UserError(f"Archive refused: member {name!r} uses a device name (CON, NUL, ...); nothing was imported.")
    if info.compress_size and info.file_size / info.compress_size > limits.max_ratio and info.file_size > 1_000_000:
        raise UserError(
            f"Archive refused: member {name!r} expands {info.file_size / info.compress_size:.0f}x "
            "(a zip bomb?); nothing was imported."
        )


def zip_items(data: bytes, label: str | None, name: str = "archive.zip", limits: ZipLimits = ZipLimits()) -> list[Incoming]:
    """Members of a zip archive, checked as a whole before any is imported."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        members = [m for m in archive.infolist() if not m.is_dir()]
    except (zipfile.BadZipFile, OSError) as exc:
        raise UserError(f"{name} is not a readable zip archive ({exc}).") from None
    if len(members) > limits.max_members:
        raise UserError(f"Archive refused: {len(members)} files is over {limits.max_members}; nothing was imported.")
    for member in members:
        _check_member(member, limits)
    if sum(m.file_size for m in members) > limits.max_total_bytes:
        raise UserError(f"Archive refused: it expands past {limits.max_total_bytes / 1e9:.0f} GB; nothing was imported.")
    fixed = validate_label(label) if label else None
    items = []
    for member in members:
        parts = PurePosixPath(member.filename).parts
        if parts[-1].startswith(".") or "__MACOSX" in parts:
            continue
        member_label = fixed or (parts[-2] if len(parts) > 1 else "")
        if not member_label:
            raise UserError(f"Archive member {member.filename!r} is not in a <label>/ folder; choose a label.")
        items.append(Incoming(_zip_loader(archive, member), validate_label(member_label), "zip", f"{name}:{member.filename}"))
    return items


def _zip_loader(archive: zipfile.ZipFile, member: zipfile.ZipInfo) -> Loader:
    def load() -> tuple[bytes, str | None]:
        if refused := too_large(member.file_size):  # before reading: one entry may declare gigabytes
            raise refused
        with archive.open(member) as fh:  # read at most the declared size: headers can lie
            data = fh.read(member.file_size + 1)
        if len(data) > member.file_size:
            raise UserError("archive member is larger than its header says")
        return data, None

    return load


def import_folder(
    ws: Workspace, root: Path | str, label: str | None = None, on_progress: ProgressFn | None = None
) -> GatherReport:
    """Import a folder of <label>/<image> files (or one flat folder into `label`); bad folders and files are
    recorded as failures with their reasons, the rest imported."""
    if not str(root).strip():
        raise UserError("Enter the path of a folder to import.")
    items, failed = folder_items(Path(str(root).strip()), (label or "").strip() or None)
    store.record_failures(ws, failed)
    return GatherReport(failed=failed).merge(ingest(ws, items, on_progress=on_progress))


def add_uploads(
    ws: Workspace, files: Sequence[tuple[str, bytes]], label: str | None, on_progress: ProgressFn | None = None
) -> GatherReport:
    """Uploaded files: zip archives open into their members (labelled by `label` or their folders), the other
    files go into `label`."""
    if not files:
        raise UserError("Choose one or more image files or a zip archive first.")
    label = (label or "").strip() or None
    zips = [(name, data) for name, data in files if name.lower().endswith(".zip")]
    singles = [(name, data) for name, data in files if not name.lower().endswith(".zip")]
    if singles and not label:
        raise UserError("Choose a label for the uploaded images (only zip archives can carry their own).")
    items = [i for name, data in zips for i in zip_items(data, label, name)]
    items += upload_items(singles, label) if singles else []
    return ingest(ws, items, on_progress=on_progress)
