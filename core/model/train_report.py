"""Figures for the Train page: the growing loss/error chart and the learning-rate finder."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from core.model.config import TrainConfig
from core.model.events import BatchEvent, EpochMetrics, StageEvent


def history_of(meta: dict[str, Any]) -> list[EpochMetrics]:
    """A saved version's epochs, from its model.json."""
    return [EpochMetrics(**e) for e in meta["metrics"]["history"]]


def history_figure(epochs: Sequence[EpochMetrics], planned: int | None = None) -> go.Figure:
    """Train and valid loss (left axis) and error rate (right axis) per epoch; frozen epochs shaded.
    With `planned`, the x axis already spans every epoch to come, so the chart visibly grows."""
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    x = [e.epoch for e in epochs]
    fig.add_trace(go.Scatter(x=x, y=[e.train_loss for e in epochs], name="train loss", mode="lines+markers"))
    fig.add_trace(go.Scatter(x=x, y=[e.valid_loss for e in epochs], name="valid loss", mode="lines+markers"))
    fig.add_trace(
        go.Scatter(x=x, y=[e.error_rate for e in epochs], name="error rate", mode="lines+markers", line={"dash": "dot"}),
        secondary_y=True,
    )
    frozen = [e.epoch for e in epochs if e.stage == "frozen"]
    if frozen:
        fig.add_vrect(
            x0=min(frozen) - 0.5,
            x1=max(frozen) + 0.5,
            fillcolor="lightblue",
            opacity=0.25,
            line_width=0,
            annotation_text="body frozen",
            annotation_position="top left",
        )
    fig.update_xaxes(title_text="epoch", dtick=1, range=[-0.5, planned - 0.5] if planned else None)
    fig.update_yaxes(title_text="loss", rangemode="tozero", secondary_y=False)
    fig.update_yaxes(title_text="error rate", rangemode="tozero", tickformat=".0%", secondary_y=True)
    fig.update_layout(title="Losses and error rate", margin={"t": 50, "b": 10}, legend={"orientation": "h", "y": -0.2})
    return fig


def lr_find_figure(rates: np.ndarray, losses: np.ndarray, suggestion: float) -> go.Figure:
    """Loss against learning rate on a log axis, with the suggested rate marked."""
    fig = go.Figure(go.Scatter(x=rates, y=losses, mode="lines", name="smoothed loss"))
    # a trace, not add_vline: shapes on a log axis need log10 positions
    fig.add_trace(
        go.Scatter(
            x=[suggestion, suggestion],
            y=[float(np.min(losses)), float(np.max(losses))],
            mode="lines",
            line={"dash": "dash", "color": "red"},
            name=f"suggested {suggestion:.1e}",
        )
    )
    fig.update_xaxes(type="log", title_text="learning rate (head)")
    fig.update_yaxes(title_text="loss")
    fig.update_layout(title="Learning-rate finder", margin={"t": 50, "b": 10})
    return fig


