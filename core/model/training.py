"""fine_tune as fastai means it, made fast on a CPU.

Frozen stage: the body runs once per training image and augmented view (one view per frozen
epoch) and once per validation image; the head then trains on those cached features, which
costs next to nothing. Unfrozen stage: the whole network with discriminative learning rates and
a one-cycle schedule. The best epoch by validation is kept, because unfrozen epochs can make a
good pretrained body worse.
"""

from __future__ import annotations

import copy
import math
import threading
import time
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from torch import nn

from core.model import backbones
from core.model.backbones import Classifier
from core.model.config import TrainConfig
from core.model.datasets import augmenter, to_batch
from core.model.events import BatchEvent, Cancelled, EpochMetrics, EventFn, StageEvent


@dataclass
class TrainResult:
    model: Classifier
    history: list[EpochMetrics]
    best_epoch: int
    valid_probs: np.ndarray
    valid_features: np.ndarray
    device: str


def pick_device() -> torch.device:
    """CUDA or Apple MPS when present, else the CPU with one thread per core."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps")
    torch.set_num_threads(max(1, torch.get_num_threads()))
    return torch.device("cpu")


class _Clock:
    """Progress events with an ETA for a stage of known size; raises Cancelled when asked to stop."""

    def __init__(self, stage: str, total: int, on_event: EventFn, cancel: threading.Event | None) -> None:
        self.stage, self.total, self.on_event, self.cancel = stage, max(total, 1), on_event, cancel
        self.done, self.start = 0, time.perf_counter()

    def tick(self, n: int = 1) -> None:
        if self.cancel is not None and self.cancel.is_set():
            raise Cancelled()
        self.done += n
        elapsed = time.perf_counter() - self.start
        eta = elapsed / self.done * (self.total - self.done)
        self.on_event(BatchEvent(self.stage, self.done, self.total, eta))


def _features(
    model: Classifier,
    pixels: np.ndarray,
    spec: backbones.BackboneSpec,
    batch: int,
    device: torch.device,
    clock: _Clock,
    augment: Any = None,
) -> torch.Tensor:
    model.body.eval()
    out = []
    with torch.inference_mode():
        for i in range(0, len(pixels), batch):
            x = to_batch(pixels[i : i + batch], spec.mean, spec.std, augment).to(device)
            out.append(model.body(x).float().cpu())
            clock.tick()
    return torch.cat(out)


def _evaluate_head(head: nn.Module, feats: torch.Tensor, y: torch.Tensor, loss_fn: nn.Module) -> tuple[float, float]:
    head.eval()
    with torch.inference_mode():
        logits = head(feats)
        return float(loss_fn(logits, y)), float((logits.argmax(1) == y).float().mean())


def _end_epoch(
    history: list[EpochMetrics],
    on_event: EventFn,
    epoch: int,
    stage: str,
    train_loss: float,
    valid_loss: float,
    accuracy: float,
    start: float,
) -> EpochMetrics:
    """Record an epoch's metrics and tell the subscribers."""
    metrics = EpochMetrics(epoch, stage, train_loss, valid_loss, 1 - accuracy, accuracy, time.perf_counter() - start)
    history.append(metrics)
    on_event(metrics)
    return metrics


def _better(metrics: EpochMetrics, best: EpochMetrics | None) -> bool:
    return best is None or (metrics.error_rate, metrics.valid_loss) < (best.error_rate, best.valid_loss)


def train_frozen(
    model: Classifier,
    train_px: np.ndarray,
    y_train: np.ndarray,
    valid_feats: torch.Tensor,
    y_valid: torch.Tensor,
    cfg: TrainConfig,
    device: torch.device,
    on_event: EventFn,
    cancel: threading.Event | None,
) -> list[EpochMetrics]:
    """Head-only epochs on cached body features of fresh augmented views; leaves the best head in place."""
    spec = backbones.spec(cfg.backbone)
    y = torch.tensor(np.asarray(y_train), dtype=torch.long)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    steps_per_pass = math.ceil(len(train_px) / cfg.batch_size)
    head = model.head.to(device)
    opt = torch.optim.AdamW(head.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=cfg.lr, total_steps=cfg.freeze_epochs * cfg.head_passes * steps_per_pass
    )
    on_event(StageEvent("frozen", f"training the new head: {cfg.freeze_epochs} epoch(s), the body frozen"))
    clock = _Clock("frozen", cfg.freeze_epochs * steps_per_pass, on_event, cancel)
    history, best, best_state = [], None, None
    for epoch in range(cfg.freeze_epochs):
        start = time.perf_counter()
        feats = _features(model, train_px, spec, cfg.batch_size, device, clock, augmenter(cfg.data))
        head.train()
        losses = []
        for _ in range(cfg.head_passes):
            for idx in torch.randperm(len(feats)).split(cfg.batch_size):
                loss = loss_fn(head(feats[idx].to(device)), y[idx].to(device))
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()
                losses.append(loss.item())
        valid_loss, accuracy = _evaluate_head(head, valid_feats.to(device), y_valid.to(device), loss_fn)
        train_loss = float(np.mean(losses[-steps_per_pass:]))
        metrics = _end_epoch(history, on_event, epoch, "frozen", train_loss, valid_loss, accuracy, start)
        if _better(metrics, best):
            best, best_state = metrics, copy.deepcopy(head.state_dict())
    head.load_state_dict(best_state)
    return history


