"""Training and scoring settings as plain frozen dataclasses and constants: importable without torch,
so commands and pages that only read settings start fast."""

from __future__ import annotations

from dataclasses import dataclass, field

from core import bounds
from core.errors import UserError

OFFLINE = "tf_efficientnet_lite0"
OOD_SCORES = ("energy", "max_prob")
DEFAULT_OOD_SCORE = "energy"  # separates bears from cartoons and sketches better than max probability (bench/predict_bench.py)
VALID_PASS = 0.95  # share of in-domain validation images the OOD threshold lets through
EMBED_DIM = 16

RESIZE_METHODS = ("crop", "squish", "pad")


@dataclass(frozen=True)
class DataConfig:
    size: int = 0  # pixels per side; 0 = automatic: 224 for photos (bears over 5 split seeds: 3.9% valid
    # error against 5.8% at 160 px, about 2x the time), the images' own size when smaller (digits: 64)
    resize: str = "squish"  # crop (centre, loses edges) / squish (keeps all, distorts) / pad (black bars)
    min_scale: float = 0.5  # random resized crop keeps at least this share of the image
    flip: bool = True  # off for data whose mirror image means something else (digits, text)
    rotate: float = 10.0  # degrees, either way
    lighting: float = 0.2  # brightness and contrast jitter


def check_config(cfg: DataConfig) -> None:
    if cfg.resize not in RESIZE_METHODS:
        raise UserError(f"Resize method {cfg.resize!r} is unknown; choose one of {', '.join(RESIZE_METHODS)}.")
    bounds.check("size", cfg.size, "The image size")  # 0 (automatic) is resolved before this check
    bounds.check("min_scale", cfg.min_scale, "The minimum crop scale")


def check_train(cfg: TrainConfig) -> None:
    """The training settings within their bounds (the same table as the command line's flags), before a run starts."""
    check_config(cfg.data)
    for key in ("lr", "body_lr_factor", "label_smoothing", "batch_size", "freeze_epochs", "seed"):
        bounds.check(key, getattr(cfg, key), f"The setting {key.replace('_', ' ')}")
    if cfg.epochs is not None:
        bounds.check("epochs", cfg.epochs, "The setting epochs")


@dataclass(frozen=True)
class TrainConfig:
    data: DataConfig = field(default_factory=DataConfig)
    backbone: str = OFFLINE
    pretrained: bool = True  # False: random initialisation, an explicit choice
    freeze_epochs: int = 2  # head only, body frozen; each epoch sees one fresh augmented view
    epochs: int | None = None  # then the whole network; None = automatic: auto_epochs of them only when the
    # frozen stage leaves error above auto_threshold. On a CPU an unfrozen epoch costs 3-10 frozen ones; web photos
    # do not gain (bears, 5 split seeds: the frozen epoch stayed best on every one, at 3-5x the time), images far
    # from ImageNet need them (digits: 85% -> 99%). 10%: above every bears split's frozen error, below the digits'.
    auto_epochs: int = 2
    auto_threshold: float = 0.10
    lr: float = 2e-3  # head rate; the body's latest layers get lr * body_lr_factor, earliest 10x less
    body_lr_factor: float = 1.0  # digits need the body to move (90% -> 99%); photos keep their frozen best
    head_passes: int = 8  # passes over each frozen epoch's cached features: cheap, and they help
    batch_size: int = 32
    weight_decay: float = 0.01
    label_smoothing: float = 0.0
    seed: int = 42
    allow_model_labels: bool = False  # train on production images only the model labelled (a feedback loop): explicit
