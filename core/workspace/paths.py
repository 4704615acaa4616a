"""A workspace folder and the names of what it holds: images/, quarantine/, models/, the database, the training lock."""

from __future__ import annotations

import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path

DB_NAME = "workspace.duckdb"


TRAINING_LOCK = "training.lock"  # present while a training runs (see core.model.runs)
# names Windows reserves for devices, with or without an extension: a workspace copied there would break on them
DEVICE_NAME = re.compile(r"^(con|prn|aux|nul|com[0-9¹²³]|lpt[0-9¹²³])(\..*)?$", re.IGNORECASE)


def write_synced(path: Path, data: bytes | str) -> None:
    """Write data and wait until it is on disk (a rename that follows never names a half-written file)."""
    with open(path, "wb") as fh:
        fh.write(data.encode() if isinstance(data, str) else data)
        fh.flush()
        os.fsync(fh.fileno())


def write_atomic(path: Path, data: bytes | str) -> None:
    """Replace path with data so that a reader (or a process killed midway) sees the old file or the new one,
    never half of one: write a hidden temporary beside it, fsync, rename."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    write_synced(tmp, data)
    os.replace(tmp, path)


def free_name(folder: Path, name: str) -> Path:
    """folder/name, or name-1, name-2, ... (before the suffix) when something is already there."""
    target, n = folder / name, 1
    while target.exists():
        target = folder / f"{Path(name).stem}-{n}{Path(name).suffix}"
        n += 1
    return target


@dataclass(frozen=True)
class Workspace:
    """A workspace folder: images/, quarantine/, models/ and workspace.duckdb."""

    root: Path

    @property
    def name(self) -> str:
        return self.root.name

    @property
    def db_path(self) -> Path:
        return self.root / DB_NAME

    @property
    def images_dir(self) -> Path:
        return self.root / "images"

    @property
    def quarantine_dir(self) -> Path:
        return self.root / "quarantine"

    @property
    def models_dir(self) -> Path:
        return self.root / "models"