def _param_groups(model: Classifier, cfg: TrainConfig) -> list[dict[str, Any]]:
    """Body slices from lr*factor/10 (earliest) to lr*factor (latest), head at lr/2 as fastai's fine_tune."""
    groups = backbones.body_groups(model, 3)
    top = cfg.lr * cfg.body_lr_factor
    rates = np.geomspace(top / 10, top, len(groups))
    return [{"params": g, "lr": float(r)} for g, r in zip(groups, rates, strict=True)] + [
        {"params": list(model.head.parameters()), "lr": cfg.lr / 2}
    ]


def _evaluate(
    model: Classifier,
    pixels: np.ndarray,
    y: torch.Tensor,
    spec: backbones.BackboneSpec,
    batch: int,
    device: torch.device,
    loss_fn: nn.Module,
) -> tuple[float, float, torch.Tensor, torch.Tensor]:
    model.eval()
    feats, logits = [], []
    with torch.inference_mode():
        for i in range(0, len(pixels), batch):
            f = model.body(to_batch(pixels[i : i + batch], spec.mean, spec.std).to(device)).float()
            feats.append(f.cpu())
            logits.append(model.head(f).cpu())
    logits_t = torch.cat(logits)
    return float(loss_fn(logits_t, y)), float((logits_t.argmax(1) == y).float().mean()), logits_t, torch.cat(feats)


def _train_mode_frozen_norms(model: Classifier) -> None:
    """Train mode, but batch-norm statistics stay as pretrained: re-estimating them from small CPU batches
    shifts the features the head was just fitted to (measured: error 2% -> 6% after one epoch)."""
    model.train()
    for module in model.body.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()


def train_unfrozen(
    model: Classifier,
    train_px: np.ndarray,
    y_train: np.ndarray,
    valid_px: np.ndarray,
    y_valid: torch.Tensor,
    cfg: TrainConfig,
    device: torch.device,
    on_event: EventFn,
    cancel: threading.Event | None,
    best: EpochMetrics,
) -> list[EpochMetrics]:
    """All layers, discriminative rates, one cycle; keeps the weights of the best epoch (frozen included)."""
    spec = backbones.spec(cfg.backbone)
    y = torch.tensor(np.asarray(y_train), dtype=torch.long)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    steps = math.ceil(len(train_px) / cfg.batch_size)
    groups = _param_groups(model, cfg)
    opt = torch.optim.AdamW(groups, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=[g["lr"] for g in groups], total_steps=cfg.epochs * steps)
    clock = _Clock("unfrozen", cfg.epochs * steps, on_event, cancel)
    aug = augmenter(cfg.data)
    best_state = copy.deepcopy(model.state_dict())
    history = []
    for epoch in range(cfg.epochs):
        start = time.perf_counter()
        _train_mode_frozen_norms(model)
        losses = []
        for idx in torch.randperm(len(train_px)).split(cfg.batch_size):
            if len(idx) < 2:
                continue  # batch norm cannot train on a single image
            x = to_batch(train_px[idx.numpy()], spec.mean, spec.std, aug).to(device)
            loss = loss_fn(model(x), y[idx].to(device))
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            losses.append(loss.item())
            clock.tick()
        valid_loss, accuracy, _, _ = _evaluate(model, valid_px, y_valid, spec, cfg.batch_size, device, loss_fn)
        number = cfg.freeze_epochs + epoch
        metrics = _end_epoch(history, on_event, number, "unfrozen", float(np.mean(losses)), valid_loss, accuracy, start)
        if _better(metrics, best):
            best, best_state = metrics, copy.deepcopy(model.state_dict())
    model.load_state_dict(best_state)
    return history


