"""A workspace folder and the names of what it holds: images/, quarantine/, models/, the database, the training lock."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

DB_NAME = "workspace.duckdb"


TRAINING_LOCK = "training.lock"  # present while a training runs (see core.model.runs)


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