def progress_words(event: BatchEvent, cfg: TrainConfig) -> str:
    """A training step as a person says it ("training the new head: epoch 1 of 2, batch 3/16"), with its ETA."""
    eta = f" · about {event.eta_s:.0f} s left in this step" if event.eta_s is not None else ""
    if event.stage == "cache":
        return f"preparing images {event.done}/{event.total} (decoded once, reused by later runs){eta}"
    if event.stage == "features":
        return f"measuring the validation images {event.done}/{event.total}{eta}"
    epochs = {"frozen": cfg.freeze_epochs, "unfrozen": cfg.epochs if cfg.epochs is not None else cfg.auto_epochs}.get(event.stage)
    if not epochs:
        return f"{event.stage}: {event.done}/{event.total}{eta}"
    per = max(event.total // epochs, 1)
    epoch = min((max(event.done, 1) - 1) // per + 1, epochs)
    batch = event.done - (epoch - 1) * per
    what = "training the new head" if event.stage == "frozen" else "training all layers"
    return f"{what}: epoch {epoch} of {epochs}, batch {batch}/{per}{eta}"


UNFROZEN_PER_FROZEN = 5  # an unfrozen epoch costs about this many frozen ones on a CPU (3-10 measured here)
STEPS = {  # each step of a run, in order, as a person says it
    "cache": "preparing images",
    "features": "measuring the validation images",
    "frozen": "training the new head",
    "unfrozen": "training all layers",
    "test": "scoring the test images",
}


@dataclass(frozen=True)
class RunPlan:
    """What a run will do, known before it starts: its images (and how many are not decoded yet) and epochs."""

    train: int
    valid: int
    test: int
    to_decode: int  # train and valid images not in the pixel cache
    test_to_decode: int
    batch_size: int
    freeze_epochs: int
    epochs: int | None  # None: decided after the frozen epochs (auto)
    auto_epochs: int = 2


@dataclass(frozen=True)
class Overall:
    """One bar for the whole run: the share done and the time left, from this run's own measured rates."""

    fraction: float
    eta_s: float | None  # None until the network has seen a batch (its speed is what the rest depends on)
    step: int  # 1-based
    steps: int
    undecided: bool  # the unfrozen epochs are still to be decided: they may add to the time left
    current: str = "cache"  # the step under way (a key of STEPS)

    def words(self) -> str:
        said = f"Step {self.step} of {self.steps}: {STEPS[self.current]}"
        if self.eta_s is None:
            return f"{said} · time left known after the first batch through the network"
        more = " (more if it then trains all layers)" if self.undecided else ""
        return f"{said} · about {_duration(self.eta_s)} left in all{more}"


def _duration(seconds: float) -> str:
    return f"{max(seconds, 1):.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min"


def _steps(plan: RunPlan, decided: int | None) -> list[str]:
    unfrozen = decided if decided is not None else plan.epochs
    steps = ["cache"] if plan.to_decode else []
    steps += ["features"] + (["frozen"] if plan.freeze_epochs else [])
    steps += ["unfrozen"] if unfrozen is None or unfrozen > 0 else []
    return steps + (["test"] if plan.test else [])


def overall(plan: RunPlan, timeline: Sequence[tuple[float, Any]], now: float) -> Overall:
    """Progress of the whole run from its events and the time each arrived (time.monotonic()): the current step's
    own ETA, plus each later step's images times the seconds per image measured so far (decoding, and one pass
    through the network; an unfrozen epoch as UNFROZEN_PER_FROZEN frozen ones)."""
    decided = next((e.planned for _, e in timeline if isinstance(e, StageEvent) and e.planned is not None), None)
    steps = _steps(plan, decided)
    started: dict[str, float] = {}
    last: dict[str, tuple[float, BatchEvent]] = {}
    for t, e in timeline:
        if isinstance(e, StageEvent | BatchEvent) and e.stage in STEPS:
            started.setdefault(e.stage, t)
            if isinstance(e, BatchEvent):
                last[e.stage] = (t, e)
    current = next((s for s in reversed(steps) if s in started), steps[0])
    step = steps.index(current) + 1
    batch = last[current][1] if current in last else None
    within = batch.done / batch.total if batch else 0.0
    decode = _rate(started, last, "cache", 1)
    forward = _rate(started, last, "frozen", plan.batch_size) or _rate(started, last, "features", plan.batch_size)
    epochs = decided if decided is not None else (plan.epochs if plan.epochs is not None else 0)
    cost = {  # seconds of each step at the measured rates (None: not measurable yet)
        "cache": plan.to_decode * decode if decode else None,
        "features": plan.valid * forward if forward else None,
        "frozen": plan.freeze_epochs * plan.train * forward if forward else None,
        "unfrozen": epochs * UNFROZEN_PER_FROZEN * plan.train * forward if forward else None,
        "test": plan.test_to_decode * (decode or 0.0) + plan.test * forward if forward else None,
    }
    here = _left_in_step(batch, started.get(current), now, cost[current])
    later = [cost[s] for s in steps[step:]]
    if here is None or any(c is None for c in later):
        return Overall((step - 1 + within) / len(steps), None, step, len(steps), decided is None and plan.epochs is None, current)
    left = here + sum(c for c in later if c is not None)
    elapsed = now - min(started.values()) if started else 0.0
    fraction = elapsed / (elapsed + left) if elapsed + left > 0 else 0.0
    return Overall(min(max(fraction, 0.0), 1.0), left, step, len(steps), decided is None and plan.epochs is None, current)


def _rate(started: dict[str, float], last: dict[str, tuple[float, BatchEvent]], stage: str, per_tick: int) -> float | None:
    """Seconds per image in a step, up to its latest batch event (which counts per_tick images)."""
    if stage not in last or stage not in started or not last[stage][1].done:
        return None
    t, event = last[stage]
    return (t - started[stage]) / (event.done * per_tick)


def _left_in_step(batch: BatchEvent | None, began: float | None, now: float, whole: float | None) -> float | None:
    """The current step's time left: its own ETA, else its measured pace, else its whole predicted cost."""
    if batch is not None and batch.eta_s is not None:
        return batch.eta_s
    if batch is not None and batch.done and began is not None:
        return (now - began) / batch.done * (batch.total - batch.done)
    return whole