def fine_tune(
    train_px: np.ndarray,
    y_train: np.ndarray,
    valid_px: np.ndarray,
    y_valid: np.ndarray,
    n_classes: int,
    cfg: TrainConfig,
    on_event: EventFn | None = None,
    cancel: threading.Event | None = None,
) -> TrainResult:
    """Frozen then unfrozen epochs; returns the best model with its validation probabilities and features."""
    on_event = on_event or (lambda _: None)
    torch.manual_seed(cfg.seed)
    device = pick_device()
    spec = backbones.spec(cfg.backbone)
    model = backbones.build(cfg.backbone, n_classes, cfg.pretrained).to(device).to(memory_format=torch.channels_last)
    yv = torch.tensor(np.asarray(y_valid), dtype=torch.long)
    on_event(StageEvent("features", "computing validation features"))
    valid_feats = _features(
        model,
        valid_px,
        spec,
        cfg.batch_size,
        device,
        _Clock("features", math.ceil(len(valid_px) / cfg.batch_size), on_event, cancel),
    )
    history = train_frozen(model, train_px, y_train, valid_feats, yv, cfg, device, on_event, cancel) if cfg.freeze_epochs else []
    best = min(history, key=lambda m: (m.error_rate, m.valid_loss)) if history else None
    unfrozen = cfg.epochs
    if unfrozen is None:
        unfrozen = cfg.auto_epochs if best is None or best.error_rate > cfg.auto_threshold else 0
        said = f"frozen features leave {best.error_rate:.1%} error: " if best else ""
        advice = "" if unfrozen else "; set unfrozen epochs to run them anyway"
        on_event(StageEvent("unfrozen", f"{said}{unfrozen} unfrozen epoch(s){advice}", planned=unfrozen))
    if unfrozen:
        start = EpochMetrics(-1, "start", math.nan, math.inf, 1.0, 0.0, 0.0)
        history += train_unfrozen(
            model, train_px, y_train, valid_px, yv, replace(cfg, epochs=unfrozen), device, on_event, cancel, best or start
        )
    loss_fn = nn.CrossEntropyLoss()
    _, _, logits, feats = _evaluate(model, valid_px, yv, spec, cfg.batch_size, device, loss_fn)
    best_epoch = min(history, key=lambda m: (m.error_rate, m.valid_loss)).epoch
    return TrainResult(model.cpu().eval(), history, best_epoch, logits.softmax(1).numpy(), feats.numpy(), str(device))


@dataclass(frozen=True)
class LrFinding:
    """Smoothed loss per learning rate, and the suggested head rate (a tenth of the rate at the lowest loss)."""

    rates: np.ndarray
    losses: np.ndarray
    suggestion: float


def lr_find(
    train_px: np.ndarray,
    y_train: np.ndarray,
    n_classes: int,
    cfg: TrainConfig,
    start: float = 1e-5,
    end: float = 10.0,
    steps: int = 80,
) -> LrFinding:
    """fastai's learning-rate finder for the head, on cached body features: the rate grows exponentially
    until the loss diverges. Suggests a tenth of the rate at the lowest smoothed loss."""
    torch.manual_seed(cfg.seed)
    device = pick_device()
    model = backbones.build(cfg.backbone, n_classes, cfg.pretrained).to(device)
    spec = backbones.spec(cfg.backbone)
    clock = _Clock("lr_find", math.ceil(len(train_px) / cfg.batch_size), lambda _: None, None)
    feats = _features(model, train_px, spec, cfg.batch_size, device, clock, augmenter(cfg.data))
    y = torch.tensor(np.asarray(y_train), dtype=torch.long)
    head, loss_fn = model.head.train(), nn.CrossEntropyLoss()
    opt = torch.optim.AdamW(head.parameters(), lr=start, weight_decay=cfg.weight_decay)
    rates = np.geomspace(start, end, steps)
    losses, smooth = [], 0.0
    for step, rate in enumerate(rates):
        for group in opt.param_groups:
            group["lr"] = float(rate)
        idx = torch.randint(0, len(feats), (min(cfg.batch_size, len(feats)),))
        loss = loss_fn(head(feats[idx].to(device)), y[idx].to(device))
        opt.zero_grad()
        loss.backward()
        opt.step()
        smooth = 0.9 * smooth + 0.1 * loss.item()
        losses.append(smooth / (1 - 0.9 ** (step + 1)))
        if step > 5 and losses[-1] > 4 * min(losses):
            break
    losses_a = np.array(losses)
    return LrFinding(rates[: len(losses_a)], losses_a, float(rates[int(np.argmin(losses_a))] / 10))
