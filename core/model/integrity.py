"""Whether a model version's files are the ones registered: checksums recorded at registration, and the files'
own structure (model.json readable with its keys, safetensors headers whole, the head's outputs matching the
classes). Pure file reading: no torch, no database (the registry passes what it recorded)."""

from __future__ import annotations

import hashlib
import json
import os
import struct
import threading
from pathlib import Path
from typing import Any

WEIGHTS = "model.safetensors"
META = "model.json"
REFERENCE = "reference.safetensors"
FILES = (WEIGHTS, META, REFERENCE)  # what a version is; other files in its folder are caches derived from these
REQUIRED = ("backbone", "classes", "preprocessing", "metrics", "train_ids", "valid_ids")

_CACHE: dict[tuple[str, tuple[object, ...]], list[str]] = {}
_LOCK = threading.Lock()


def checksums(folder: Path) -> dict[str, str]:
    """sha256 of each of a version's files."""
    out = {}
    for name in FILES:
        digest = hashlib.sha256()
        with (folder / name).open("rb") as fh:
            for chunk in iter(lambda fh=fh: fh.read(1 << 20), b""):
                digest.update(chunk)
        out[name] = digest.hexdigest()
    return out


def header(path: Path) -> dict[str, Any]:
    """A safetensors file's header; ValueError when it is not whole (truncated, or not safetensors at all)."""
    size = path.stat().st_size
    with path.open("rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            raise ValueError("shorter than a safetensors header")
        (n,) = struct.unpack("<Q", head)
        if n > min(size - 8, 100_000_000):
            raise ValueError("its header runs past the end of the file")
        try:
            found = json.loads(fh.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise ValueError("its header is not valid JSON") from None
    end = max((t["data_offsets"][1] for k, t in found.items() if k != "__metadata__"), default=0)
    if 8 + n + end > size:
        raise ValueError(f"truncated: {size:,} bytes where its header needs {8 + n + end:,}")
    return found


def problems(folder: Path, recorded: dict[str, str] | None, classes: list[str] | None) -> list[str]:
    """Everything wrong with a version's files, in words; [] when they are whole and the ones registered."""
    missing = [name for name in FILES if not (folder / name).is_file()]
    if missing:
        return [f"missing {', '.join(missing)}"]
    found: list[str] = []
    if recorded:
        now = checksums(folder)
        found += [f"{name} changed since the version was registered" for name in FILES if recorded.get(name) != now[name]]
    try:
        meta = json.loads((folder / META).read_text())
        if not isinstance(meta, dict):
            raise ValueError
    except (OSError, UnicodeDecodeError, ValueError):
        return [*found, f"{META} is not readable JSON"]
    absent = [k for k in REQUIRED if k not in meta]
    if absent:
        found.append(f"{META} lacks {', '.join(absent)}")
    names = meta.get("classes")
    if not isinstance(names, list) or len(names) < 2:
        found.append(f"{META} names no classes")
    elif classes is not None and list(names) != list(classes):
        found.append(f"{META} names classes {names}, registered as {list(classes)}")
    for name in (WEIGHTS, REFERENCE):
        try:
            tensors = header(folder / name)
        except (OSError, ValueError) as exc:
            found.append(f"{name} is damaged: {exc}")
            continue
        if name == WEIGHTS and isinstance(names, list):
            outputs = _head_outputs(tensors)
            if outputs is not None and outputs != len(names):
                found.append(f"{WEIGHTS} has {outputs} outputs for {len(names)} classes")
    return found


def _head_outputs(tensors: dict[str, Any]) -> int | None:
    """Rows of the last head layer's weight (the classifier's outputs), if the file has a head."""
    heads = [k for k in tensors if k.startswith("head.") and k.endswith(".weight")]
    if not heads:
        return None
    last = max(heads, key=lambda k: [int(p) if p.isdigit() else -1 for p in k.split(".")])
    return int(tensors[last]["shape"][0])


def checked(folder: Path, recorded: dict[str, str] | None, classes: list[str] | None) -> list[str]:
    """problems(), remembered until one of the files changes (a stat per file, not a hash, on every call)."""
    stamp: list[object] = [json.dumps(recorded, sort_keys=True), json.dumps(classes)]
    for name in FILES:
        try:
            st = os.stat(folder / name)
            stamp.append((st.st_ino, st.st_size, st.st_mtime_ns))
        except OSError:
            stamp.append(None)
    key = (str(folder), tuple(stamp))
    with _LOCK:
        if key in _CACHE:
            return _CACHE[key]
    found = problems(folder, recorded, classes)
    with _LOCK:
        _CACHE[key] = found
    return found
