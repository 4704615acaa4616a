"""How long a training run will take on this machine, before it starts: scaled from the latest run here with the
same backbone and image size (its epochs' own timings, and the rest of its wall time: decoding, the validation
features, scoring the test images), never from a guess. With no such run, it says the first run measures it."""

from __future__ import annotations

from dataclasses import dataclass

from core.model import registry
from core.model.config import TrainConfig
from core.model.train_report import UNFROZEN_PER_FROZEN
from core.workspace.paths import Workspace


@dataclass(frozen=True)
class Estimate:
    seconds: float | None  # None: nothing comparable was measured here yet
    longest: float | None  # when the unfrozen epochs are chosen automatically: if it decides to run them
    basis: str  # where the figure comes from, in words

    def words(self) -> str:
        if self.seconds is None:
            return f"No estimate yet: {self.basis}."
        said = f"About {_minutes(self.seconds)}"
        if self.longest is not None and self.longest > self.seconds * 1.1:
            said += f", up to {_minutes(self.longest)} if it decides to train all layers"
        return f"{said} ({self.basis})."


def _minutes(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min"


def estimate(ws: Workspace, cfg: TrainConfig, images: int) -> Estimate:
    """The time a run of cfg on `images` train and validation images should take, from the latest comparable run."""
    versions = registry.list_versions(ws)["version"].tolist()[::-1]
    for version in versions:
        meta = registry.read_meta(ws, version)
        then = meta.get("config", {})
        asked = (then.get("data") or {}).get("size")  # 0: automatic, as the form's default
        if then.get("backbone") != cfg.backbone or cfg.data.size not in (asked, meta.get("preprocessing", {}).get("size")):
            continue
        metrics = meta.get("metrics", {})
        history = metrics.get("history") or []
        n_then = len(meta.get("train_ids", [])) + len(meta.get("valid_ids", []))
        wall = metrics.get("wall_seconds")
        if not n_then or not wall:
            continue
        frozen = [h["seconds"] for h in history if h.get("stage") == "frozen"]
        unfrozen = [h["seconds"] for h in history if h.get("stage") == "unfrozen"]
        scale = images / n_then
        rest = max(wall - sum(frozen) - sum(unfrozen), 0.0) * scale
        per_frozen = (sum(frozen) / len(frozen)) * scale if frozen else 0.0
        # an unfrozen epoch not measured here: fastai's fine_tune on a CPU costs about 5 frozen ones (3-10 measured)
        per_unfrozen = (sum(unfrozen) / len(unfrozen)) * scale if unfrozen else UNFROZEN_PER_FROZEN * per_frozen
        base = rest + cfg.freeze_epochs * per_frozen
        if cfg.epochs is not None:
            seconds, longest = base + cfg.epochs * per_unfrozen, None
        else:
            seconds, longest = base, base + cfg.auto_epochs * per_unfrozen
        took = _minutes(wall)
        return Estimate(seconds, longest, f"scaled from {version} here: {n_then} images in {took}")
    size = f"{cfg.data.size} px" if cfg.data.size else "the automatic size"
    return Estimate(None, None, f"the first {cfg.backbone} run at {size} on this machine measures it")
